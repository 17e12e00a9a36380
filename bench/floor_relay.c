/*
 * The floor: the least a stdin-to-socket MJPEG server can do. One client,
 * blocking I/O, no poll loop, no splitter: bytes read from stdin are kept
 * until a read ends with FF D9 (the source writes one frame per write), then
 * the part header, the frame and the delimiter go out in one writev.
 *
 *   cc -O2 -o floor_relay floor_relay.c && source | ./floor_relay PORT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FRAME (8 << 20)
#define BOUNDARY "boundarydonotcross"
#define TAIL "\r\n--" BOUNDARY "\r\n"

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8554;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 16)) {
        perror("floor_relay: listen");
        return 1;
    }
    /* A connection that closes without a request (a readiness check, such
     * as mjpeg-probe's) is not the client: wait for one that sends one. */
    char req[8192];
    int c;
    for (;;) {
        c = accept(ls, NULL, NULL);
        if (c < 0) return 1;
        if (read(c, req, sizeof req) > 0) break;
        close(c);
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *head = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
                       "Content-Type: multipart/x-mixed-replace; boundary=" BOUNDARY "\r\n\r\n--" BOUNDARY "\r\n";
    if (write(c, head, strlen(head)) < 0) return 1;
    static char buf[MAX_FRAME];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(0, buf + len, sizeof buf - len);
        if (n <= 0) return 0;
        len += (size_t)n;
        if (len < 2 || (unsigned char)buf[len - 2] != 0xFF || (unsigned char)buf[len - 1] != 0xD9) {
            if (len == sizeof buf) len = 0;
            continue;
        }
        char part[128];
        int plen = snprintf(part, sizeof part, "Content-Type: image/jpeg\r\nContent-Length: %zu\r\n\r\n", len);
        struct iovec iov[3] = {{part, (size_t)plen}, {buf, len}, {TAIL, sizeof TAIL - 1}};
        if (writev(c, iov, 3) < 0) return 0;
        len = 0;
    }
}
