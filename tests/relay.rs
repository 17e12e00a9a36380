//! The relay input: this server reading another server's stream, in every
//! framing real servers send, with one upstream connection however many
//! watch, through the upstream's failures.

mod common;

use common::Killed;

use common::{frames, json_number, produce, Server, Viewer, STEP};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// JPEG files 000.jpg… of distinct frames in a fresh directory.
fn frame_dir(name: &str, sent: &[Vec<u8>]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rms-relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, jpeg) in sent.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}.jpg")), jpeg).unwrap();
    }
    dir
}

/// tests/relay/upstream.py serving `dir` in `mode`; returns it and its port.
fn upstream(dir: &Path, mode: &str, extra: &[&str]) -> (Killed, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/relay/upstream.py");
    let mut child = Command::new("python3")
        .args([script, "--dir", dir.to_str().unwrap(), "--mode", mode, "--fps", "30"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("no port from upstream.py: {line:?}"));
    (Killed(child), port)
}

fn relay(port: u16, args: &[&str]) -> Server {
    let url = format!("http://127.0.0.1:{port}/video.mjpg");
    let mut all = vec!["--input", url.as_str()];
    all.extend_from_slice(args);
    Server::start_configured(&all, |c| {
        c.stdin(Stdio::null());
    })
}

/// The source object of `/stats`, as text.
fn source(server: &Server) -> String {
    let stats = server.stats();
    let at = stats.find("\"source\":").expect("a source in /stats");
    stats[at..].split('}').next().unwrap().to_string()
}

#[test]
fn every_framing_real_servers_send_is_relayed_frame_for_frame() {
    let sent = frames(6);
    let dir = frame_dir("framings", &sent);
    let modes = ["length", "before", "chunked", "original", "quoted", "advance"];
    // Heads that are not plain ASCII on one line each, and stream types
    // other than x-mixed-replace, with no boundary to go by.
    let heads = ["latin1", "folded", "mixed", "motion"];
    for mode in modes.into_iter().chain(heads) {
        let (_upstream, port) = upstream(&dir, mode, &[]);
        let server = relay(port, &[]);
        let mut viewer = Viewer::open(&server, "/video.mjpg");
        let mut seen = HashSet::new();
        // The "starting" placeholder may come first, before the upstream's
        // first frame; then two rounds of its six, each byte-identical.
        let mut jpeg = viewer.next_frame();
        for _ in 0..2 {
            if !sent.contains(&jpeg) {
                jpeg = viewer.next_frame();
            }
        }
        for _ in 0..12 {
            let index = sent.iter().position(|f| *f == jpeg);
            assert!(index.is_some(), "{mode}: a frame arrived altered ({} bytes)", jpeg.len());
            seen.extend(index);
            jpeg = viewer.next_frame();
        }
        assert!(seen.len() >= 5, "{mode}: only frames {seen:?} of 6 came through");
        assert!(source(&server).contains("\"state\":\"online\""), "{mode}: {}", source(&server));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_relay_of_this_server_opens_one_upstream_connection_for_every_viewer() {
    let mut origin = Server::start(&[]);
    let sent = frames(30);
    // On demand: fifty viewers arriving together must not race to open
    // fifty upstream connections.
    let server = relay(origin.port, &["--on-demand", "--linger", "2"]);
    let viewers: Vec<_> = (0..50)
        .map(|_| {
            let port = server.port;
            thread::spawn(move || Viewer::connect(port, "/video.mjpg"))
        })
        .collect();
    let mut viewers: Vec<Viewer> = viewers.into_iter().map(|t| t.join().unwrap()).collect();
    common::wait_until("the relay is connected", || {
        json_number(&origin.stats(), "streaming") == 1.0
    });
    let producer = thread::spawn({
        let sent = sent.clone();
        move || {
            produce(&mut origin, &sent, Duration::from_millis(33));
            origin
        }
    });
    for viewer in &mut viewers {
        // The starting placeholder may come first; then the origin's frames.
        let mut jpeg = viewer.next_frame();
        while !sent.contains(&jpeg) {
            jpeg = viewer.next_frame();
        }
    }
    let origin = producer.join().unwrap();
    let stats = origin.stats();
    assert_eq!(json_number(&stats, "streaming"), 1.0, "{stats}");
}

#[test]
fn basic_auth_reaches_the_upstream_and_refusals_are_named() {
    let sent = frames(3);
    let dir = frame_dir("auth", &sent);
    let (_upstream, port) = upstream(&dir, "length", &["--auth", "Basic cGlsb3Q6cmMtY2Fy"]);
    let url = format!("http://pilot:rc-car@127.0.0.1:{port}/video.mjpg");
    let server = Server::start_configured(&["--input", &url], |c| {
        c.stdin(Stdio::null());
    });
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let mut jpeg = viewer.next_frame();
    while !sent.contains(&jpeg) {
        jpeg = viewer.next_frame();
    }
    // Without the credentials: 401, said once a try, and viewers get notices.
    let refused = relay(port, &[]);
    common::wait_until("the relay says why it has no frames", || {
        source(&refused).contains("status 401")
    });
    // The snapshot is the notice, once one has been drawn.
    common::wait_until("a notice as the snapshot", || {
        let (status, head, _) = refused.get_path("/snapshot.jpg");
        status == 200 && head.contains("X-Source-State: offline")
    });
    // The log has its own writer thread: the line may follow /stats.
    common::wait_until("the log names the upstream's answer", || {
        refused.stderr.lock().unwrap().contains("relay: the upstream's answer: status 401, not 200")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upstream_that_is_not_a_stream_is_named_and_retried() {
    let dir = frame_dir("html", &frames(1));
    let (_upstream, port) = upstream(&dir, "html", &[]);
    let server = relay(port, &[]);
    common::wait_until("the relay has tried twice", || {
        let s = source(&server);
        s.contains("is neither multipart/* nor video/x-motion-jpeg") && s.contains("\"restarts\":1")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn viewers_stay_through_the_upstream_going_away_and_coming_back() {
    let sent = frames(6);
    let dir = frame_dir("restart", &sent);
    let (first, port) = upstream(&dir, "length", &[]);
    let server = relay(port, &["--source-timeout", "2"]);
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let real = |viewer: &mut Viewer| loop {
        if sent.contains(&viewer.next_frame()) {
            return;
        }
    };
    real(&mut viewer);
    drop(first);
    // Notices while it is gone, each within the viewer's read timeout.
    let deadline = Instant::now() + STEP;
    let mut notices = 0;
    while notices < 2 {
        assert!(Instant::now() < deadline, "no notices while the upstream was gone");
        if !sent.contains(&viewer.next_frame()) {
            notices += 1;
        }
    }
    let port_text = port.to_string();
    let (_second, _) = upstream(&dir, "length", &["--port", &port_text]);
    real(&mut viewer);
    assert!(json_number(&server.stats(), "clients") >= 1.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// This server on `port` with its test pattern: an upstream that can be
/// stopped, and started again on the same port.
fn pattern_upstream(port: u16) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
        .args(["--bind", "127.0.0.1", "-p", &port.to_string(), "--pattern", "--fps", "10"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let upstream = Killed(child);
    common::wait_until("the upstream listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    upstream
}

#[test]
fn after_a_long_outage_the_relay_is_back_within_moments_of_its_upstream() {
    // About 40 s without its upstream: a camera's backoff would have been
    // at its 30 s for the last 25 of them. (The policy's own test covers a
    // thousand tries, some 17 minutes.)
    const TRIES: f64 = 40.0;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let upstream = pattern_upstream(port);
    let server = relay(port, &["--source-timeout", "2"]);
    let online = |server: &Server| source(server).contains("\"state\":\"online\"");
    common::wait_until("the relay streams", || online(&server));
    drop(upstream);
    let gone = Instant::now();
    let deadline = gone + Duration::from_secs(120);
    while json_number(&server.stats(), "restarts") < TRIES {
        assert!(Instant::now() < deadline, "the relay stopped trying: {}", source(&server));
        thread::sleep(Duration::from_millis(20));
    }
    let outage = gone.elapsed();
    let _upstream = pattern_upstream(port);
    let back = Instant::now();
    common::wait_until("the relay streams again", || online(&server));
    eprintln!(
        "after {outage:.1?} without its upstream ({TRIES} tries), the relay streamed again {:?} \
         after the upstream listened",
        back.elapsed()
    );
    // One line for the run of refused connects, one for the return.
    let log = server.stderr.lock().unwrap().clone();
    assert_eq!(log.matches("relay: cannot connect to").count(), 1, "{log}");
    common::wait_until("the relay says it streams again", || {
        server.stderr.lock().unwrap().contains("relay: streaming from http://127.0.0.1:")
    });
}

#[test]
fn an_upstream_that_answers_nothing_is_retried_and_said_once() {
    // Connections complete in its backlog; nothing ever answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let server = relay(port, &["--source-timeout", "1"]);
    common::wait_until("the relay has given up on three connections", || {
        json_number(&server.stats(), "restarts") >= 3.0
    });
    common::wait_until("the relay says why", || {
        server.stderr.lock().unwrap().contains("no frame within 1 s of the start; disconnected")
    });
    let log = server.stderr.lock().unwrap().clone();
    assert_eq!(log.matches("; disconnected").count(), 1, "{log}");
    drop(silent);
}

#[test]
#[ignore = "needs Flask (pip): run with --include-ignored, as .ci/run does"]
fn the_flask_pattern_that_tutorials_teach_is_relayed() {
    let ok = Command::new("python3").args(["-c", "import flask"]).status().unwrap().success();
    assert!(ok, "python3 cannot import flask; .ci/run installs it");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers/flask_server.py");
    let mut flask = Killed(
        Command::new("python3")
            .args([script, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sent = frames(30);
    let mut feeder = flask.0.stdin.take().unwrap();
    let cycle = sent.clone();
    let feeding = thread::spawn(move || {
        use std::io::Write;
        // Two seconds of frames at 30 fps, then the pipe closes.
        for jpeg in cycle.iter().cycle().take(60) {
            if feeder.write_all(jpeg).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(33));
        }
    });
    let server = relay(port, &[]);
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let mut real = 0;
    let deadline = Instant::now() + STEP;
    while real < 10 {
        assert!(Instant::now() < deadline, "only {real} of Flask's frames came through");
        if sent.contains(&viewer.next_frame()) {
            real += 1;
        }
    }
    feeding.join().unwrap();
}
