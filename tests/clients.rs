//! The real clients people point at a camera, against the real binary:
//! FFmpeg, OpenCV, VLC, curl and Chromium. Each test that needs a program
//! is `#[ignore]`d with the reason, so a plain `cargo test` lists it as
//! ignored; `--include-ignored` (as .ci/run runs them) makes it run, and a
//! missing program is then a failure (`common::require`), never a skip.
//! They run one at a time: each client is heavy for a two-core machine.

mod common;

use common::{frames, run, split_response, Server, STEP};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest any client run may take before it is killed and the test fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command`, failing the test unless it succeeds; returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let out = run(command, CLIENT_LIMIT);
    assert!(
        out.status.success(),
        "{command:?} failed with {}:\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A camera: writes distinct frames into the server's stdin at `fps`
/// until dropped.
struct Camera {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Camera {
    fn start(server: &mut Server, fps: u32) -> Camera {
        let mut stdin: ChildStdin = server.child.stdin.take().expect("the server's stdin");
        let sent = frames(20);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let interval = Duration::from_secs(1) / fps;
        let thread = thread::spawn(move || {
            let start = Instant::now();
            for (n, frame) in sent.iter().cycle().enumerate() {
                if stopped.load(Ordering::Relaxed) || stdin.write_all(frame).is_err() {
                    return;
                }
                let due = start + interval * (n as u32 + 1);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
        });
        Camera { stop, thread: Some(thread) }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server with a camera feeding it, and a first frame already in.
fn camera_server(fps: u32) -> (Server, Camera) {
    let mut server = Server::start(&[]);
    let camera = Camera::start(&mut server, fps);
    let deadline = Instant::now() + STEP;
    while server.get_path("/snapshot.jpg").0 != 200 {
        assert!(Instant::now() < deadline, "no frame reached the server");
        thread::sleep(Duration::from_millis(20));
    }
    (server, camera)
}

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("clients-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        // Writable by an unprivileged client too (VLC refuses to run as root).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A helper script under tests/clients/.
fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Decodes an image file with FFmpeg: its RGB pixels.
fn decode_rgb(path: &Path) -> Vec<u8> {
    let out = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
        CLIENT_LIMIT,
    );
    assert!(out.status.success(), "{} does not decode: {}", path.display(), text(&out.stderr));
    out.stdout
}

// ---------------------------------------------------------------- FFmpeg

#[test]
#[ignore = "needs ffprobe (ffmpeg): run with --include-ignored, as .ci/run does"]
fn ffprobe_identifies_a_640x480_mjpeg_stream() {
    common::require("ffprobe");
    let _serial = one_at_a_time();
    let (server, _camera) = camera_server(30);
    let url = format!("http://127.0.0.1:{}/video.mjpg", server.port);
    let out = run_ok(Command::new("ffprobe").args([
        "-v",
        "error",
        "-show_entries",
        "stream=codec_name,width,height",
        "-of",
        "csv=p=0",
        &url,
    ]));
    assert_eq!(out.trim(), "mjpeg,640,480");
}

#[test]
#[ignore = "needs ffmpeg: run with --include-ignored, as .ci/run does"]
fn ffmpeg_decodes_50_frames_with_and_without_strict_mime_boundary() {
    common::require("ffmpeg");
    let _serial = one_at_a_time();
    let (server, _camera) = camera_server(60);
    let base = format!("http://127.0.0.1:{}", server.port);
    let cases: [(&[&str], String); 4] = [
        (&[], format!("{base}/video.mjpg")),
        (&["-strict_mime_boundary", "1"], format!("{base}/video.mjpg")),
        (&[], format!("{base}/?action=stream")),
        // What browsers get: the next part's headers right after each frame.
        (&[], format!("{base}/video.mjpg?advance_headers=1")),
    ];
    for (input_options, url) in cases {
        let out =
            run(
                Command::new("ffmpeg")
                    .args(["-nostdin", "-v", "error"])
                    .args(input_options)
                    .args(["-i", &url, "-frames:v", "50", "-f", "framemd5", "-"]),
                CLIENT_LIMIT,
            );
        let case = format!("{input_options:?} {url}");
        assert!(out.status.success(), "{case}: {}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{case}: decoding errors:\n{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let decoded: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(decoded.len(), 50, "{case}:\n{stdout}");
        // stream, dts, pts, duration, size, md5: every frame is 640x480 YUV 4:2:0.
        let mut hashes: Vec<&str> = decoded
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                assert_eq!(fields[4], (640 * 480 * 3 / 2).to_string(), "{case}: {line}");
                fields[5]
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert!(hashes.len() >= 5, "{case}: only {} distinct pictures", hashes.len());
    }
}

// ---------------------------------------------------------------- OpenCV

#[test]
#[ignore = "needs python3 with OpenCV (cv2): run with --include-ignored, as .ci/run does"]
fn opencv_opens_within_2_s_and_reads_100_frames() {
    common::require("python3");
    let probe = Command::new("python3").args(["-c", "import cv2"]).output().unwrap();
    assert!(probe.status.success(), "python3 cannot import cv2; .ci/run installs it");
    let _serial = one_at_a_time();
    let (server, _camera) = camera_server(60);
    for path in ["/video.mjpg", "/?action=stream"] {
        let url = format!("http://127.0.0.1:{}{path}", server.port);
        let out = run_ok(Command::new("python3").args([&script("opencv_read.py"), &url, "100"]));
        assert!(out.contains("\"opened\": true"), "{path}: {out}");
        assert!(out.contains("\"frames\": 100,"), "{path}: {out}");
        assert!(out.contains("\"shapes\": [\"(480, 640, 3)\"]"), "{path}: {out}");
        let open_s: f64 = out
            .split("\"open_s\": ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no open time in {out}"));
        assert!(open_s <= 2.0, "{path}: the open took {open_s} s");
    }
}

// ---------------------------------------------------------------- VLC

#[test]
#[ignore = "needs VLC and ffmpeg: run with --include-ignored, as .ci/run does"]
fn vlc_plays_the_stream_and_its_scene_filter_saves_pictures() {
    common::require("cvlc");
    common::require("ffmpeg");
    let _serial = one_at_a_time();
    let (server, _camera) = camera_server(30);
    let out = TempDir::new("vlc");
    let url = format!("http://127.0.0.1:{}/video.mjpg", server.port);
    let vlc_args = [
        "--intf",
        "dummy",
        "--vout",
        "dummy",
        "--no-audio",
        "--play-and-exit",
        "--video-filter=scene",
        &format!("--scene-path={}", out.str()),
        "--scene-format=png",
        "--scene-ratio=10",
        "--scene-prefix=f",
        &url,
    ];
    // VLC refuses to run as root; setpriv runs it in this process, so that
    // killing it kills VLC and nothing is left behind.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        common::require("setpriv");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    let mut vlc = command
        .args(vlc_args)
        .env("HOME", out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("VLC starts");
    let mut log = vlc.stderr.take().unwrap();
    let log = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = log.read_to_end(&mut buf);
        text(&buf)
    });
    // On a live stream VLC plays until stopped: wait for two pictures (the
    // first is then complete), then stop it as a person would.
    let deadline = Instant::now() + CLIENT_LIMIT;
    let pictures = loop {
        let mut pictures: Vec<PathBuf> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        if pictures.len() >= 2 {
            pictures.sort();
            break pictures;
        }
        if Instant::now() > deadline || vlc.try_wait().unwrap().is_some() {
            let _ = vlc.kill();
            let _ = vlc.wait();
            panic!("VLC saved {} pictures; its log:\n{}", pictures.len(), log.join().unwrap());
        }
        thread::sleep(Duration::from_millis(100));
    };
    unsafe { libc::kill(vlc.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = Instant::now() + STEP;
    while vlc.try_wait().unwrap().is_none() {
        if Instant::now() > stopped {
            let _ = vlc.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = vlc.wait();
    let log = log.join().unwrap();
    let rgb = decode_rgb(&pictures[0]);
    assert_eq!(rgb.len(), 640 * 480 * 3, "{}: not a 640x480 picture\n{log}", pictures[0].display());
    let mut levels = rgb.clone();
    levels.sort_unstable();
    levels.dedup();
    assert!(levels.len() > 8, "the picture VLC saved is blank\n{log}");
}

// ---------------------------------------------------------------- curl

fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let out =
        run(Command::new("curl").args(["-sS", "--max-time", "10", "-i"]).args(args), STEP * 2);
    assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
    split_response(&out.stdout)
}

#[test]
#[ignore = "needs curl: run with --include-ignored, as .ci/run does"]
fn curl_gets_snapshots_stats_and_heads() {
    common::require("curl");
    common::require("python3");
    let _serial = one_at_a_time();
    let (server, _camera) = camera_server(30);
    let base = format!("http://127.0.0.1:{}", server.port);
    for path in ["/snapshot.jpg", "/?action=snapshot"] {
        let (status, head, body) = curl(&[&format!("{base}{path}")]);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains("\r\nContent-Type: image/jpeg\r\n"), "{path}: {head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
        assert!(body.starts_with(&[0xFF, 0xD8]) && body.ends_with(&[0xFF, 0xD9]), "{path}");
    }

    let (status, head, json) = curl(&[&format!("{base}/stats")]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\nContent-Type: application/json\r\n"), "{head}");
    let mut python = Command::new("python3")
        .args(["-c", "import json,sys; print(sorted(json.load(sys.stdin)))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(&json).unwrap();
    let parsed = python.wait_with_output().unwrap();
    assert!(parsed.status.success(), "/stats is not JSON: {}", text(&json));
    assert!(text(&parsed.stdout).contains("'frames_in'"), "{}", text(&parsed.stdout));

    let (status, head, body) = curl(&["-I", &format!("{base}/video.mjpg")]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\nContent-Type: multipart/x-mixed-replace; boundary="), "{head}");
    assert!(body.is_empty(), "HEAD /video.mjpg sent a body");
    let (status, head, body) = curl(&["-I", &format!("{base}/snapshot.jpg")]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("\r\nContent-Type: image/jpeg\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: "), "{head}");
    assert!(body.is_empty(), "HEAD /snapshot.jpg sent a body");
}

/// `--auth` is HTTP Basic only: curl told to use Digest (as Home Assistant,
/// OctoPrint and ZoneMinder can be) finds no Digest challenge and gets 401;
/// the same credentials with Basic get the snapshot.
#[test]
#[ignore = "needs curl: run with --include-ignored, as .ci/run does"]
fn curl_with_digest_gets_401_and_with_basic_the_snapshot() {
    common::require("curl");
    let _serial = one_at_a_time();
    let mut server = Server::start(&["--auth", "pilot:rc-car"]);
    let _camera = Camera::start(&mut server, 30);
    let url = format!("http://127.0.0.1:{}/snapshot.jpg", server.port);
    let (status, head, _) = curl(&["--digest", "-u", "pilot:rc-car", &url]);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("\r\nWWW-Authenticate: Basic realm=\"camera\""), "{head}");
    assert!(!head.to_ascii_lowercase().contains("digest"), "{head}");
    let deadline = Instant::now() + STEP;
    loop {
        let (status, head, body) = curl(&["--basic", "-u", "pilot:rc-car", &url]);
        if status == 200 {
            assert!(body.starts_with(&[0xFF, 0xD8]), "{head}");
            break;
        }
        // 503 until the camera's first frame is in.
        assert_eq!(status, 503, "{head}");
        assert!(Instant::now() < deadline, "no snapshot: {head}");
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- Chromium

#[test]
#[ignore = "needs Chromium: run with --include-ignored, as .ci/run does"]
fn chromium_shows_a_moving_picture_and_its_age_without_errors() {
    common::require("chromium");
    common::require("python3");
    let _serial = one_at_a_time();
    // The page reads frame ages from the test pattern's time strip; 10 fps
    // keeps the debug build's pattern on time on a busy machine.
    let started = Instant::now();
    let server = Server::start_with(&["--pattern", "--fps", "10"], Stdio::null());
    let out = TempDir::new("chromium");
    let page = format!("http://127.0.0.1:{}/", server.port);
    let report =
        run_ok(Command::new("python3").args([&script("chromium_viewer.py"), &page, out.str()]));
    assert!(report.contains("\"pictures_differ\": true"), "{report}");
    assert!(report.contains("\"errors\": []"), "the page logged errors: {report}");
    assert!(report.contains("\"natural_size\": [640, 480]"), "{report}");
    assert!(report.contains("\"age_text\": \"frame age "), "{report}");
    let ages: Vec<f64> = report
        .split("\"frame_ages\": [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .map(|list| list.split(',').map(|a| a.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("no frame ages in {report}"));
    assert!(ages.len() >= 3, "{report}");
    // The pattern's time, read back from pixels, is a time since the server
    // started: the strip survived JPEG and the page decoded it.
    let since_start = started.elapsed().as_millis() as f64;
    assert!(ages.iter().all(|&a| (-100.0..since_start).contains(&a)), "{since_start}: {report}");
    for shot in ["a.png", "b.png"] {
        let rgb = decode_rgb(&out.path().join(shot));
        assert_eq!(rgb.len(), 640 * 480 * 3, "{shot} is not the whole picture");
    }
}
