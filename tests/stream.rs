//! The stream end to end: frames written into stdin come out of the socket.

mod common;

use common::{frames, json_number, produce, Server, Viewer, STEP};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn every_frame_arrives_byte_identical_in_order_to_two_viewers() {
    let mut server = Server::start(&["--stats", "1"]);
    let mut a = Viewer::open(&server, "/video.mjpg");
    let mut b = Viewer::open(&server, "/stream?cachebuster=1");
    assert!(a.head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(a
        .head
        .contains("\r\nContent-Type: multipart/x-mixed-replace; boundary=boundarydonotcross\r\n"));
    assert!(a.head.contains("\r\nCache-Control: no-cache, no-store, must-revalidate\r\n"));
    let sent = frames(60);
    let reader_a = thread::spawn(move || (0..60).map(|_| a.next_frame()).collect::<Vec<_>>());
    let reader_b = thread::spawn(move || (0..60).map(|_| b.next_frame()).collect::<Vec<_>>());
    produce(&mut server, &sent, Duration::from_millis(15));
    assert!(reader_a.join().unwrap() == sent, "viewer A got other frames than were sent");
    assert!(reader_b.join().unwrap() == sent, "viewer B got other frames than were sent");
    let status = server.wait();
    assert!(status.success(), "exit status {status}");
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("done: "), "{log}");
    assert!(log.contains("frames in 60,"), "{log}");
    assert!(log.contains("Value     Percentile TotalCount"), "{log}");
}

#[test]
fn a_new_viewer_gets_the_latest_frame_at_once() {
    let mut server = Server::start(&[]);
    let sent = frames(3);
    for frame in &sent {
        server.stdin().write_all(frame).unwrap();
    }
    server.stdin().flush().unwrap();
    // The server has the frames once a snapshot is the last of them.
    let deadline = Instant::now() + STEP;
    while server.get_path("/snapshot.jpg").2 != sent[2] {
        assert!(Instant::now() < deadline, "the last frame never became the snapshot");
        thread::sleep(Duration::from_millis(20));
    }
    let mut viewer = Viewer::open(&server, "/?action=stream");
    assert_eq!(viewer.next_frame(), sent[2]);
}

#[test]
fn snapshot_is_503_before_the_first_frame_then_the_latest_jpeg() {
    let mut server = Server::start(&[]);
    let (status, head, _) = server.get_path("/snapshot.jpg");
    assert_eq!(status, 503);
    assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
    let sent = frames(2);
    server.stdin().write_all(&sent.concat()).unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        let (status, head, body) = server.get_path("/?action=snapshot");
        if status == 200 && body == sent[1] {
            assert!(head.contains("\r\nContent-Type: image/jpeg\r\n"));
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", sent[1].len())));
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot of the last frame");
        thread::sleep(Duration::from_millis(20));
    }
    let (status, head, body) = server.get("HEAD /snapshot HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", sent[1].len())));
    assert!(body.is_empty());
}

#[test]
fn a_viewer_that_never_reads_does_not_slow_one_that_does() {
    const FRAMES: usize = 270; // 3 s at 90 fps
    let mut server = Server::start(&[]);
    let stalled: Vec<_> = (0..5).map(|_| server.stalled_viewer("/video.mjpg")).collect();
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let sent = frames(30);
    let sent_cycle: Vec<Vec<u8>> = sent.iter().cycle().take(FRAMES).cloned().collect();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(frame) = viewer.try_next_frame() {
            got.push(frame);
        }
        got
    });
    produce(&mut server, &sent_cycle[..FRAMES / 3], Duration::from_micros(11_111));
    let rss_early = server.rss_kib();
    produce(&mut server, &sent_cycle[FRAMES / 3..], Duration::from_micros(11_111));
    let rss_late = server.rss_kib();
    let stats = server.stats();
    assert!(server.wait().success());
    let got = reader.join().unwrap();
    assert!(
        got.len() >= FRAMES * 9 / 10,
        "the reading viewer got {} of {FRAMES} frames",
        got.len()
    );
    assert!(got.iter().all(|f| sent.contains(f)), "a frame arrived altered");
    assert!(
        json_number(&stats, "frames_skipped") > 0.0,
        "the stalled viewers skipped nothing: {stats}"
    );
    // Stalled viewers hold one frame each at most: memory stays flat.
    assert!(rss_late < rss_early + 2048, "RSS grew from {rss_early} KiB to {rss_late} KiB");
    drop(stalled);
}

#[test]
fn garbage_and_broken_frames_are_skipped_and_counted() {
    let mut server = Server::start(&[]);
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let sent = frames(2);
    let garbage = b"raspivid header \xFF\x00\xFF\xD9 junk";
    let broken = &sent[0][..sent[0].len() / 2];
    let input = [&garbage[..], broken, &sent[0], garbage, &sent[1]].concat();
    server.stdin().write_all(&input).unwrap();
    assert_eq!(viewer.next_frame(), sent[0]);
    assert_eq!(viewer.next_frame(), sent[1]);
    let stats = server.stats();
    assert_eq!(json_number(&stats, "frames_in"), 2.0);
    assert_eq!(json_number(&stats, "broken_frames"), 1.0);
    assert_eq!(json_number(&stats, "garbage_bytes"), 2.0 * garbage.len() as f64);
}

#[test]
fn a_frame_over_the_cap_is_dropped_with_a_warning() {
    let mut server = Server::start(&["--max-frame-bytes", "30000"]);
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let small = frames(1).remove(0);
    assert!(small.len() < 30000);
    let mut big = vec![0xFF, 0xD8, 0xFF, 0xFE, 0xFF, 0xFF];
    big.extend(std::iter::repeat_n(0x41, 0xFFFD));
    big.extend_from_slice(&small[2..]);
    server.stdin().write_all(&[&big[..], &small].concat()).unwrap();
    assert_eq!(viewer.next_frame(), small);
    assert_eq!(json_number(&server.stats(), "oversize_frames"), 1.0);
}

#[test]
fn a_busy_port_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
        .args(["-p", &port, "--bind", "127.0.0.1"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: cannot listen on 127.0.0.1:{port}: ")), "{err}");
    assert!(err.contains("-p"), "{err}");
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
        .args(["--port", "eighty"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_capped_viewer_gets_the_last_frame_before_a_pause_and_stays_connected() {
    let mut server = Server::start(&["--client-timeout", "2"]);
    let sent = frames(2);
    let mut viewer = Viewer::open(&server, "/video.mjpg?fps=1");
    produce(&mut server, &sent[..1], Duration::ZERO);
    assert_eq!(viewer.next_frame(), sent[0]);
    // The second frame comes within the viewer's second; then a pause
    // longer than --client-timeout. The capped viewer declines the frame at
    // first, and must get it when its second is up, not at the next frame.
    produce(&mut server, &sent[1..], Duration::ZERO);
    assert_eq!(viewer.next_frame(), sent[1]);
    let stats = server.stats();
    assert_eq!(json_number(&stats, "clients_timed_out"), 0.0, "{stats}");
    // Well past the client timeout, the capped viewer is still served.
    common::wait_until("three seconds of pause", || json_number(&server.stats(), "uptime_s") > 3.5);
    let stats = server.stats();
    assert_eq!(json_number(&stats, "clients_timed_out"), 0.0, "{stats}");
    assert_eq!(json_number(&stats, "clients"), 2.0, "{stats}");
}

/// The server's stamp on a part (`X-Timestamp`, taken as it read the frame).
fn stamp(headers: &str) -> f64 {
    headers.lines().find_map(|l| l.strip_prefix("X-Timestamp: ")).unwrap().parse().unwrap()
}

#[test]
fn fps_caps_give_their_rate_from_a_faster_source() {
    let mut server = Server::start(&[]);
    let sent = frames(30);
    let cycle: Vec<Vec<u8>> = sent.iter().cycle().take(90).cloned().collect();
    // Each viewer notes the server's stamp on each part it gets; the one
    // without a cap gets every frame, the source as the server read it.
    let readers: Vec<_> = ["", "?fps=20", "?fps=10"]
        .into_iter()
        .map(|query| {
            let mut viewer = Viewer::open(&server, &format!("/video.mjpg{query}"));
            thread::spawn(move || {
                let mut stamps = Vec::new();
                while let Some((headers, _)) = viewer.try_next_part() {
                    stamps.push(stamp(&headers));
                }
                stamps
            })
        })
        .collect();
    // Three seconds at 30 fps.
    produce(&mut server, &cycle, Duration::from_micros(33_333));
    assert!(server.wait().success());
    let mut stamps: Vec<Vec<f64>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let source = stamps.remove(0);
    // Counted on the server's clock, so that a late producer or viewer
    // thread on a loaded machine changes what is counted, not the verdict.
    for (cap, got) in [20.0, 10.0].into_iter().zip(stamps) {
        let (first, last) = (got[0], got[got.len() - 1]);
        let interval = 1.0 / cap;
        let allowed = (last - first) / interval;
        // Never faster than the cap: one part an interval from the first,
        // and a frame a quarter of an interval early may be taken.
        let n = got.len() as f64;
        assert!(n - 1.0 <= allowed + 2.0, "?fps={cap}: {n} parts in {:.2} s", last - first);
        // As fast as the source allows: a part for (nearly) every interval
        // in which the server read a frame. A cap taken as the least gap
        // between parts rather than a schedule gives every other frame of a
        // 30 fps source for a cap of 20: 3 in 4 intervals.
        let mut with_a_frame: Vec<i64> = source
            .iter()
            .filter(|&&s| (first..=last).contains(&s))
            .map(|&s| ((s - first) / interval).floor() as i64)
            .collect();
        with_a_frame.dedup();
        let slots = with_a_frame.len() as f64;
        eprintln!(
            "?fps={cap} of 30 fps: {n} parts in {:.2} s of the server's clock, {slots} intervals \
             with a frame",
            last - first
        );
        assert!(n >= 0.9 * slots - 1.0, "?fps={cap}: {n} parts for {slots} intervals with a frame");
    }
}

#[test]
fn a_fractional_fps_cap_spaces_the_parts_by_its_interval() {
    let mut server = Server::start(&[]);
    let sent = frames(10);
    // The viewer joins once there is a frame, so that it is given one at
    // once and its schedule starts there, not at a frame that comes late.
    produce(&mut server, &sent[..1], Duration::ZERO);
    common::wait_until("the first frame is the snapshot", || {
        server.get_path("/snapshot.jpg").2 == sent[0]
    });
    let mut viewer = Viewer::open(&server, "/video.mjpg?fps=0.5");
    let reader = thread::spawn(move || {
        let mut stamps = Vec::new();
        while let Some((headers, _)) = viewer.try_next_part() {
            let stamp = headers.lines().find_map(|l| l.strip_prefix("X-Timestamp: ")).unwrap();
            stamps.push(stamp.parse::<f64>().unwrap());
        }
        stamps
    });
    let cycle: Vec<Vec<u8>> = sent.iter().cycle().take(50).cloned().collect();
    // Five seconds at 10 fps.
    produce(&mut server, &cycle, Duration::from_millis(100));
    assert!(server.wait().success());
    // The server stamps each frame as it reads it, so the gaps are its own,
    // whatever this test's threads were doing. A frame is due every 2 s and
    // may be taken up to a quarter of that early, never sooner.
    let stamps = reader.join().unwrap();
    assert!(stamps.len() >= 3, "?fps=0.5 over 5 s gave {} parts: {stamps:?}", stamps.len());
    for gap in stamps.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= 1.5, "parts {gap:.3} s apart under ?fps=0.5: {stamps:?}");
    }
}

#[test]
fn a_bad_fps_is_400_naming_the_parameter() {
    let server = Server::start(&[]);
    for value in ["0", "-1", "abc", "NaN", "inf", ""] {
        let (status, _, body) = server.get_path(&format!("/video.mjpg?fps={value}"));
        assert_eq!(status, 400, "?fps={value}");
        assert_eq!(body, b"400 Bad Request: invalid value for fps\n", "?fps={value}");
    }
}

/// Splits a stream as clients that hard-code mjpg-streamer's delimiter do
/// (its input_http plugin, and scripts copied from it): each JPEG is what
/// lies between the blank line after a `--boundarydonotcross` line and the
/// CRLF before the next. Neither the boundary parameter nor Content-Length
/// is read.
fn jpegs_between_delimiters(stream: &mut std::net::TcpStream, count: usize) -> Vec<Vec<u8>> {
    const DELIMITER: &[u8] = b"--boundarydonotcross\r\n";
    let find = |bytes: &[u8], what: &[u8]| bytes.windows(what.len()).position(|w| w == what);
    let mut got = Vec::new();
    let mut jpegs = Vec::new();
    let mut buf = [0; 65536];
    while jpegs.len() < count {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {} JPEGs", jpegs.len());
        got.extend_from_slice(&buf[..n]);
        // A part is whole once the delimiter after it has come.
        while let Some(start) = find(&got, DELIMITER) {
            let after = start + DELIMITER.len();
            let Some(blank) = find(&got[after..], b"\r\n\r\n") else { break };
            let body = after + blank + 4;
            let Some(end) = find(&got[body..], DELIMITER) else { break };
            let jpeg = got[body..body + end].strip_suffix(b"\r\n").expect("CRLF before --");
            jpegs.push(jpeg.to_vec());
            got.drain(..body + end);
        }
    }
    jpegs.truncate(count);
    jpegs
}

#[test]
fn a_client_that_knows_only_boundarydonotcross_reads_whole_jpegs() {
    let mut server = Server::start(&[]);
    let sent = frames(6);
    // The way mjpg-streamer's input_http asks, in both framings.
    let mut streams: Vec<_> = ["/?action=stream", "/?action=stream&advance_headers=1"]
        .into_iter()
        .map(|path| {
            let mut s = server.connect();
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            s
        })
        .collect();
    common::wait_until("both are streaming", || json_number(&server.stats(), "streaming") == 2.0);
    // Each read as it comes, as its own client would: a viewer on this
    // host that left a frame unread would be given the newest instead.
    let got: Vec<_> = std::thread::scope(|scope| {
        let readers: Vec<_> = streams
            .iter_mut()
            .map(|s| scope.spawn(move || jpegs_between_delimiters(s, 5)))
            .collect();
        produce(&mut server, &sent, Duration::from_millis(30));
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for jpegs in got {
        assert!(jpegs == sent[..5], "a JPEG arrived cut or altered");
    }
}

#[test]
fn a_stream_asked_for_then_half_closed_is_served_until_the_client_goes() {
    // As `nc -N`, ncat and some proxies send it: the request, then
    // shutdown(SHUT_WR). The server used to close at that end, unwritten.
    let server = Server::start(&["--pattern"]);
    let mut s = server.connect();
    s.write_all(b"GET /video.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let jpegs = jpegs_between_delimiters(&mut s, 3);
    assert!(jpegs.iter().all(|j| j.starts_with(&[0xFF, 0xD8]) && j.ends_with(&[0xFF, 0xD9])));
    // Gone for good: the next frame written to it is answered with a reset.
    drop(s);
    common::wait_until("the viewer is gone", || json_number(&server.stats(), "streaming") == 0.0);
}
