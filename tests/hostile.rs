//! Hostile clients and hostile input, on the real binary.
//!
//! Every test bounds its load and its time, talks only to 127.0.0.1, and
//! prints what it measured: `cargo test --test hostile -- --nocapture`.
//! docs/RELIABILITY.md collects the figures.

mod common;

use common::{frames, json_number, produce, Server, Viewer, STEP};
use raspivid_mjpeg_server::splitter::Splitter;
use socket2::SockRef;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// These tests load the machine on purpose, so they run one at a time: one
/// test's load must not be another's failure.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Raises this process's soft limit on open files towards `want`, never
/// above the hard limit, and returns the limit now in force. Servers started
/// afterwards inherit it.
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: both calls get a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

/// The loop's thread (the server's main thread) so far: its time on a CPU,
/// and how many times it gave the CPU up (voluntary context switches: its
/// waits in `epoll_wait`, mostly).
fn loop_usage(server: &Server) -> (Duration, u64) {
    let task = format!("/proc/{0}/task/{0}", server.child.id());
    let schedstat = std::fs::read_to_string(format!("{task}/schedstat")).unwrap();
    let ns = schedstat.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("{task}/status")).unwrap();
    let waits = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"));
    (Duration::from_nanos(ns), waits.unwrap().trim().parse().unwrap())
}

/// What the loop did over the next `span`: its CPU time, and how many
/// times it waited.
///
/// A loop that waits for events gives the CPU up at each wait and works
/// briefly in between; one that spins never waits, and takes whatever CPU
/// it is given. CPU time per wait tells them apart on an idle machine and
/// on a loaded one alike: load stretches the span, not the work of a turn.
fn loop_over(server: &Server, span: Duration) -> (Duration, u64) {
    let (cpu, waits) = loop_usage(server);
    thread::sleep(span);
    let (cpu_after, waits_after) = loop_usage(server);
    (cpu_after - cpu, waits_after - waits)
}

/// The most CPU time a turn of the loop may take between two waits, here:
/// a frame read and sent to a viewer takes well under a millisecond of the
/// debug build.
const CPU_PER_WAIT: Duration = Duration::from_millis(5);

/// Waits until `done` says yes, failing the test after [`STEP`].
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `/stats` document, or None while the server refuses with 503.
fn try_stats(server: &Server) -> Option<String> {
    let (status, _, body) = server.get_path("/stats");
    (status == 200).then(|| String::from_utf8(body).unwrap())
}

fn stat(server: &Server, key: &str) -> f64 {
    json_number(&server.stats(), key)
}

/// Closes stdin, waits for the server to exit, and checks that it exited 0
/// without a panic. Returns its stderr.
fn finish(server: &mut Server) -> String {
    let status = server.wait();
    let log = server.stderr.lock().unwrap().clone();
    assert!(status.success(), "exit status {status}: {log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// Writes frames into the server's stdin on a thread, one every
/// `interval`, until stopped or `limit` are written.
struct Producer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(ChildStdin, usize)>,
}

impl Producer {
    fn start(server: &mut Server, sent: &Arc<Vec<Vec<u8>>>, interval: Duration) -> Producer {
        let mut stdin = server.child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, flag) = (Arc::clone(sent), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                if stdin.write_all(&sent[n % sent.len()]).is_err() {
                    break;
                }
                n += 1;
                let due = start + interval * n as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            (stdin, n)
        });
        Producer { stop, handle }
    }

    /// Stops, gives stdin back to `server`, and returns how many frames were written.
    fn finish(self, server: &mut Server) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (stdin, n) = self.handle.join().unwrap();
        server.child.stdin = Some(stdin);
        n
    }
}

/// What a viewer received.
#[derive(Default, Debug)]
struct Received {
    /// Index in the frames written of each frame received, in order.
    order: Vec<usize>,
    /// Frames that are not byte-identical to any frame written.
    corrupt: usize,
    /// The longest wait between two frames.
    max_gap: Duration,
}

/// Reads the viewer's stream on a thread until it ends, checking each frame
/// against the frames written.
fn watch(viewer: Viewer, sent: &Arc<Vec<Vec<u8>>>) -> JoinHandle<Received> {
    watch_counting(viewer, sent, Arc::default())
}

/// As [`watch`], counting in `received` the frames received so far, for
/// the test to wait on.
fn watch_counting(
    mut viewer: Viewer,
    sent: &Arc<Vec<Vec<u8>>>,
    received: Arc<AtomicUsize>,
) -> JoinHandle<Received> {
    let sent = Arc::clone(sent);
    thread::spawn(move || {
        let mut got = Received::default();
        let mut last: Option<Instant> = None;
        while let Some(jpeg) = viewer.try_next_frame() {
            let now = Instant::now();
            if let Some(last) = last {
                got.max_gap = got.max_gap.max(now - last);
            }
            last = Some(now);
            match sent.iter().position(|f| *f == jpeg) {
                Some(i) => got.order.push(i),
                None => got.corrupt += 1,
            }
            received.fetch_add(1, Ordering::SeqCst);
        }
        got
    })
}

/// Bytes that are anything but a JPEG start: never `FF D8`.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    for i in 1..out.len() {
        if out[i - 1] == 0xFF && out[i] == 0xD8 {
            out[i] = 0xD9;
        }
    }
    out
}

/// Where the entropy-coded data of a baseline JPEG starts: after the SOS
/// segment.
fn scan_start(jpeg: &[u8]) -> usize {
    let mut at = 2;
    loop {
        assert_eq!(jpeg[at], 0xFF, "a marker at {at}");
        let code = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        at += 2 + length;
        if code == 0xDA {
            return at;
        }
    }
}

/// A socket to the server whose receive buffer is small, so that it fills
/// within a frame.
fn small_buffer_socket(server: &Server) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], server.port)).into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(STEP)).unwrap();
    s
}

/// Reads until the peer closes (EOF or reset) or `limit` passes; returns
/// the bytes read and whether the connection was closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (out, true),
        }
    }
}

fn reset(s: TcpStream) {
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

// ---------------------------------------------------------------------------
// Clients that misbehave
// ---------------------------------------------------------------------------

#[test]
fn slowloris_clients_are_cut_at_the_request_timeout_while_a_viewer_is_served() {
    let _serial = serial();
    const CONNECTIONS: usize = 500;
    const TIMEOUT: Duration = Duration::from_secs(3);
    raise_nofile(CONNECTIONS as libc::rlim_t + 512);
    let mut server = Server::start(&["--request-timeout", "3"]);
    let sent = Arc::new(frames(30));
    let received = Arc::new(AtomicUsize::new(0));
    let viewer = watch_counting(Viewer::open(&server, "/video.mjpg"), &sent, Arc::clone(&received));
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));

    struct Slow {
        socket: TcpStream,
        at: Instant,
        sent: usize,
        closed: Option<Duration>,
        answered: usize,
    }
    let request = b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n\r\n";
    let mut slow: Vec<Slow> = (0..CONNECTIONS)
        .map(|_| {
            let socket = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            socket.set_nonblocking(true).unwrap();
            socket.set_nodelay(true).unwrap();
            Slow { socket, at: Instant::now(), sent: 0, closed: None, answered: 0 }
        })
        .collect();
    // Frames the viewer got while every slow client was connected: from
    // now until the first is seen closed.
    let received_at_connect = received.load(Ordering::SeqCst);
    let mut while_connected = None;
    let deadline = Instant::now() + TIMEOUT + Duration::from_secs(4);
    let mut buf = [0; 512];
    while slow.iter().any(|s| s.closed.is_none()) && Instant::now() < deadline {
        for s in slow.iter_mut().filter(|s| s.closed.is_none()) {
            let age = s.at.elapsed();
            // One byte a second: the request can never be complete in time.
            if age >= Duration::from_secs(s.sent as u64) {
                match s.socket.write(&request[s.sent..s.sent + 1]) {
                    Ok(_) => s.sent += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {
                        s.closed = Some(age);
                        continue;
                    }
                }
            }
            match s.socket.read(&mut buf) {
                Ok(0) => s.closed = Some(age),
                Ok(n) => s.answered += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => s.closed = Some(age),
            }
        }
        if while_connected.is_none() && slow.iter().any(|s| s.closed.is_some()) {
            while_connected = Some(received.load(Ordering::SeqCst) - received_at_connect);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let stats = server.stats();
    let produced = producer.finish(&mut server);
    finish(&mut server);
    let got = viewer.join().unwrap();

    let closed: Vec<Duration> = slow.iter().filter_map(|s| s.closed).collect();
    let earliest = closed.iter().min().copied().unwrap_or_default();
    let latest = closed.iter().max().copied().unwrap_or_default();
    let most_sent = slow.iter().map(|s| s.sent).max().unwrap();
    let while_connected = while_connected.unwrap_or_default();
    eprintln!(
        "slowloris: {CONNECTIONS} connections at 1 byte/s (at most {most_sent} bytes each), \
         --request-timeout 3: {} closed, after {:.2} to {:.2} s; clients_timed_out {}; \
         viewer got {} of {produced} frames, {while_connected} while they were all \
         connected, longest gap {} ms",
        closed.len(),
        earliest.as_secs_f64(),
        latest.as_secs_f64(),
        json_number(&stats, "clients_timed_out"),
        got.order.len(),
        got.max_gap.as_millis(),
    );
    assert_eq!(closed.len(), CONNECTIONS, "some slow clients were never closed");
    assert!(earliest >= TIMEOUT - Duration::from_millis(100), "one closed after {earliest:?}");
    assert!(latest <= TIMEOUT + Duration::from_secs(2), "one closed after {latest:?}");
    assert!(slow.iter().all(|s| s.answered == 0), "a slow client got an answer");
    assert_eq!(json_number(&stats, "clients_timed_out"), CONNECTIONS as f64, "{stats}");
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
    // Served while they were all there: about 90 frames are written in the
    // 3 s before the timeout cuts them, and a server held up by them
    // would pass on few or none.
    assert!(
        while_connected >= 30,
        "the viewer got {while_connected} frames while they were all connected"
    );
}

#[test]
fn endless_headers_get_431_and_a_long_target_414() {
    let _serial = serial();
    let server = Server::start(&[]);

    // Headers that never end: 431 once the cap is reached, then the
    // connection is closed while the client is still sending.
    let mut s = server.connect();
    let mut reader = s.try_clone().unwrap();
    let answer = thread::spawn(move || read_until_closed(&mut reader, STEP));
    s.write_all(b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let start = Instant::now();
    let mut written = 0;
    let lines =
        b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(1024);
    s.set_write_timeout(Some(STEP)).unwrap();
    // Bounded in time: 6 s at most.
    let mut refused = false;
    while !refused && start.elapsed() < Duration::from_secs(6) {
        match s.write(&lines) {
            Ok(n) => written += n,
            Err(_) => refused = true,
        }
    }
    let cut_after = start.elapsed();
    let (raw, closed) = answer.join().unwrap();
    eprintln!(
        "endless headers: 431 after the 8 KiB cap; the client had written {} KiB when cut off \
         after {:.2} s",
        written / 1024,
        cut_after.as_secs_f64()
    );
    assert!(
        raw.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(closed, "the connection stayed open");
    // The answer is followed by the usual lingering close (2 s, checked
    // once a second): the client cannot go on sending for longer.
    assert!(refused, "the client could go on sending for {cut_after:?}");
    assert!(cut_after < Duration::from_millis(4500), "cut off after {cut_after:?}");

    // More header lines than the parser takes, each one short.
    let mut many = String::from("GET /stats HTTP/1.1\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(server.get(&many).0, 431);

    // A request line alone longer than the cap: its URI is too long.
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
    assert_eq!(server.get(&long).0, 414);

    assert_eq!(server.get_path("/stats").0, 200);
    wait_for("only the stats request is connected", || stat(&server, "clients") == 1.0);
}

#[test]
fn an_http_0_9_request_line_gets_400_at_once() {
    let _serial = serial();
    let server = Server::start(&["--request-timeout", "5"]);
    for line in ["GET /\r\n", "GET /\n", "GET /video.mjpg\r\n\r\n"] {
        let start = Instant::now();
        let mut s = server.connect();
        s.write_all(line.as_bytes()).unwrap();
        let (raw, closed) = read_until_closed(&mut s, STEP);
        let took = start.elapsed();
        eprintln!("HTTP/0.9 {line:?}: answered in {} ms", took.as_millis());
        assert!(raw.starts_with(b"HTTP/1.1 400 Bad Request\r\n"), "{line:?}: {raw:?}");
        assert!(closed);
        assert!(took < Duration::from_secs(2), "{line:?} waited for the request timeout");
    }
    assert_eq!(stat(&server, "clients_timed_out"), 0.0);
}

#[test]
fn binary_garbage_of_every_shape_gets_4xx_and_the_server_goes_on() {
    let _serial = serial();
    let server = Server::start(&[]);
    let mut letters = vec![b'A'; 9000];
    letters.extend_from_slice(b"\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("64 KiB of random bytes", garbage(64 << 10, 7)),
        ("16 KiB of NUL", vec![0; 16 << 10]),
        ("9000 letters and no space", letters),
        ("a request line of UTF-8", "GËT /vidéo HTTP/1.1\r\n\r\n".as_bytes().to_vec()),
        ("a header with control bytes", b"GET / HTTP/1.1\r\nX: \x01\x02\x7f\r\n\r\n".to_vec()),
        ("a bare CRLF storm", b"\r\n".repeat(5000)),
    ];
    for (what, bytes) in cases {
        let mut s = server.connect();
        // The server may answer and close before it has read everything.
        let _ = s.write_all(&bytes);
        let (raw, closed) = read_until_closed(&mut s, STEP);
        let status = String::from_utf8_lossy(raw.get(..12).unwrap_or_default()).into_owned();
        eprintln!("garbage request, {what}: {status:?}");
        assert!(
            status == "HTTP/1.1 400" || status == "HTTP/1.1 431",
            "{what}: {}",
            String::from_utf8_lossy(&raw)
        );
        assert!(closed, "{what}: still open");
    }
    assert_eq!(server.get_path("/stats").0, 200);
    wait_for("only the stats request is connected", || stat(&server, "clients") == 1.0);
}

#[test]
fn a_stream_request_in_one_byte_writes_then_a_pipelined_one_still_streams() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(10));
    produce(&mut server, &sent[..1], Duration::ZERO);
    wait_for("the first frame is in", || stat(&server, "frames_in") == 1.0);
    let mut s = server.connect();
    s.set_nodelay(true).unwrap();
    let request = b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\nGET /stats HTTP/1.1\r\n\r\n";
    for b in request {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&head));
    assert!(String::from_utf8_lossy(&head).contains("multipart/x-mixed-replace"));
    // Frames flow on the same connection, and the pipelined request is ignored.
    let mut rest = Vec::new();
    let mut buf = [0; 65536];
    let producer = Producer::start(&mut server, &sent, Duration::from_millis(20));
    let deadline = Instant::now() + STEP;
    let delimiter = b"--boundarydonotcross\r\n";
    while rest.windows(delimiter.len()).filter(|w| w == delimiter).count() < 5 {
        assert!(Instant::now() < deadline, "no frames");
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended");
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(!rest.windows(9).any(|w| w == b"HTTP/1.1 "), "a second response came");
    producer.finish(&mut server);
    finish(&mut server);
}

#[test]
fn a_viewer_that_floods_the_server_with_bytes_does_not_hold_up_the_others() {
    let _serial = serial();
    const FLOOD: Duration = Duration::from_secs(2);
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(30));
    let received = Arc::new(AtomicUsize::new(0));
    let viewer = watch_counting(Viewer::open(&server, "/video.mjpg"), &sent, Arc::clone(&received));
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));
    wait_for("frames flow", || stat(&server, "frames_in") >= 2.0);
    let rss_before = server.rss_kib();
    // A streaming client that never reads and sends as fast as it can
    // until it is told to stop.
    let mut flood = server.stalled_viewer("/video.mjpg");
    let (stop, flooded) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let flooder = {
        let (stop, flooded) = (Arc::clone(&stop), Arc::clone(&flooded));
        thread::spawn(move || {
            let start = Instant::now();
            let chunk = garbage(64 << 10, 3);
            flood.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match flood.write(&chunk) {
                    Ok(n) => _ = flooded.fetch_add(n, Ordering::SeqCst),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            start.elapsed()
        })
    };
    wait_for("the flood is under way", || flooded.load(Ordering::SeqCst) > 0);
    // The server answers others while the flood goes on: for at least
    // FLOOD, and until the viewer has taken 30 frames and /stats has been
    // answered 10 times, each an answer within STEP (the read timeout).
    let start = Instant::now();
    let frames_before = received.load(Ordering::SeqCst);
    let (mut answered, mut rss_max) = (0, rss_before);
    wait_for("the viewer takes 30 frames and /stats answers 10 times during the flood", || {
        assert!(!flooder.is_finished(), "the flood ended: the server closed the connection");
        server.stats();
        answered += 1;
        rss_max = rss_max.max(server.rss_kib());
        start.elapsed() >= FLOOD
            && received.load(Ordering::SeqCst) >= frames_before + 30
            && answered >= 10
    });
    let during = received.load(Ordering::SeqCst) - frames_before;
    stop.store(true, Ordering::SeqCst);
    let flood_took = flooder.join().unwrap();
    let flooded = flooded.load(Ordering::SeqCst);
    let produced = producer.finish(&mut server);
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "a talking viewer: sent {} MiB in {:.1} s; meanwhile /stats answered {answered} times \
         and the other viewer got {during} frames; RSS {rss_before} KiB, at most {rss_max} KiB; \
         the other viewer got {} of {produced} frames, longest gap {} ms",
        flooded >> 20,
        flood_took.as_secs_f64(),
        got.order.len(),
        got.max_gap.as_millis()
    );
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
    // The server reads a little per event and lets TCP slow the flood down,
    // rather than spend its time reading gigabytes of it.
    assert!(flooded < 256 << 20, "the server took {} MiB of junk", flooded >> 20);
    assert!(rss_max < rss_before + 4096, "RSS grew from {rss_before} to {rss_max} KiB");
}

#[test]
fn two_hundred_viewers_that_never_read_cost_a_reading_viewer_nothing() {
    let _serial = serial();
    const STALLED: usize = 200;
    const FRAMES: usize = 315; // 3.5 s at 90 fps
    const INTERVAL: Duration = Duration::from_micros(11_111);
    raise_nofile(STALLED as libc::rlim_t + 512);
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(30));
    let cycle: Vec<Vec<u8>> = sent.iter().cycle().take(FRAMES).cloned().collect();
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    produce(&mut server, &cycle[..45], INTERVAL);
    let rss_before = server.rss_kib();
    let stalled: Vec<TcpStream> =
        (0..STALLED).map(|_| server.stalled_viewer("/video.mjpg")).collect();
    produce(&mut server, &cycle[45..180], INTERVAL);
    let rss_middle = server.rss_kib();
    produce(&mut server, &cycle[180..], INTERVAL);
    let rss_after = server.rss_kib();
    let stats = server.stats();
    finish(&mut server);
    let got = viewer.join().unwrap();
    let rss_max = rss_middle.max(rss_after);
    eprintln!(
        "{STALLED} viewers that never read, 90 fps for 3.5 s: the reading viewer got {} of \
         {FRAMES} frames, longest gap {} ms; RSS {rss_before} KiB before they joined, \
         {rss_middle} then {rss_after} KiB; clients {}, frames_skipped {}",
        got.order.len(),
        got.max_gap.as_millis(),
        json_number(&stats, "clients"),
        json_number(&stats, "frames_skipped"),
    );
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= FRAMES * 9, "the reader got {} of {FRAMES}", got.order.len());
    assert!(rss_max < rss_before + 4096, "RSS grew from {rss_before} to {rss_max} KiB");
    // All still connected (the client timeout is 10 s), all skipping.
    assert_eq!(json_number(&stats, "clients"), (STALLED + 2) as f64, "{stats}");
    assert!(json_number(&stats, "frames_skipped") >= (STALLED * 100) as f64, "{stats}");
    drop(stalled);
}

#[test]
fn a_viewer_that_never_reads_is_closed_at_the_client_timeout() {
    let _serial = serial();
    const STALLED: usize = 10;
    let mut server = Server::start(&["--client-timeout", "2"]);
    let sent = Arc::new(frames(30));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));
    wait_for("frames flow", || stat(&server, "frames_in") >= 2.0);
    let joined = Instant::now();
    let mut stalled: Vec<TcpStream> =
        (0..STALLED).map(|_| server.stalled_viewer("/video.mjpg")).collect();
    wait_for("the stalled viewers are closed", || {
        stat(&server, "clients_timed_out") >= STALLED as f64
    });
    let closed_after = joined.elapsed();
    // What a stalled viewer finds when it reads at last: the part of the
    // stream that was in flight, then the end.
    let (raw, closed) = read_until_closed(&mut stalled[0], Duration::from_secs(2));
    let stats = server.stats();
    let produced = producer.finish(&mut server);
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "{STALLED} viewers that never read, --client-timeout 2: closed {:.2} s after joining; \
         one then read {} KiB and the end; clients_timed_out {}; the reading viewer got {} of \
         {produced} frames",
        closed_after.as_secs_f64(),
        raw.len() / 1024,
        json_number(&stats, "clients_timed_out"),
        got.order.len(),
    );
    assert!(closed_after >= Duration::from_secs(2), "closed after {closed_after:?}");
    assert!(closed_after < Duration::from_millis(4500), "closed after {closed_after:?}");
    assert!(closed, "the stalled viewer's connection is still open");
    assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // It stopped taking data at once: the kernel held what fits in flight
    // and the 128 KiB of unsent data the server allows, not seconds of frames.
    let stream_rate = sent[0].len() * 30 * closed_after.as_secs() as usize;
    assert!(raw.len() < 256 << 10, "it was sent {} KiB", raw.len() >> 10);
    assert!(raw.len() * 4 < stream_rate, "it was sent {} KiB", raw.len() >> 10);
    assert_eq!(json_number(&stats, "clients_timed_out"), STALLED as f64, "{stats}");
    assert_eq!(json_number(&stats, "clients"), 2.0, "{stats}");
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
}

#[test]
fn a_viewer_that_reads_two_frames_a_second_outlasts_a_short_client_timeout() {
    let _serial = serial();
    const READS: usize = 20;
    let mut server = Server::start(&["--client-timeout", "1"]);
    let sent = Arc::new(frames(30));
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));
    wait_for("frames flow", || stat(&server, "frames_in") >= 2.0);
    // Its buffer fills at once; then its kernel keeps the window closed
    // until 64 KB (one loopback segment) is read: at two of these frames a
    // second, longer than the client-timeout.
    let mean = sent.iter().map(Vec::len).sum::<usize>() / sent.len();
    assert!(mean * 2 < 64 << 10, "frames of {mean} bytes reopen the window too soon");
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    for read in 0..READS {
        let stats = server.stats();
        assert!(viewer.try_next_frame().is_some(), "closed after {read} reads: {stats}");
        // Its work on each frame: the behaviour under test.
        std::thread::sleep(Duration::from_millis(500));
    }
    let stats = server.stats();
    // Then it stops reading: as slow a reader as far as its window shows,
    // it is given the same time, and then closed.
    let stopped = Instant::now();
    while stat(&server, "clients_timed_out") < 1.0 {
        assert!(stopped.elapsed() < STOPPED_CLOSED_WITHIN, "a viewer that stopped is still open");
        thread::sleep(Duration::from_millis(50));
    }
    let closed_after = stopped.elapsed();
    producer.finish(&mut server);
    finish(&mut server);
    eprintln!(
        "a viewer of 2 frames a second of {mean} bytes, --client-timeout 1: {READS} read; \
         closed {:.1} s after it stopped reading",
        closed_after.as_secs_f64()
    );
    assert_eq!(json_number(&stats, "clients_timed_out"), 0.0, "{stats}");
}

/// The most a viewer whose window shows it behind is given (a minute: its
/// buffer grows as it reads, and with it that time; 22 s in a run here),
/// a second for the check, and room for a busy machine.
const STOPPED_CLOSED_WITHIN: Duration = Duration::from_secs(65);

#[test]
fn peers_that_reset_mid_frame_or_half_close_are_served_or_dropped_quietly() {
    let _serial = serial();
    const MIN_ROUNDS: usize = 50;
    const MIN_FRAMES: usize = 60;
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(30));
    let received = Arc::new(AtomicUsize::new(0));
    let viewer = watch_counting(Viewer::open(&server, "/video.mjpg"), &sent, Arc::clone(&received));
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(16_667));
    wait_for("frames flow", || stat(&server, "frames_in") >= 2.0);
    let request = b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // Rounds of the four for at least 2 s, and until the viewer has taken
    // 60 frames while they come and go (within STEP).
    let start = Instant::now();
    let frames_before = received.load(Ordering::SeqCst);
    let during = || received.load(Ordering::SeqCst) - frames_before;
    let (mut rounds, mut partial_closed) = (0, Duration::ZERO);
    let delimiter = b"--boundarydonotcross\r\n";
    while rounds < MIN_ROUNDS || start.elapsed() < Duration::from_secs(2) || during() < MIN_FRAMES {
        assert!(start.elapsed() < STEP, "the viewer took {} frames in {STEP:?}", during());
        rounds += 1;
        // A reset in the middle of a frame: a few KiB of it read, the rest
        // in flight.
        let mut s = small_buffer_socket(&server);
        s.write_all(request).unwrap();
        let mut part = vec![0; 6000];
        s.read_exact(&mut part).unwrap();
        reset(s);

        // A half-close after a stream request (as `nc -N` sends one): the
        // stream is served, two frames read, then the connection dropped.
        let mut s = server.connect();
        s.write_all(request).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 65536];
        while got.windows(delimiter.len()).filter(|w| w == delimiter).count() < 3 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "a half-closed stream ended after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        drop(s);

        // A half-close in the middle of a request: closed without an answer.
        let mut s = server.connect();
        s.write_all(b"GET /vid").unwrap();
        let at = Instant::now();
        s.shutdown(Shutdown::Write).unwrap();
        let (raw, closed) = read_until_closed(&mut s, STEP);
        assert!(closed && raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
        partial_closed = partial_closed.max(at.elapsed());

        // A half-close after a whole request for a page: the answer still comes.
        let mut s = server.connect();
        s.write_all(b"GET /stats HTTP/1.1\r\n\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (raw, closed) = read_until_closed(&mut s, STEP);
        assert!(closed);
        let (status, _, body) = common::split_response(&raw);
        assert_eq!(status, 200);
        assert!(body.starts_with(b"{") && body.ends_with(b"}"));
        // Paced: hundreds of rounds, not tens of thousands of ports in TIME_WAIT.
        thread::sleep(Duration::from_millis(4));
    }
    let abuse = start.elapsed();
    let during = during();
    wait_for("only the viewer and the stats request are left", || stat(&server, "clients") == 2.0);
    let stats = server.stats();
    let produced = producer.finish(&mut server);
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "{rounds} rounds in {:.1} s of a reset mid-frame, a half-closed stream (served), a \
         half-closed partial request (closed within {} ms) and a half-closed /stats request \
         (answered): the viewer got {during} frames meanwhile, {} of {produced} in all, \
         longest gap {} ms; clients_timed_out {}",
        abuse.as_secs_f64(),
        partial_closed.as_millis(),
        got.order.len(),
        got.max_gap.as_millis(),
        json_number(&stats, "clients_timed_out"),
    );
    assert!(
        partial_closed < Duration::from_secs(2),
        "a half-closed request stayed {partial_closed:?}"
    );
    assert_eq!(json_number(&stats, "clients_timed_out"), 0.0, "{stats}");
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
}

#[test]
fn a_storm_of_5000_connects_and_disconnects() {
    let _serial = serial();
    const THREADS: usize = 4;
    const EACH: usize = 1250;
    raise_nofile(1024);
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(30));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));
    let rss_before = server.rss_kib();
    let start = Instant::now();
    let port = server.port;
    let storm: Vec<JoinHandle<usize>> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let mut failed = 0;
                for i in 0..EACH {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, STEP) else {
                        failed += 1;
                        continue;
                    };
                    // Four ways to leave: at once, with a reset, mid-request,
                    // and after a whole request without reading the answer.
                    match (t + i) % 4 {
                        0 => drop(s),
                        1 => reset(s),
                        2 => {
                            let _ = s.write_all(b"GET /video.mj");
                        }
                        _ => {
                            let _ = s.write_all(b"GET /video.mjpg HTTP/1.1\r\n\r\n");
                            reset(s);
                        }
                    }
                }
                failed
            })
        })
        .collect();
    let failed: usize = storm.into_iter().map(|h| h.join().unwrap()).sum();
    let storm_secs = start.elapsed().as_secs_f64();
    // Until the server has seen the storm's connections close, they count
    // towards --max-clients, and a new client may be refused with 503.
    let mut refused_here = 0;
    wait_for("the storm's connections are all closed", || match try_stats(&server) {
        Some(stats) => json_number(&stats, "clients") == 2.0,
        None => {
            refused_here += 1;
            false
        }
    });
    let settled_secs = start.elapsed().as_secs_f64();
    let rss_after = server.rss_kib();
    let stats = server.stats();
    let (status, _, _) = server.get_path("/");
    let produced = producer.finish(&mut server);
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "storm: {} connects and disconnects from {THREADS} threads in {storm_secs:.2} s \
         ({:.0}/s), {failed} failed, all closed after {settled_secs:.2} s; clients_total {}, \
         clients_refused {} ({refused_here} of them the test's own /stats); RSS {rss_before} -> {rss_after} KiB; the viewer got {} of {produced} frames, longest \
         gap {} ms",
        THREADS * EACH,
        (THREADS * EACH) as f64 / storm_secs,
        json_number(&stats, "clients_total"),
        json_number(&stats, "clients_refused"),
        got.order.len(),
        got.max_gap.as_millis()
    );
    assert_eq!(failed, 0);
    assert_eq!(status, 200);
    // Every connection was taken in: admitted, or refused with 503 when the
    // closed ones that were not yet seen to be closed made up --max-clients.
    let handled = json_number(&stats, "clients_total") + json_number(&stats, "clients_refused");
    assert!(handled >= (THREADS * EACH) as f64, "{stats}");
    assert!(rss_after < rss_before + 4096, "RSS grew from {rss_before} to {rss_after} KiB");
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
}

#[test]
#[ignore = "needs strace: run with --include-ignored, as .ci/run does"]
fn a_backlog_of_connections_is_accepted_at_most_1000_a_turn() {
    common::require("strace");
    let _serial = serial();
    // More than a turn's 1000, and within the listen backlog of 1024, so
    // that every one is waiting in the kernel when the server wakes.
    const WAITING: usize = 1020;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let somaxconn: usize = somaxconn.trim().parse().unwrap();
    assert!(
        somaxconn >= WAITING,
        "net.core.somaxconn is {somaxconn}: the backlog cannot hold them"
    );
    raise_nofile(WAITING as libc::rlim_t + 512);
    let server = Server::start(&["--max-clients", "2000"]);
    let pid = server.child.id() as libc::pid_t;
    // The loop's thread only: its accepts and the waits between them.
    let mut strace = std::process::Command::new("strace")
        .args(["-e", "trace=accept,accept4,epoll_wait,epoll_pwait,epoll_pwait2"])
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let traced = Arc::new(Mutex::new(Vec::<String>::new()));
    let accepted = |lines: &[String]| lines.iter().filter(|l| accepted_a_connection(l)).count();
    let reader = {
        let traced = Arc::clone(&traced);
        let mut err = std::io::BufReader::new(strace.stderr.take().unwrap());
        thread::spawn(move || {
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut err, &mut line).is_ok_and(|n| n > 0) {
                traced.lock().unwrap().push(std::mem::take(&mut line));
            }
        })
    };
    wait_for("strace attaches", || traced.lock().unwrap().iter().any(|l| l.contains("attached")));
    // Stopped, the server accepts nothing; the kernel completes the
    // handshakes and queues the connections.
    // SAFETY: signals to the server this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let waiting: Vec<TcpStream> =
        (0..WAITING).map(|_| TcpStream::connect_timeout(&addr, STEP).unwrap()).collect();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for("the server accepts them all", || accepted(&traced.lock().unwrap()) >= WAITING);
    // SAFETY: SIGINT to the strace this test started: it detaches.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    strace.wait().unwrap();
    reader.join().unwrap();
    let traced = traced.lock().unwrap();
    // The accepts between one wait for events and the next.
    let turns: Vec<usize> =
        traced.split(|l| l.contains("epoll_")).map(accepted).filter(|&n| n > 0).collect();
    eprintln!("accepts per turn for {WAITING} waiting connections: {turns:?}");
    assert_eq!(turns.iter().max(), Some(&1000), "accepts per turn: {turns:?}");
    assert_eq!(turns.iter().sum::<usize>(), WAITING, "accepts per turn: {turns:?}");
    drop(waiting);
}

/// True for a line of strace's that shows an accept that gave a socket.
fn accepted_a_connection(line: &str) -> bool {
    line.starts_with("accept")
        && line
            .rsplit_once(") = ")
            .is_some_and(|(_, fd)| fd.starts_with(|c: char| c.is_ascii_digit()))
}

#[test]
fn clients_over_max_clients_read_a_whole_503_though_they_sent_a_request() {
    let _serial = serial();
    const REFUSED: usize = 50;
    let mut server = Server::start(&["--max-clients", "1"]);
    let viewer = Viewer::open(&server, "/video.mjpg");
    // While the server is stopped, every request is in before it takes
    // the connection: the server has to answer with the request unread.
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill with the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let clients: Vec<TcpStream> = (0..REFUSED)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            s
        })
        .collect();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let mut whole = 0;
    let mut failures = Vec::new();
    for mut s in clients {
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Ok(_) if raw.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n") => whole += 1,
            Ok(_) => failures.push(String::from_utf8_lossy(&raw).into_owned()),
            Err(e) => failures.push(format!("{e} after {} bytes", raw.len())),
        }
    }
    viewer.close();
    // A viewer's end alone may be a half-close: it is seen to be gone when
    // the next frame written to it is answered with a reset.
    produce(&mut server, &frames(1), Duration::ZERO);
    let refused = common::wait_for_value("the viewer is gone", || {
        try_stats(&server).map(|stats| json_number(&stats, "clients_refused"))
    });
    eprintln!(
        "{REFUSED} clients over --max-clients 1, each with its request sent: {whole} read a whole \
         503 and the end; clients_refused {refused}; {:?}",
        failures.first()
    );
    assert_eq!(whole, REFUSED, "{failures:?}");
    // The /stats requests above may be refused too while the viewer's close
    // is not yet seen: at least the 50 were counted.
    assert!(refused >= REFUSED as f64, "clients_refused {refused}");
}

#[test]
#[ignore = "needs an open-files limit above 10,000 (root can raise it): run with --include-ignored"]
fn ten_thousand_idle_connections_are_held_while_the_stream_goes_on() {
    let _serial = serial();
    const IDLE: usize = 10_000;
    let limit = raise_nofile(IDLE as libc::rlim_t + 1024);
    assert!(limit >= IDLE as libc::rlim_t + 256, "the open-files limit is {limit}");
    let mut server = Server::start(&["--max-clients", "20000", "--request-timeout", "120"]);
    let sent = Arc::new(frames(30));
    produce(&mut server, &sent[..1], Duration::ZERO);
    let rss_before = server.rss_kib();
    let start = Instant::now();
    let idle: Vec<TcpStream> =
        (0..IDLE).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    let connect_secs = start.elapsed().as_secs_f64();
    wait_for("every idle connection is accepted", || stat(&server, "clients") == (IDLE + 1) as f64);
    let rss_held = server.rss_kib();
    let (cpu_idle, waits_idle) = loop_over(&server, Duration::from_secs(2));
    // The stream goes on for a viewer while they are held.
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    let cycle: Vec<Vec<u8>> = sent.iter().cycle().take(60).cloned().collect();
    produce(&mut server, &cycle, Duration::from_micros(33_333));
    let stats = server.stats();
    drop(idle);
    wait_for("the idle connections are gone", || stat(&server, "clients") == 2.0);
    let released_secs = start.elapsed().as_secs_f64();
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "{IDLE} idle connections: connected in {connect_secs:.2} s; RSS {rss_before} -> \
         {rss_held} KiB ({:.2} KiB each); while held, the loop used {cpu_idle:?} of CPU over 2 s \
         and waited {waits_idle} times; clients {} \
         with the viewer; all gone {released_secs:.2} s after the start; the viewer got {} \
         frames (60 written while it watched, and the one it joined on), longest gap {} ms",
        (rss_held.saturating_sub(rss_before)) as f64 / IDLE as f64,
        json_number(&stats, "clients"),
        got.order.len(),
        got.max_gap.as_millis()
    );
    assert_eq!(json_number(&stats, "clients"), (IDLE + 2) as f64, "{stats}");
    assert_eq!(json_number(&stats, "clients_timed_out"), 0.0, "{stats}");
    assert!(rss_held < rss_before + 20 * 1024, "RSS grew from {rss_before} to {rss_held} KiB");
    // A loop that spun on them would use the CPU without waiting.
    assert!(
        cpu_idle <= CPU_PER_WAIT * (waits_idle as u32 + 1),
        "with idle connections the loop used {cpu_idle:?} of CPU and waited {waits_idle} times"
    );
    assert_eq!(got.corrupt, 0);
    // The viewer's first frame is the one before it joined.
    assert!(got.order.len() >= 54, "the viewer got {} of 60 frames", got.order.len());
}

#[test]
fn past_the_descriptors_its_limit_leaves_clients_get_503_without_spinning_then_are_served() {
    let _serial = serial();
    const CLIENTS: usize = 200;
    const FILES: libc::rlim_t = 64;
    raise_nofile(CLIENTS as libc::rlim_t + 512);
    let mut server = Server::start_configured(&["--request-timeout", "30"], |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe, and nothing else runs
        // between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit { rlim_cur: FILES, rlim_max: FILES };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let sent = Arc::new(frames(30));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    let producer = Producer::start(&mut server, &sent, Duration::from_micros(33_333));
    // Connections that send no request: those let in wait for one, the
    // rest are answered 503 at once.
    let clients: Vec<TcpStream> =
        (0..CLIENTS).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    let refused = |clients: &[TcpStream]| {
        let mut head = [0; 12];
        clients
            .iter()
            .filter(|c| {
                c.set_nonblocking(true).unwrap();
                c.peek(&mut head).is_ok_and(|n| n == head.len() && &head[9..] == b"503")
            })
            .count()
    };
    wait_for("every client past the limit has its 503", || {
        refused(&clients) >= CLIENTS - FILES as usize
    });
    let (cpu, waits) = loop_over(&server, Duration::from_secs(2));
    assert!(server.child.try_wait().unwrap().is_none(), "the server died");
    let rss_saturated = server.rss_kib();
    let turned_away = refused(&clients);
    drop(clients);
    // Serves again once the clients have gone.
    let start = Instant::now();
    let stats = server.stats();
    let back_after = start.elapsed();
    let (status, _, body) = server.get_path("/snapshot.jpg");
    let produced = producer.finish(&mut server);
    let log = finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "{CLIENTS} connections against an open-files limit of {FILES}: {turned_away} got 503; \
         over 2 s while full the loop used {cpu:?} of CPU and waited {waits} times; RSS \
         {rss_saturated} KiB; served again {} ms after they closed; the viewer got {} of \
         {produced} frames, longest gap {} ms",
        back_after.as_millis(),
        got.order.len(),
        got.max_gap.as_millis()
    );
    // Accepting again at once, rather than answering 503, would spin.
    assert!(
        cpu <= CPU_PER_WAIT * (waits as u32 + 1),
        "full, the loop used {cpu:?} of CPU and waited {waits} times"
    );
    assert!(json_number(&stats, "clients_refused") >= turned_away as f64, "{stats}");
    assert_eq!(json_number(&stats, "accept_pauses"), 0.0, "{stats}");
    assert!(!log.contains("Too many open files"), "{log}");
    assert_eq!(status, 200);
    assert!(sent.contains(&body));
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() * 10 >= produced * 9, "viewer got {} of {produced}", got.order.len());
}

// ---------------------------------------------------------------------------
// Input that misbehaves
// ---------------------------------------------------------------------------

/// What the library's own splitter makes of `input`, fed in one piece: the
/// server, which reads the same bytes in whatever pieces the pipe gives,
/// must agree.
fn split_offline(input: &[u8], max_frame: usize) -> (Vec<Vec<u8>>, [u64; 4]) {
    let mut splitter = Splitter::new(max_frame);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let fed = splitter.feed(rest);
        out.extend(fed.frame);
        rest = &rest[fed.consumed..];
    }
    let c = splitter.counters;
    (out, [c.frames, c.garbage_bytes, c.broken_frames, c.oversize_frames])
}

fn counters(stats: &str) -> [u64; 4] {
    ["frames_in", "garbage_bytes", "broken_frames", "oversize_frames"]
        .map(|key| json_number(stats, key) as u64)
}

#[test]
fn garbage_before_between_and_inside_frames_never_reaches_a_viewer() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(14));
    let f = |i: usize| sent[i].clone();
    let half = |i: usize| sent[i][..sent[i].len() / 2].to_vec();
    let scan = scan_start(&sent[0]);
    let mut lying_length = f(8);
    // APP0's length says 65535: the segment swallows what follows.
    assert_eq!(&lying_length[2..4], &[0xFF, 0xE0]);
    lying_length[4..6].copy_from_slice(&[0xFF, 0xFF]);
    let pieces: Vec<(&str, Vec<u8>)> = vec![
        ("garbage before", garbage(10_000, 1)),
        ("frame 0", f(0)),
        ("garbage between", garbage(3_000, 2)),
        (
            "frame 1, junk where its first marker should be",
            [&f(1)[..2], b"junk", &f(1)[2..]].concat(),
        ),
        ("frame 2", f(2)),
        ("frame 3 cut in half", half(3)),
        ("frame 4", f(4)),
        ("frame 5 with FF D8 inside its scan", {
            let mid = scan + (sent[5].len() - scan) / 2;
            [&f(5)[..mid], &[0xFF, 0xD8], &f(5)[mid..]].concat()
        }),
        ("frame 6 with FF 00 for a marker", [&f(6)[..2], &[0xFF, 0x00], &f(6)[2..]].concat()),
        ("frame 7", f(7)),
        ("frame 11 cut in its headers", f(11)[..scan / 2].to_vec()),
        ("garbage after the cut", garbage(2_000, 3)),
        ("frame 11", f(11)),
        ("frame 8 with a lying segment length", lying_length),
        // Swallowed by frame 8's 64 KiB segment, as the length says.
        ("frame 9", f(9)),
        ("frame 10", f(10)),
        ("frame 12", f(12)),
        ("frame 13", f(13)),
    ];
    let input: Vec<u8> = pieces.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (expected, expected_counters) = split_offline(&input, 8 << 20);
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    // Each piece waits until the frames so far have reached the viewer's
    // socket, so that it takes every frame that comes out.
    let mut written = Vec::new();
    for (_, piece) in &pieces {
        server.stdin().write_all(piece).unwrap();
        written.extend_from_slice(piece);
        let out = split_offline(&written, 8 << 20).0.len() as f64;
        wait_for("the frames so far are out", || stat(&server, "frames_out") == out);
    }
    let pure_garbage: usize =
        pieces.iter().filter(|(what, _)| what.starts_with("garbage")).map(|(_, p)| p.len()).sum();
    wait_for("the server has read everything", || stat(&server, "bytes_in") == input.len() as f64);
    let stats = server.stats();
    finish(&mut server);
    let got = viewer.join().unwrap();
    let frames_out: Vec<Vec<u8>> = got.order.iter().map(|&i| sent[i].clone()).collect();
    eprintln!(
        "garbage in the input: {} bytes in {} pieces; frames out {:?}; counters \
         [frames_in, garbage_bytes, broken_frames, oversize_frames] = {:?}",
        input.len(),
        pieces.len(),
        got.order,
        counters(&stats)
    );
    assert_eq!(got.corrupt, 0);
    assert!(frames_out == expected, "the server's frames differ from the splitter's");
    // Each intact frame arrives, except those within the 64 KiB that frame
    // 8's segment length claims: the splitter walks the JPEG structure, and
    // a length is all it has to go by (an EXIF segment may hold FF D8).
    assert_eq!(got.order, [0, 2, 4, 7, 11, 13]);
    assert_eq!(counters(&stats), expected_counters, "{stats}");
    let [_, garbage_bytes, broken, _] = counters(&stats);
    assert!(garbage_bytes >= pure_garbage as u64, "{stats}");
    assert!(broken >= 5, "{stats}");
}

#[test]
fn an_endless_frame_over_the_cap_is_dropped_in_bounded_memory() {
    let _serial = serial();
    const CAP: usize = 100_000;
    const ENDLESS: usize = 32 << 20;
    let mut server = Server::start(&["--max-frame-bytes", "100000"]);
    let sent = Arc::new(frames(3));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    produce(&mut server, &sent[..1], Duration::ZERO);
    wait_for("the first frame is in", || stat(&server, "frames_in") == 1.0);
    let rss_before = server.rss_kib();
    // Frame 1's headers, then its scan data over and over: 32 MiB of a
    // well-formed frame that never ends, then its EOI.
    let scan = scan_start(&sent[1]);
    let entropy = &sent[1][scan..sent[1].len() - 2];
    server.stdin().write_all(&sent[1][..scan]).unwrap();
    let mut written = 0;
    let mut rss_max = rss_before;
    while written < ENDLESS {
        server.stdin().write_all(entropy).unwrap();
        written += entropy.len();
        if written % (1 << 20) < entropy.len() {
            rss_max = rss_max.max(server.rss_kib());
        }
    }
    server.stdin().write_all(&[0xFF, 0xD9]).unwrap();
    // Another huge frame, cut short by the next frame's SOI.
    server.stdin().write_all(&sent[1][..scan]).unwrap();
    for _ in 0..(4 * CAP / entropy.len() + 1) {
        server.stdin().write_all(entropy).unwrap();
    }
    produce(&mut server, &sent[2..], Duration::ZERO);
    wait_for("the last frame is in", || stat(&server, "frames_in") == 2.0);
    rss_max = rss_max.max(server.rss_kib());
    let stats = server.stats();
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "a {} MiB frame and a {} KiB one cut short, --max-frame-bytes {CAP}: RSS {rss_before} \
         KiB before, at most {rss_max} KiB while reading; frames out {:?}; oversize_frames {}, \
         broken_frames {}",
        ENDLESS >> 20,
        (4 * CAP) >> 10,
        got.order,
        json_number(&stats, "oversize_frames"),
        json_number(&stats, "broken_frames"),
    );
    assert_eq!(got.order, [0, 2]);
    assert_eq!(got.corrupt, 0);
    assert_eq!(json_number(&stats, "oversize_frames"), 2.0, "{stats}");
    assert_eq!(json_number(&stats, "broken_frames"), 0.0, "{stats}");
    assert!(rss_max < rss_before + 2048, "RSS grew from {rss_before} to {rss_max} KiB");
}

#[test]
fn a_producer_writing_one_byte_at_a_time() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(2));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    let start = Instant::now();
    let mut writes = 0;
    for frame in sent.iter() {
        for (i, b) in frame.iter().enumerate() {
            server.stdin().write_all(&[*b]).unwrap();
            writes += 1;
            // Slowly through the headers, so that the server reads them a
            // byte at a time; then as fast as single bytes go.
            if i < 700 {
                thread::sleep(Duration::from_micros(200));
            }
        }
    }
    let total: usize = sent.iter().map(Vec::len).sum();
    wait_for("both frames are in", || stat(&server, "frames_in") == 2.0);
    let took = start.elapsed();
    let stats = server.stats();
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "one byte per write: {writes} writes in {:.2} s; frames out {:?}; counters {:?}",
        took.as_secs_f64(),
        got.order,
        counters(&stats)
    );
    assert_eq!(writes, total);
    assert_eq!(got.order, [0, 1]);
    assert_eq!(counters(&stats), [2, 0, 0, 0], "{stats}");
    assert_eq!(json_number(&stats, "bytes_in"), total as f64);
}

#[test]
fn a_producer_writing_flat_out_is_kept_up_with_or_skipped_never_queued() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(30));
    let received = Arc::new(AtomicUsize::new(0));
    let viewer = watch_counting(Viewer::open(&server, "/video.mjpg"), &sent, Arc::clone(&received));
    let stalled = server.stalled_viewer("/video.mjpg");
    produce(&mut server, &sent[..1], Duration::ZERO);
    wait_for("the first frame is in", || stat(&server, "frames_in") == 1.0);
    let rss_before = server.rss_kib();
    // All 30 frames in each write, as fast as the pipe takes them.
    let batch = Arc::new(vec![sent.concat()]);
    let producer = Producer::start(&mut server, &batch, Duration::ZERO);
    // Reading the input takes turns with the clients: while the input
    // floods in, for at least 2 s and until the viewer has taken 20 frames
    // and /stats has been answered 20 times (each within STEP), all within
    // STEP. A loop that read the input until it ran dry would shut them out
    // for as long as the producer kept the pipe full.
    let start = Instant::now();
    let frames_before = received.load(Ordering::SeqCst);
    let (mut answered, mut rss_max) = (0, rss_before);
    wait_for(
        "the viewer takes 20 frames and /stats answers 20 times as the input floods in",
        || {
            rss_max = rss_max.max(server.rss_kib());
            server.stats();
            answered += 1;
            start.elapsed() >= Duration::from_secs(2)
                && received.load(Ordering::SeqCst) >= frames_before + 20
                && answered >= 20
        },
    );
    let during = received.load(Ordering::SeqCst) - frames_before;
    let written = producer.finish(&mut server) * sent.len() + 1;
    let secs = start.elapsed().as_secs_f64();
    wait_for("the server has read everything", || stat(&server, "frames_in") == written as f64);
    let stats = server.stats();
    finish(&mut server);
    let got = viewer.join().unwrap();
    eprintln!(
        "flat-out producer: {written} frames ({:.0} fps, {:.0} MB/s) in {secs:.1} s; the \
         reading viewer got {} of them, longest gap {} ms; the stalled one skipped; \
         frames_skipped {}; RSS {rss_before} KiB before, at most {rss_max} KiB; /stats \
         answered {answered} times and the viewer got {during} frames as the input flooded in",
        written as f64 / secs,
        (written * sent[0].len()) as f64 / secs / 1e6,
        got.order.len(),
        got.max_gap.as_millis(),
        json_number(&stats, "frames_skipped"),
    );
    assert_eq!(got.corrupt, 0);
    assert!(got.order.len() > 10, "the viewer got {} frames", got.order.len());
    assert_eq!(counters(&stats), [written as u64, 0, 0, 0], "{stats}");
    assert!(json_number(&stats, "frames_skipped") > 0.0, "{stats}");
    assert!(rss_max < rss_before + 4096, "RSS grew from {rss_before} to {rss_max} KiB");
    drop(stalled);
}

#[test]
fn stdin_closing_mid_frame_ends_the_server_cleanly() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let sent = Arc::new(frames(3));
    let viewer = watch(Viewer::open(&server, "/video.mjpg"), &sent);
    produce(&mut server, &sent[..2], Duration::from_millis(20));
    server.stdin().write_all(&sent[2][..sent[2].len() / 2]).unwrap();
    let log = finish(&mut server);
    let got = viewer.join().unwrap();
    let done = log.lines().find(|l| l.starts_with("done: ")).unwrap_or_default().to_owned();
    eprintln!("stdin closed mid-frame: frames out {:?}; {done}", got.order);
    assert!(
        log.contains("warning: the input ended in the middle of a frame; it was dropped"),
        "{log}"
    );
    assert!(done.contains("frames in 2,") && done.contains("broken frames 1,"), "{log}");
    assert_eq!(got.order, [0, 1]);
    assert_eq!(got.corrupt, 0);
}
