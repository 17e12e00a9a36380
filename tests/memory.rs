//! What viewers cost the server in memory, whatever they do: the frames
//! they hold stay within `--max-held-bytes`.

mod common;

use common::{json_number, Server, Viewer};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A minimal JPEG of about `len` bytes whose entropy data carries `n`, so
/// that every frame is distinct.
fn big_frame(n: u64, len: usize) -> Vec<u8> {
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00];
    jpeg.extend(n.to_be_bytes().map(|b| b.min(0xFE)));
    jpeg.extend((0..len).map(|i| (i * 7 + 13) as u8 % 0xFE));
    jpeg.extend([0xFF, 0xD9]);
    jpeg
}

/// A viewer with a 4 KiB receive buffer that reads 8 KiB every 4 s: it
/// always holds a frame partway, and never finishes one.
fn trickler(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(b"GET /video.mjpg HTTP/1.1\r\n\r\n").unwrap();
    stream.set_nonblocking(true).unwrap();
    stream
}

fn vm_rss_kib(server: &Server) -> u64 {
    server.rss_kib()
}

#[test]
fn trickling_viewers_of_large_frames_stay_within_the_budget_and_spare_a_normal_viewer() {
    const FRAME: usize = 1_000_000;
    const FPS: u64 = 10;
    const TRICKLERS: usize = 200;
    let mut server = Server::start(&["--stats", "60"]);
    let mut stdin = server.child.stdin.take().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let producer = {
        let (done, published) = (Arc::clone(&done), Arc::clone(&published));
        thread::spawn(move || {
            let start = Instant::now();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                if stdin.write_all(&big_frame(n, FRAME)).is_err() {
                    return;
                }
                n += 1;
                published.store(n, Ordering::Relaxed);
                let due = start + Duration::from_millis(1000 / FPS) * n as u32;
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        })
    };
    common::wait_until("the first frame", || published.load(Ordering::Relaxed) > 2);
    let idle = vm_rss_kib(&server);

    // The normal viewer counts the frames it gets while the others trickle.
    let mut normal = Viewer::open(&server, "/video.mjpg");
    let counted = Arc::new(AtomicU64::new(0));
    let reader = {
        let (done, counted) = (Arc::clone(&done), Arc::clone(&counted));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if normal.try_next_frame().is_none() {
                    return;
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut tricklers = Vec::new();
    let mut peak = idle;
    let start_count = (counted.load(Ordering::Relaxed), published.load(Ordering::Relaxed));
    let mut chunk = vec![0; 8192];
    // Joining 0.1 s apart, then held: 30 s in all, the tricklers reading
    // every 4 s, in turns.
    for step in 0..300 {
        if step < TRICKLERS {
            tricklers.push(trickler(addr));
        }
        for (i, t) in tricklers.iter_mut().enumerate() {
            if (step + i) % 40 == 0 {
                match t.read(&mut chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {}
                }
            }
        }
        peak = peak.max(vm_rss_kib(&server));
        thread::sleep(Duration::from_millis(100));
    }
    let got = counted.load(Ordering::Relaxed) - start_count.0;
    let sent = published.load(Ordering::Relaxed) - start_count.1;
    let stats = server.stats();
    done.store(true, Ordering::Relaxed);
    drop(tricklers);
    producer.join().unwrap();
    let _ = server.child.kill();
    reader.join().unwrap();

    let grown_mib = (peak - idle) as f64 / 1024.0;
    eprintln!("RSS idle {idle} KiB, peak {peak} KiB; normal viewer {got} of {sent}; {stats}");
    assert!(grown_mib <= 64.0, "RSS grew {grown_mib:.1} MiB over idle");
    assert!(got * 10 >= sent * 9, "the normal viewer got {got} of {sent} frames");
    let evicted = json_number(&stats, "clients_evicted");
    let timed_out = json_number(&stats, "clients_timed_out");
    assert!(evicted + timed_out > 0.0, "no trickler was closed: {stats}");
    assert!(json_number(&stats, "held_frame_bytes") <= f64::from(32 << 20));
}
