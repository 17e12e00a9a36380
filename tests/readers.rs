//! Consumers that read slower than the camera writes get recent frames,
//! not a queue: real clients, with a camera whose every picture shows the
//! time it was made (tests/readers/pixel_clock.py), so the age of what a
//! client got is read from its pixels.

mod common;

use common::{Killed, Server};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Run length of the camera: longer than any test here takes.
const CAMERA_SECONDS: &str = "180";

/// The consumers' pace is what is measured: two at once on two cores
/// would each read at the other's mercy.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script(name: &str) -> String {
    format!("{}/tests/readers/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn require_cv2() {
    common::require("python3");
    let probe = Command::new("python3").args(["-c", "import cv2"]).output().unwrap();
    assert!(probe.status.success(), "python3 cannot import cv2; .ci/run installs it");
}

/// The server, fed by the pixel clock at `fps`.
fn clock_server(fps: u32) -> (Server, common::Killed) {
    let mut camera = Command::new("python3")
        .args([&script("pixel_clock.py"), "produce", &fps.to_string(), CAMERA_SECONDS])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let frames = camera.stdout.take().unwrap();
    let server = Server::start_configured(&[], |command| {
        command.stdin(Stdio::from(frames));
    });
    (server, common::Killed(camera))
}

fn json_field(json: &str, key: &str) -> f64 {
    common::json_number(json, key)
}

#[test]
#[ignore = "needs python3 with OpenCV (cv2): run with --include-ignored, as .ci/run does"]
fn an_opencv_loop_that_works_100_ms_a_frame_gets_recent_frames_not_a_queue() {
    let _one = one_at_a_time();
    require_cv2();
    let (server, _camera) = clock_server(30);
    let url = format!("http://127.0.0.1:{}/video.mjpg", server.port);
    // 30 s to fill its buffer, be learned and drain; then 15 s measured.
    let out = common::run(
        Command::new("python3").args([&script("opencv_slow.py"), &url, "100", "30", "15"]),
        Duration::from_secs(90),
    );
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("OpenCV at 100 ms a frame: {report}");
    let p50 = json_field(&report, "age_p50_ms");
    // Without pacing its own buffer made this seconds (1.5 s and growing);
    // paced, it is its 100 ms of work and a camera interval or so.
    assert!(p50 < 500.0, "median age {p50} ms: a queue, not recent frames; {report}");
    let stats = server.stats();
    assert!(json_field(&stats, "frames_skipped_reading") > 0.0, "{stats}");
}

/// Median of the ages `pixel_clock.py written` reads from `files`.
fn median_written_age(files: &[PathBuf]) -> f64 {
    let out = common::run(
        Command::new("python3").arg(script("pixel_clock.py")).arg("written").args(files),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ages: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(!ages.is_empty(), "no picture could be read");
    ages.sort_by(f64::total_cmp);
    ages[ages.len() / 2]
}

#[test]
#[ignore = "needs motion and python3 with OpenCV (cv2): run with --include-ignored, as .ci/run does"]
fn motion_at_10_fps_saves_recent_frames_not_a_queue() {
    let _one = one_at_a_time();
    common::require("motion");
    require_cv2();
    let (server, _camera) = clock_server(30);
    let dir = std::env::temp_dir().join(format!("readers-motion-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let pictures = dir.join("pictures");
    fs::create_dir_all(&pictures).unwrap();
    let config = dir.join("motion.conf");
    fs::write(
        &config,
        format!(
            "daemon off\nsetup_mode off\nlog_level 4\nlog_file {log}\ntarget_dir {pictures}\n\
             netcam_url http://127.0.0.1:{port}/video.mjpg\nframerate 10\npicture_output on\n\
             emulate_motion on\nmovie_output off\nwebcontrol_port 0\nstream_port 0\n",
            log = dir.join("motion.log").display(),
            pictures = pictures.display(),
            port = server.port,
        ),
    )
    .unwrap();
    let motion = Killed(
        Command::new("motion")
            .args(["-n", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("motion starts"),
    );
    // 60 s to fill its buffer, be learned and drain (its frames are
    // larger than the test pattern's, and its buffer grows while it fills:
    // 20 s or so here); then the next 100 pictures it saves are measured.
    let measured_from = SystemTime::now() + Duration::from_secs(60);
    let recent = |path: &PathBuf| {
        fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t >= measured_from)
    };
    let saved = || -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&pictures)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "jpg") && recent(p));
        files
    };
    let mut files = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while files.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "Motion saved {} recent pictures",
            files.len()
        );
        std::thread::sleep(Duration::from_millis(500));
        files = saved();
    }
    drop(motion);
    let p50 = median_written_age(&files);
    eprintln!("Motion at framerate 10: median age {p50} ms over {} pictures", files.len());
    let _ = fs::remove_dir_all(&dir);
    // Without pacing this was 1.8 s here (1.5 s, and 6.4 s with small
    // frames, when first measured); paced, about 0.2 s, which is Motion's
    // own 100 ms between frames and its time to save a picture.
    assert!(p50 < 600.0, "median age {p50} ms: a queue, not recent frames");
}
