//! The server as a process: signals, its own stdin, stdout and stderr, and
//! the errors it gives before it serves.

mod common;

use common::Killed;

use common::{frames, produce, Server, Viewer, STEP};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
}

/// Runs the binary to its end with `args` and stdin; returns status and stderr.
fn run(args: &[&str], stdin: Stdio) -> (std::process::ExitStatus, String) {
    let out = binary()
        .args(["-p", "0", "--bind", "127.0.0.1"])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn signal(server: &Server, sig: libc::c_int) {
    // SAFETY: kill on the pid of a child this test started.
    assert_eq!(unsafe { libc::kill(server.child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn stdin_from_dev_null_is_a_named_error_with_the_way_out() {
    let (status, err) = run(&[], Stdio::null());
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot stream stdin: it is /dev/null"), "{err}");
    assert!(
        err.contains("--exec") && err.contains("--input") && err.contains("--pattern"),
        "{err}"
    );
    assert!(!err.contains("streaming stdin on"), "a start-up line before the error: {err}");
}

#[test]
fn a_directory_or_an_empty_file_as_input_is_a_named_error() {
    let dir = std::env::temp_dir().join(format!("rms-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (status, err) = run(&["--input", dir.to_str().unwrap()], Stdio::piped());
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("is a directory"), "{err}");
    let empty = dir.join("empty.mjpg");
    File::create(&empty).unwrap();
    let (status, err) = run(&["--input", empty.to_str().unwrap()], Stdio::piped());
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("empty.mjpg is empty"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flags_out_of_range_are_usage_errors_not_aborts() {
    let (status, err) = run(&["--stats", "18446744073709551615"], Stdio::piped());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--stats 18446744073709551615 is out of range"), "{err}");
}

#[test]
fn version_and_help_survive_a_closed_stdout() {
    let out = binary().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, format!("raspivid_mjpeg_server {}\n", env!("CARGO_PKG_VERSION")));
    // `--help | head -1`: stdout's reader is gone before the help is written.
    let (reader, writer) = pipe();
    drop(reader);
    let status = binary().arg("--help").stdout(Stdio::from(writer)).status().unwrap();
    assert_eq!(status.code(), Some(0), "--help with a closed stdout: {status}");
}

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds, which nothing else owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Starts the server with its stderr on a pipe the test holds both ends of;
/// returns the child, its port and the read end (the start line taken).
fn start_with_stderr_pipe(args: &[&str]) -> (Killed, u16, BufReader<File>, OwnedFd) {
    let (reader, writer) = pipe();
    let ours = writer.try_clone().unwrap();
    let child = binary()
        .args(["-p", "0", "--bind", "127.0.0.1", "--pattern", "--fps", "10"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(File::from(reader));
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let port = line.rsplit_once(" on http://127.0.0.1:").and_then(|(_, r)| r.split('/').next());
    let port = port.unwrap_or_else(|| panic!("no port in {line:?}"));
    (Killed(child), port.parse().unwrap(), lines, ours)
}

/// Reads frames from the server at `port` until the server's own stamps on
/// them (`X-Timestamp`, taken as it read each frame) span `span`; returns
/// how many. A server that dies ends the stream, and one that freezes sends
/// nothing for [`STEP`]: either fails the test. A loaded machine only makes
/// the frames fewer.
fn frames_spanning(port: u16, span: Duration) -> usize {
    let mut viewer = Viewer::connect(port, "/video.mjpg");
    let mut first = None;
    let mut n = 0;
    loop {
        let (headers, _) = viewer.try_next_part().expect("the stream went on");
        n += 1;
        let stamp = headers.lines().find_map(|l| l.strip_prefix("X-Timestamp: ")).unwrap();
        let stamp: f64 = stamp.parse().unwrap();
        if stamp - *first.get_or_insert(stamp) >= span.as_secs_f64() {
            return n;
        }
    }
}

#[test]
fn a_closed_stderr_neither_kills_nor_stops_the_server() {
    let (mut server, port, lines, ours) = start_with_stderr_pipe(&["--stats", "1"]);
    drop(lines);
    drop(ours);
    // Stats lines go to a pipe with no reader (EPIPE) once a second while
    // the frames span 3 s of the server's clock.
    let got = frames_spanning(port, Duration::from_secs(3));
    eprintln!("{got} frames over 3 s of the 10 fps pattern with stderr closed");
    assert!(server.0.try_wait().unwrap().is_none(), "the server died");
}

#[test]
fn a_full_stderr_never_blocks_the_stream() {
    let (_server, port, mut lines, ours) = start_with_stderr_pipe(&["--stats", "1"]);
    // Fill the pipe from our own end until it would block.
    let fd = ours.as_raw_fd();
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut filler = File::from(ours);
    let block = [b'.'; 4096];
    while filler.write(&block).is_ok() {}
    // Stats lines now meet a full pipe every second while the frames span
    // 4 s of the server's clock (the log's unit tests show lines past its
    // queue dropped and counted).
    let got = frames_spanning(port, Duration::from_secs(4));
    eprintln!("{got} frames over 4 s of the 10 fps pattern while stderr was full");
    // Read the pipe again: the lines held back come through.
    let mut seen = String::new();
    let deadline = Instant::now() + STEP;
    let mut buf = vec![0; 1 << 16];
    while !seen.contains("stats: ") {
        assert!(Instant::now() < deadline, "no stats line after stderr drained");
        let n = lines.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]).replace('.', ""));
    }
}

#[test]
fn sigterm_sigint_and_sighup_end_the_server_like_the_end_of_input() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut server = Server::start(&[]);
        let mut viewer = Viewer::open(&server, "/video.mjpg");
        let sent = frames(2);
        produce(&mut server, &sent[..1], Duration::ZERO);
        assert_eq!(viewer.next_frame(), sent[0]);
        signal(&server, sig);
        let status = server.wait_keeping_stdin();
        assert_eq!(status.code(), Some(0), "signal {sig}: {status}");
        let log = server.stderr.lock().unwrap().clone();
        assert!(log.contains("finishing the frames in flight"), "signal {sig}: {log}");
        assert!(log.contains("done: "), "no final report after signal {sig}: {log}");
        // The stream ends cleanly, after the last whole frame.
        assert_eq!(viewer.try_next_frame(), None);
    }
}

/// A server with a viewer sitting on a frame far larger than its socket
/// takes, and the server's uptime (its own clock, from `/stats`) once the
/// frame is in.
fn server_with_a_viewer_on_a_frame() -> (Server, std::net::TcpStream, f64) {
    let mut server = Server::start(&[]);
    let stalled = server.stalled_viewer("/video.mjpg");
    // A frame far larger than the socket takes: the viewer sits on the rest.
    let big = [&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00][..], &[0x11; 4 << 20], &[0xFF, 0xD9]];
    produce(&mut server, &[big.concat()], Duration::ZERO);
    common::wait_until("the frame is in", || {
        common::json_number(&server.stats(), "frames_in") == 1.0
    });
    let uptime = common::json_number(&server.stats(), "uptime_s");
    (server, stalled, uptime)
}

/// The server's uptime at its exit, from its last line (`done: 2.1 s, ...`,
/// to a tenth of a second).
fn uptime_at_exit(server: &Server) -> f64 {
    let log = server.stderr.lock().unwrap().clone();
    let done = log.lines().find_map(|l| l.strip_prefix("done: ")).expect("the final report");
    done.split_once(" s,").expect("the uptime first").0.parse().unwrap()
}

/// How long the server waits, draining, for viewers to take their frame.
const DRAIN_SECS: f64 = 2.0;

/// What rounding the uptimes to a tenth and a thousandth of a second can
/// take off or add to a span between them.
const ROUNDING: f64 = 0.06;

#[test]
fn a_viewer_sitting_on_a_frame_is_waited_for_and_a_second_signal_ends_the_wait() {
    // Both are read on the server's own clock, from its uptime before the
    // signal (the drain starts after it; to a millisecond) to its uptime at
    // exit (to a tenth of a second): 0.06 s of rounding either way. A
    // loaded machine or a slow test can make the first wait longer, never
    // shorter, and cannot delay the second signal, sent with the first.

    // One signal: the server drains, waiting for the viewer until the
    // drain's end, then exits by itself.
    let (mut server, stalled, before) = server_with_a_viewer_on_a_frame();
    signal(&server, libc::SIGTERM);
    let status = server.wait_keeping_stdin();
    assert_eq!(status.code(), Some(0));
    assert!(server.stderr.lock().unwrap().contains("finishing the frames in flight"));
    let waited = uptime_at_exit(&server) - before;
    eprintln!("one signal: exited {waited:.2} s after it");
    assert!(waited >= DRAIN_SECS - ROUNDING, "exited {waited:.2} s after the signal, not waiting");
    drop(stalled);

    // Two signals, of two kinds so that neither is merged into the other:
    // the first starts the drain, the second ends it at once.
    let (mut server, stalled, before) = server_with_a_viewer_on_a_frame();
    signal(&server, libc::SIGTERM);
    signal(&server, libc::SIGINT);
    let status = server.wait_keeping_stdin();
    assert_eq!(status.code(), Some(0));
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("finishing the frames in flight"), "{log}");
    let waited = uptime_at_exit(&server) - before;
    eprintln!("two signals: exited {waited:.2} s after them");
    assert!(
        waited < DRAIN_SECS - ROUNDING,
        "the second signal waited for the drain: {waited:.2} s"
    );
    drop(stalled);
}

#[test]
fn sighup_ignored_at_start_as_under_nohup_stays_ignored() {
    use std::os::unix::process::CommandExt;
    let server = Server::start_configured(&["--pattern", "--fps", "10"], |command| {
        command.stdin(Stdio::null());
        // SAFETY: signal is async-signal-safe, and nothing else runs between
        // fork and exec. This is what nohup does before it execs.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    viewer.next_frame();
    signal(&server, libc::SIGHUP);
    // A server that took the SIGHUP drains and ends the stream at once; one
    // that ignores it goes on. Ten frames of the 10 fps pattern are the wait.
    for _ in 0..10 {
        assert!(viewer.try_next_frame().is_some(), "the stream ended after SIGHUP");
    }
    let (status, head, _) = server.get_path("/snapshot.jpg");
    assert_eq!(status, 200, "{head}");
    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains("SIGHUP"), "{log}");
}
