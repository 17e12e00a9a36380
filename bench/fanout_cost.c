/*
 * What one client-frame costs the sending thread on loopback TCP, for three
 * ways of sending the same frame: the evidence behind the profiling notes in
 * docs/BENCHMARKS.md. Not a server: a writer thread (CPU 0) sends F frames
 * at a steady rate to N connected sockets, a reader thread (CPU 1) drains
 * them; the writer's CPU time (RUSAGE_THREAD: user + system, which includes
 * the loopback receive work the kernel does on the sender's CPU) is divided
 * by N * F.
 *
 *   writev    one writev of [part header, JPEG, delimiter] per client
 *   ioctl     ioctl(SIOCOUTQNSD) then that writev, as the server does now
 *   sendfile  the whole part written once into a memfd per frame, then one
 *             sendfile per client: the kernel sends the memfd's pages
 *             instead of copying the bytes for each client
 *
 *   cc -O2 -pthread -o fanout_cost fanout_cost.c
 *   ./fanout_cost MODE CLIENTS FPS SECONDS [FRAME_BYTES]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int nclients;
static int *rfd;
static volatile int stop;
static struct sockaddr_in addr;
static socklen_t addrlen = sizeof addr;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *reader(void *arg) {
    (void)arg;
    pin(1);
    int ep = epoll_create1(0);
    for (int i = 0; i < nclients; i++) {
        rfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(rfd[i], (struct sockaddr *)&addr, addrlen);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = rfd[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &ev);
    }
    static char buf[256 << 10];
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++)
            while (read(evs[i].data.fd, buf, sizeof buf) > 0) {
            }
    }
    return NULL;
}

static int send_all_writev(int fd, struct iovec *iov, int n) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += iov[i].iov_len;
    size_t sent = 0;
    while (sent < total) {
        struct iovec v[3];
        int k = 0;
        size_t skip = sent;
        for (int i = 0; i < n; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            v[k].iov_base = (char *)iov[i].iov_base + skip;
            v[k++].iov_len = iov[i].iov_len - skip;
            skip = 0;
        }
        ssize_t w = writev(fd, v, k);
        if (w < 0) return -1;
        sent += (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s writev|ioctl|sendfile CLIENTS FPS SECONDS [FRAME_BYTES]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    nclients = atoi(argv[2]);
    double fps = atof(argv[3]), seconds = atof(argv[4]);
    size_t frame_bytes = argc > 5 ? (size_t)atol(argv[5]) : 21600;
    rfd = calloc(nclients, sizeof *rfd);
    int *wfd = calloc(nclients, sizeof *wfd);

    pin(0);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, addrlen) || listen(ls, 4096)) return perror("listen"), 1;
    getsockname(ls, (struct sockaddr *)&addr, &addrlen);
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    for (int i = 0; i < nclients; i++) {
        wfd[i] = accept(ls, NULL, NULL);
        setsockopt(wfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int lowat = 32 << 10;
        setsockopt(wfd[i], IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    }
    char *jpeg = malloc(frame_bytes);
    for (size_t i = 0; i < frame_bytes; i++) jpeg[i] = (char)(i * 2654435761u >> 24);
    char head[128], tail[64];
    int hl = snprintf(head, sizeof head, "Content-Type: image/jpeg\r\nContent-Length: %zu\r\nX-Timestamp: 1.000000\r\n\r\n", frame_bytes);
    int tl = snprintf(tail, sizeof tail, "\r\n--boundarydonotcross\r\n");
    struct iovec iov[3] = {{head, (size_t)hl}, {jpeg, frame_bytes}, {tail, (size_t)tl}};
    size_t part = (size_t)hl + frame_bytes + (size_t)tl;

    int frames = (int)(fps * seconds);
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    double start = now();
    for (int f = 0; f < frames; f++) {
        double due = start + f / fps;
        while (now() < due) usleep(200);
        int mfd = -1;
        if (!strcmp(mode, "sendfile")) {
            mfd = memfd_create("frame", 0);
            if (writev(mfd, iov, 3) != (ssize_t)part) return perror("memfd"), 1;
        }
        for (int i = 0; i < nclients; i++) {
            if (!strcmp(mode, "ioctl")) {
                int unsent;
                ioctl(wfd[i], SIOCOUTQNSD, &unsent);
            }
            if (mfd >= 0) {
                off_t off = 0;
                while ((size_t)off < part)
                    if (sendfile(wfd[i], mfd, &off, part - (size_t)off) < 0) return perror("sendfile"), 1;
            } else if (send_all_writev(wfd[i], iov, 3) < 0) {
                return perror("writev"), 1;
            }
        }
        if (mfd >= 0) close(mfd);
    }
    double wall = now() - start;
    getrusage(RUSAGE_THREAD, &r1);
    double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    stop = 1;
    pthread_join(t, NULL);
    printf("{\"mode\":\"%s\",\"clients\":%d,\"fps\":%.0f,\"frames\":%d,\"part_bytes\":%zu,\"wall_s\":%.2f,"
           "\"writer_cpu_s\":%.3f,\"us_per_client_frame\":%.2f,\"writer_cpu_pct\":%.1f}\n",
           mode, nclients, fps, frames, part, wall, cpu, cpu * 1e6 / ((double)frames * nclients), 100 * cpu / wall);
    return 0;
}
