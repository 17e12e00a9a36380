//! Glass-to-glass latency end to end, with no camera: a virtual screen
//! (Xvfb) shows the `/latency` page full screen in Chromium, ffmpeg grabs
//! that screen (`x11grab`) as the server's camera through `--exec`, and
//! both the page (reading the stream it shows) and `mjpeg-probe glass`
//! read the page's clock back out of the frames. A pass-through tee
//! (`mjpeg-probe tee`) in front of the server logs when each frame's last
//! byte entered the server's pipe, so the probe also gives the server's
//! own share of each frame's latency. See docs/LATENCY.md.

mod common;

use common::{run, Server, STEP};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The screen: the page lays the clock out to fit it.
const SCREEN: (u32, u32) = (640, 480);
const FPS: u32 = 30;
/// How long the probe reads, and what it must see in that time.
const SECONDS: u32 = 8;
const MIN_READINGS: f64 = 100.0;

/// A virtual X screen, ended (by its PID) when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        // -displayfd: Xvfb takes a free display number and writes it here,
        // once it accepts connections.
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset", "-screen", "0"])
            .arg(format!("{}x{}x24", SCREEN.0, SCREEN.1))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let number = rx.recv_timeout(STEP).unwrap_or_default();
        let number = number.trim();
        if number.parse::<u32>().is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Xvfb gave no display number: {number:?}");
        }
        Xvfb { child, display: format!(":{number}") }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("glass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The probe, built beside the server binary (same target directory and
/// profile) if it is not there or older than its sources.
fn probe_binary() -> PathBuf {
    let server = Path::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"));
    let profile_dir = server.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", "mjpeg-probe", "--bin", "mjpeg-probe", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    let out = run(&mut cargo, Duration::from_secs(600));
    assert!(out.status.success(), "building mjpeg-probe failed:\n{}", text(&out.stderr));
    let probe = profile_dir.join("mjpeg-probe");
    assert!(probe.exists(), "no {}", probe.display());
    probe
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The object after `"name":{` in compact JSON, up to its closing brace
/// (the objects the script prints hold no nested ones).
fn section<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":{{");
    let start = json.find(&key).unwrap_or_else(|| panic!("no {name} in {json}")) + key.len();
    let end = json[start..].find('}').unwrap() + start;
    &json[start..end]
}

/// A number in a compact JSON object; `None` for null or a missing key.
fn number(object: &str, key: &str) -> Option<f64> {
    let key = format!("\"{key}\":");
    let rest = &object[object.find(&key)? + key.len()..];
    rest[..rest.find([',', '}']).unwrap_or(rest.len())].parse().ok()
}

#[test]
#[ignore = "needs Xvfb, Chromium and ffmpeg: run with --include-ignored, as .ci/run does"]
fn the_page_and_the_probe_read_the_screen_clock_through_the_server() {
    for program in ["Xvfb", "chromium", "ffmpeg", "python3"] {
        common::require(program);
    }
    let started = Instant::now();
    let probe = probe_binary();
    let dir = TempDir::new();
    let tee_log = dir.0.join("tee.log");
    let xvfb = Xvfb::start();
    let camera = format!(
        "ffmpeg -nostdin -loglevel error -f x11grab -framerate {FPS} \
         -video_size {}x{} -draw_mouse 0 -i {} -fps_mode vfr -c:v mjpeg -q:v 5 -threads 1 \
         -flush_packets 1 -f mjpeg - | '{}' tee '{}'",
        SCREEN.0,
        SCREEN.1,
        xvfb.display,
        probe.display(),
        tee_log.display()
    );
    let mut server = Server::start_configured(&["--exec", &camera], |command| {
        command.stdin(Stdio::null());
    });
    let base = format!("http://127.0.0.1:{}", server.port);
    let script = format!("{}/tests/clients/glass_page.py", env!("CARGO_MANIFEST_DIR"));
    let out = run(
        Command::new("python3")
            .arg(&script)
            .arg(format!("{base}/latency"))
            .arg("--")
            .arg(&probe)
            .args(["glass", &format!("{base}/video.mjpg"), "--json", "--tee"])
            .arg(&tee_log)
            .args(["--seconds", &SECONDS.to_string()])
            .env("DISPLAY", &xvfb.display)
            .env("GLASS_SCREEN", format!("{}x{}", SCREEN.0, SCREEN.1)),
        Duration::from_secs(90),
    );
    // Stop the server as a person would: it stops the camera's group.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    server.wait_keeping_stdin();
    drop(xvfb);
    let report = text(&out.stdout);
    let log = server.stderr.lock().unwrap().clone();
    let context = format!("{report}\nstderr:\n{}\nserver:\n{log}", text(&out.stderr));
    assert!(out.status.success(), "glass_page.py failed: {context}");
    assert!(report.contains("\"errors\":[]"), "the page logged errors: {context}");
    let probe = section(&report, "probe");
    let page = section(&report, "page");
    let get = |object: &str, key: &str| {
        number(object, key).unwrap_or_else(|| panic!("no {key}: {context}"))
    };

    // Both read the clock in most frames: 8 s at 30 fps is 240 frames.
    assert!(get(probe, "count") >= MIN_READINGS, "probe: too few readings: {context}");
    assert!(get(page, "count") >= MIN_READINGS, "page: too few readings: {context}");
    // Every reading is a latency, not a misread: the clock was drawn before
    // the frame arrived, and no frame took a second.
    for (who, object) in [("probe", probe), ("page", page)] {
        let (min, max) = (get(object, "min_ms"), get(object, "max_ms"));
        assert!(min >= 1.0 && max <= 1000.0, "{who}: latency {min}..{max} ms: {context}");
    }
    // The server's own share, from the tee's log of each frame's last byte
    // entering its pipe to the probe's read of that frame. A server that
    // holds a frame until the next one comes (as Flask's pattern server
    // does, 34 ms at 30 fps) passes each on a frame interval late; this one
    // passes it on at once. Half an interval tells the two apart whatever
    // the machine's load; the figure itself (about 0.1 ms) is
    // bench/glass.sh's, in docs/LATENCY.md.
    assert!(get(probe, "paired") >= MIN_READINGS, "too few frames paired with the tee: {context}");
    let server_p50 = get(probe, "server_p50_ms");
    let half_interval = 1000.0 / f64::from(FPS) / 2.0;
    assert!(
        server_p50 < half_interval,
        "the server's share: median {server_p50} ms, half a frame interval or more: {context}"
    );
    eprintln!("glass-to-glass in {:?}: {report}", started.elapsed());
}
