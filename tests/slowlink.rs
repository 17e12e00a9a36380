//! A viewer behind a slow link: the server's egress shaped to 8 Mbit/s with
//! `tc tbf`, while the camera sends 90 frames a second of about 18 KB
//! (13 Mbit/s). `SLOWLINK_SERVER_ARGS` adds server flags, e.g.
//! `--max-queued-bytes 100000000` to see the test fail without the limit.
//! The viewer's latency must stay bounded instead of growing with a queue,
//! and every frame must arrive whole.
//!
//! The server runs in one network namespace and the viewer, a thread that
//! enters another with `setns`, reads from it over a veth pair between them;
//! nothing outside the two namespaces is touched. Needs root; skipped
//! otherwise, or where `ip netns add` fails, except under CI as root.

mod common;

use common::{frames, STEP};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const RATE: &str = "8mbit";
const FPS: u32 = 90;
/// Seconds whose frames are not measured, then seconds measured.
const WARMUP: u64 = 1;
const MEASURED: u64 = 6;
const SERVER_IP: &str = "10.213.0.1";
const PORT: u16 = 8554;
const BOUNDARY: &str = "--boundarydonotcross";
/// The COM segment put right after each frame's SOI: this tag, the frame's
/// index and its send time in nanoseconds since the run began.
const TAG: &[u8; 8] = b"slowlink";

/// Two network namespaces, deleted (with the veth pair between them) when
/// this is dropped, whether the test passed or panicked.
struct Namespaces {
    server: String,
    viewer: String,
}

impl Namespaces {
    /// The namespaces and the shaped link, or why they cannot be had.
    fn create() -> Result<Namespaces, String> {
        let pid = std::process::id();
        let server = format!("rms{pid}s");
        let viewer = format!("rms{pid}v");
        ip(&["netns", "add", &server])?;
        let ns = Namespaces { server, viewer };
        ip(&["netns", "add", &ns.viewer])?;
        let (a, b) = (format!("rms{pid}a"), format!("rms{pid}b"));
        let s = ns.server.as_str();
        ip(&["-n", s, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns.viewer])?;
        ip(&["-n", s, "addr", "add", &format!("{SERVER_IP}/30"), "dev", &a])?;
        ip(&["-n", s, "link", "set", &a, "up"])?;
        ip(&["-n", &ns.viewer, "addr", "add", "10.213.0.2/30", "dev", &b])?;
        ip(&["-n", &ns.viewer, "link", "set", &b, "up"])?;
        let tbf = ["root", "tbf", "rate", RATE, "burst", "32kbit", "latency", "50ms"];
        run("ip", &[&["netns", "exec", s, "tc", "qdisc", "add", "dev", &a], &tbf[..]].concat())?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.server, &self.viewer] {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces; they need root and iproute2, which .ci/run has.
fn namespaces() -> Namespaces {
    assert!(common::is_root(), "network namespaces need root (ip netns add, tc)");
    common::require("ip");
    common::require("tc");
    Namespaces::create().unwrap_or_else(|e| panic!("network namespaces: {e}"))
}

/// The server inside its namespace, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `base` with the tag of frame `index`, sent `sent_ns` after the start.
fn tagged(base: &[u8], index: u64, sent_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + 28);
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xFE, 0, 26]);
    out.extend_from_slice(TAG);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&sent_ns.to_be_bytes());
    out.extend_from_slice(&base[2..]);
    out
}

/// The index and send time in a frame's tag.
fn read_tag(jpeg: &[u8]) -> Option<(u64, u64)> {
    if jpeg.len() < 28 || jpeg[..6] != [0xFF, 0xD8, 0xFF, 0xFE, 0, 26] || &jpeg[6..14] != TAG {
        return None;
    }
    let n = |at: usize| u64::from_be_bytes(jpeg[at..at + 8].try_into().unwrap());
    Some((n(14), n(22)))
}

/// One received frame: its index, how many frames the camera had written
/// after it by the time it arrived, and how old it was in milliseconds.
struct Arrival {
    index: u64,
    behind: u64,
    latency_ms: f64,
}

/// Reads the stream from inside the viewer's namespace until `until`,
/// checking every frame against what was sent.
fn view(
    netns: String,
    start: Instant,
    until: Instant,
    bases: Vec<Vec<u8>>,
    written: Arc<AtomicU64>,
    connected: mpsc::Sender<()>,
) -> Vec<Arrival> {
    let file = File::open(format!("/run/netns/{netns}")).expect("the viewer's namespace");
    // SAFETY: setns on a valid namespace descriptor; it moves this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    let deadline = Instant::now() + STEP;
    let socket = loop {
        match TcpStream::connect((SERVER_IP, PORT)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot reach the server at {SERVER_IP}:{PORT}: {e}"),
        }
    };
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut writer = socket.try_clone().unwrap();
    write!(writer, "GET /video.mjpg HTTP/1.1\r\nHost: {SERVER_IP}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream's head was cut short");
    }
    connected.send(()).unwrap();
    let mut arrivals = Vec::new();
    let mut last_index = None;
    while Instant::now() < until {
        // The part: a boundary, headers with Content-Length, a blank line,
        // the JPEG, CRLF.
        let mut length = None;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return arrivals,
                Ok(_) => {}
            }
            if line == "\r\n" && length.is_some() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().expect("a Content-Length number"));
            } else if line != "\r\n" && !line.starts_with(BOUNDARY) && !line.contains(':') {
                panic!("corrupt stream: unexpected line {line:?}");
            }
        }
        let mut jpeg = vec![0; length.unwrap()];
        if reader.read_exact(&mut jpeg).is_err() {
            return arrivals;
        }
        let now = start.elapsed();
        let written = written.load(Ordering::SeqCst);
        let (index, sent_ns) = read_tag(&jpeg).expect("corrupt frame: no tag after SOI");
        let base = &bases[(index % bases.len() as u64) as usize];
        assert!(
            jpeg == tagged(base, index, sent_ns),
            "corrupt frame {index}: {} bytes differ from what was sent",
            jpeg.len()
        );
        assert!(last_index.is_none_or(|last| index > last), "frame {index} came out of order");
        last_index = Some(index);
        arrivals.push(Arrival {
            index,
            behind: written.saturating_sub(index + 1),
            latency_ms: (now.as_nanos() as u64).saturating_sub(sent_ns) as f64 / 1e6,
        });
    }
    arrivals
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "needs root for network namespaces: run with --include-ignored, as .ci/run does"]
fn a_viewer_on_a_slow_link_gets_fresh_frames_not_a_growing_queue() {
    let ns = namespaces();
    let mut server = Server(
        Command::new("ip")
            .args(["netns", "exec", &ns.server, env!("CARGO_BIN_EXE_raspivid_mjpeg_server")])
            .args(["-p", &PORT.to_string(), "--bind", SERVER_IP])
            .args(std::env::var("SLOWLINK_SERVER_ARGS").unwrap_or_default().split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts"),
    );
    let bases = frames(u64::from(FPS));
    let start = Instant::now();
    let until = start + STEP + Duration::from_secs(WARMUP + MEASURED);
    let (tx, rx) = mpsc::channel();
    // Frames the camera has written so far.
    let written = Arc::new(AtomicU64::new(0));
    let viewer = {
        let (netns, bases, written) = (ns.viewer.clone(), bases.clone(), Arc::clone(&written));
        thread::spawn(move || view(netns, start, until, bases, written, tx))
    };
    rx.recv_timeout(STEP).expect("the viewer got the stream's head");

    // The camera: frames at a steady rate from now on, for the whole run.
    let begin = start.elapsed();
    let interval = Duration::from_secs(1) / FPS;
    let count = u64::from(FPS) * (WARMUP + MEASURED) + u64::from(FPS) / 2;
    let stdin = server.0.stdin.as_mut().unwrap();
    for index in 0..count {
        let due = start + begin + interval * index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let base = &bases[(index % bases.len() as u64) as usize];
        let frame = tagged(base, index, start.elapsed().as_nanos() as u64);
        stdin.write_all(&frame).expect("the server takes frames");
        written.store(index + 1, Ordering::SeqCst);
    }
    drop(server);
    let arrivals = match viewer.join() {
        Ok(a) => a,
        Err(panic) => std::panic::resume_unwind(panic),
    };

    // Counted in frames, not milliseconds: each second is the camera's (the
    // frames it wrote in it), and a frame's lag is how many the camera had
    // written after it by the time it arrived, the queue ahead of the viewer.
    // A camera thread late on a loaded machine writes fewer frames, and the
    // lag stays what the queue makes it.
    let second = |s: u64| -> Vec<&Arrival> {
        let frames = u64::from(FPS) * s..u64::from(FPS) * (s + 1);
        arrivals.iter().filter(|a| frames.contains(&a.index)).collect()
    };
    let per_second: Vec<Vec<&Arrival>> = (WARMUP..WARMUP + MEASURED).map(second).collect();
    let lags = |v: &[&Arrival]| v.iter().map(|a| a.behind as f64).collect::<Vec<f64>>();
    let summary: Vec<String> = per_second
        .iter()
        .map(|v| {
            if v.is_empty() {
                "0 frames".into()
            } else {
                format!(
                    "{} frames, median {:.0} behind, {:.0} ms",
                    v.len(),
                    median(lags(v)),
                    median(v.iter().map(|a| a.latency_ms).collect())
                )
            }
        })
        .collect();
    eprintln!("slow viewer at {RATE}, each second of the camera's after the warm-up: {summary:?}");
    let measured: Vec<&Arrival> = per_second.concat();
    let fps = measured.len() as f64 / MEASURED as f64;
    assert!(fps >= 5.0, "only {fps:.1} frames a second reached the slow viewer: {summary:?}");
    assert!(per_second.iter().all(|v| !v.is_empty()), "a second without frames: {summary:?}");
    let first = median(lags(&per_second[0]));
    let last = median(lags(&per_second[per_second.len() - 1]));
    // A few frames of slack: the first second's lag is itself a few frames.
    assert!(
        last <= 2.0 * first + 5.0,
        "the lag grew: median {first:.0} frames behind in the first second, {last:.0} in the \
         last: {summary:?}"
    );
    let overall = median(lags(&measured));
    // A frame takes about 19 ms on the link and the shaper queues up to
    // 50 ms: about 6 frames at 90 fps. A kernel send buffer left to grow
    // holds half a second and more, 45 frames; 18 is 200 ms of them.
    assert!(overall < 18.0, "median lag {overall:.0} frames: {summary:?}");
}
