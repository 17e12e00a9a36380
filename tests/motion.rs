//! Motion (Debian's `motion`, the motion-detection daemon) with its netcam
//! pointed at the server, as a person sets it up: `netcam_url
//! http://127.0.0.1:PORT/video.mjpg`, `framerate 10`, every picture saved
//! (`picture_output on` with `emulate_motion on`). The server runs
//! tests/camera/fake_camera.py with `--exec`; the test pattern's time strip
//! in each frame says which camera run a saved picture came from, read back
//! from Motion's own JPEGs with FFmpeg.
//!
//! Every wait is bounded and polls a condition; Motion is ended by its PID.

mod common;

use common::{json_number, Killed, Server};
use raspivid_mjpeg_server::pattern::Canvas;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait for Motion to do a thing: it starts in a second or two,
/// and the machine may be busy.
const MOTION_WAIT: Duration = Duration::from_secs(30);

/// The time stamps drawn into the first camera run's frames, and into every
/// later run's: no two runs' frames look alike.
const FIRST_RUN: u64 = 1_700_000_000_000;
const LATER_RUNS: u64 = 1_800_000_000_000;

/// How many more pictures Motion must save once the camera's new frames
/// have reached it.
const MORE_PICTURES: usize = 20;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn require() {
    common::require("motion");
    common::require("ffmpeg");
    common::require("python3");
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("motion-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Five 640x480 pattern frames stamped `base`, `base + 1`, ... in `dir`, as
/// fake_camera.py reads them.
fn write_frames(dir: &Path, base: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut canvas = Canvas::new();
    for n in 0..5 {
        canvas.draw(n, base + n);
        fs::write(dir.join(format!("{n:03}.jpg")), canvas.encode().unwrap()).unwrap();
    }
}

/// The camera: its first run cycles through the FIRST_RUN frames, every
/// later run through the LATER_RUNS ones, 10 a second; each start appends
/// its pid to `pids`.
fn camera_command(dir: &TempDir) -> String {
    write_frames(&dir.join("first"), FIRST_RUN);
    write_frames(&dir.join("later"), LATER_RUNS);
    let script = format!("{}/tests/camera/fake_camera.py", env!("CARGO_MANIFEST_DIR"));
    let run = |frames: &str| {
        format!(
            "exec '{script}' --fps 10 --dir '{}' --pidfile '{}'",
            dir.join(frames).display(),
            dir.join("pids").display()
        )
    };
    let marker = dir.join("started");
    let m = marker.display();
    format!("if [ -e '{m}' ]; then {}; fi; touch '{m}'; {}", run("later"), run("first"))
}

/// The pid of each camera start so far.
fn camera_pids(dir: &TempDir) -> Vec<u32> {
    let text = fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole.lines().map(|l| l.parse().unwrap()).collect()
}

/// The server running the camera with `args` besides `--exec`.
fn server(dir: &TempDir, args: &[&str]) -> Server {
    let command = camera_command(dir);
    let mut all = vec!["--exec", &command, "--source-timeout", "2", "--kill-timeout", "1"];
    all.extend_from_slice(args);
    Server::start_configured(&all, |c| {
        c.stdin(Stdio::null());
    })
}

/// Motion, its netcam on `url`, saving every picture into `dir/pictures`
/// and logging (at level 7, INF) into `dir/motion.log`. Its web control and
/// stream ports are off (0), so it listens nowhere.
struct Motion {
    process: Killed,
    pictures: PathBuf,
    log: PathBuf,
}

impl Motion {
    fn start(dir: &TempDir, url: &str) -> Motion {
        let pictures = dir.join("pictures");
        fs::create_dir_all(&pictures).unwrap();
        let log = dir.join("motion.log");
        let config = dir.join("motion.conf");
        fs::write(
            &config,
            format!(
                "daemon off\n\
                 setup_mode off\n\
                 log_level 7\n\
                 log_file {log}\n\
                 target_dir {pictures}\n\
                 netcam_url {url}\n\
                 framerate 10\n\
                 picture_output on\n\
                 emulate_motion on\n\
                 movie_output off\n\
                 webcontrol_port 0\n\
                 stream_port 0\n",
                log = log.display(),
                pictures = pictures.display(),
            ),
        )
        .unwrap();
        let child = Command::new("motion")
            .arg("-n")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("motion starts");
        Motion { process: Killed(child), pictures, log }
    }

    /// Motion's pictures so far, by name (its names start with the time).
    fn pictures(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(&self.pictures)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        found.sort();
        found
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until `done` gives something, failing after [`MOTION_WAIT`]
    /// with Motion's log, or if Motion has exited.
    fn wait_for<T>(&mut self, what: &str, mut done: impl FnMut(&Motion) -> Option<T>) -> T {
        let deadline = Instant::now() + MOTION_WAIT;
        loop {
            if let Some(value) = done(self) {
                return value;
            }
            let exited = self.process.0.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "timed out waiting until {what} (Motion exited: {exited:?}); {} pictures; log:\n{}",
                self.pictures().len(),
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for a picture not in `seen` whose time strip is one of the
    /// five stamps from `base`; returns its name. Pictures looked at are
    /// added to `seen`.
    fn wait_for_frame_of(&mut self, what: &str, base: u64, seen: &mut HashSet<PathBuf>) -> PathBuf {
        self.wait_for(what, |motion| {
            let new: Vec<PathBuf> =
                motion.pictures().into_iter().filter(|p| !seen.contains(p)).collect();
            // The newest few: Motion saves ten a second.
            let found =
                new.iter().rev().take(3).find(|p| stamp_of(p).is_some_and(|s| runs(s, base)));
            let found = found.cloned();
            seen.extend(new);
            found
        })
    }
}

/// True if `stamp` is one of the frames stamped from `base`.
fn runs(stamp: u64, base: u64) -> bool {
    (base..base + 5).contains(&stamp)
}

/// The pattern's time strip (src/pattern.rs: 42 blocks of 16 px, 21 a row,
/// most significant bit first, white for 1) read off a 640x480 JPEG that
/// Motion saved; None if FFmpeg cannot decode it (yet).
fn stamp_of(picture: &Path) -> Option<u64> {
    let out = common::run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(picture)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]),
        Duration::from_secs(20),
    );
    if !out.status.success() || out.stdout.len() != 640 * 480 * 3 {
        return None;
    }
    let rgb = out.stdout;
    let mut value = 0;
    for bit in 0..42 {
        let (x, y) = ((bit % 21) * 16 + 8, (bit / 21) * 16 + 8);
        let i = (y * 640 + x) * 3;
        let level = (u32::from(rgb[i]) + u32::from(rgb[i + 1]) + u32::from(rgb[i + 2])) / 3;
        value = value * 2 + u64::from(level > 127);
    }
    Some(value)
}

/// Once the camera's new frames reach Motion, it goes on saving them:
/// [`MORE_PICTURES`] more, the last one still the camera's.
fn keeps_saving(motion: &mut Motion, base: u64) {
    let from = motion.pictures().len();
    motion.wait_for(&format!("{MORE_PICTURES} more pictures"), |m| {
        (m.pictures().len() >= from + MORE_PICTURES).then_some(())
    });
    let last = motion.pictures().pop().unwrap();
    // The newest may be half-written: the one before it is whole.
    let whole = motion.pictures().into_iter().rev().nth(1).unwrap_or(last);
    let stamp = stamp_of(&whole);
    assert!(
        stamp.is_some_and(|s| runs(s, base)),
        "{} is not the camera's frame (strip {stamp:?}); log:\n{}",
        whole.display(),
        motion.log()
    );
}

/// What `/stats` says of the source: (state, restarts).
fn source(server: &Server) -> (String, f64) {
    let stats = server.stats();
    let source = &stats[stats.find("\"source\":").unwrap()..];
    let state = source.split("\"state\":\"").nth(1).unwrap().split('"').next().unwrap();
    (state.to_string(), json_number(source, "restarts"))
}

#[test]
#[ignore = "needs Motion (motion), ffmpeg and python3: run with --include-ignored, as .ci/run does"]
fn motion_keeps_saving_pictures_after_the_camera_restarts() {
    require();
    let _serial = one_at_a_time();
    let dir = TempDir::new("restart");
    let server = server(&dir, &[]);
    let url = format!("http://127.0.0.1:{}/video.mjpg", server.port);
    let mut motion = Motion::start(&dir, &url);
    let mut seen = HashSet::new();
    motion.wait_for_frame_of("Motion saves the first camera run's frames", FIRST_RUN, &mut seen);
    // docs/DEPLOY.md says how Motion 4.5 opens the stream: through FFmpeg.
    let log = motion.log();
    for line in ["Setting up http via netcam", "Setting input_format mjpeg"] {
        assert!(log.contains(line), "no {line:?} in Motion's log:\n{log}");
    }

    // The camera dies; the server starts it again.
    let first = camera_pids(&dir);
    assert_eq!(first.len(), 1, "{first:?}");
    // SAFETY: kill(2) on the camera the server started for this test.
    assert_eq!(unsafe { libc::kill(first[0] as libc::pid_t, libc::SIGKILL) }, 0);
    motion.wait_for("the camera runs again", |_| (camera_pids(&dir).len() >= 2).then_some(()));
    motion.wait_for_frame_of("Motion saves the restarted camera's frames", LATER_RUNS, &mut seen);
    keeps_saving(&mut motion, LATER_RUNS);
    let (state, restarts) = source(&server);
    assert_eq!((state.as_str(), restarts), ("online", 1.0));
    assert_eq!(json_number(&server.stats(), "streaming"), 1.0, "Motion's one stream");
}

#[test]
#[ignore = "needs Motion (motion), ffmpeg and python3: run with --include-ignored, as .ci/run does"]
fn motion_starts_an_on_demand_camera_and_keeps_saving_its_pictures() {
    require();
    let _serial = one_at_a_time();
    let dir = TempDir::new("on-demand");
    let server = server(&dir, &["--on-demand"]);
    // Nobody watches: no camera.
    assert_eq!(source(&server).0, "stopped");
    assert!(camera_pids(&dir).is_empty());
    let url = format!("http://127.0.0.1:{}/video.mjpg", server.port);
    let mut motion = Motion::start(&dir, &url);
    let mut seen = HashSet::new();
    motion.wait_for_frame_of("Motion saves the camera's frames", FIRST_RUN, &mut seen);
    keeps_saving(&mut motion, FIRST_RUN);
    assert_eq!(camera_pids(&dir).len(), 1, "the camera started once, for Motion");
    assert_eq!(source(&server), ("online".to_string(), 0.0));
    assert_eq!(json_number(&server.stats(), "streaming"), 1.0, "Motion's one stream");
}
