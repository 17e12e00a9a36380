//! Consumers that read slower than the camera writes get recent frames,
//! not a queue: real clients, with a camera whose every picture shows the
//! time it was made (tests/readers/pixel_clock.py), so the age of what a
//! client got is read from its pixels.

mod common;

use common::Server;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run length of the camera: longer than any test here takes.
const CAMERA_SECONDS: &str = "120";

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
