//! Every kind of input: a FIFO that outlives its writer, a looped file, the
//! original's file list, stdin redirected from a file, and signals.

mod common;

use common::{frames, Server, Viewer};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mjpeg-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_fifo_survives_its_writer_restarting() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("cam");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let server = Server::start_with(&["--input", fifo.to_str().unwrap()], Stdio::null());
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let sent = frames(4);
    for pair in sent.chunks(2) {
        // Each "camera process" opens the FIFO, writes, and exits.
        let mut camera = OpenOptions::new().write(true).open(&fifo).unwrap();
        camera.write_all(&pair.concat()).unwrap();
        drop(camera);
        assert_eq!(viewer.next_frame(), pair[0]);
        assert_eq!(viewer.next_frame(), pair[1]);
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_regular_file_is_looped_at_the_given_pace() {
    let dir = temp_dir("file");
    let file = dir.join("clip.mjpg");
    let sent = frames(3);
    fs::write(&file, sent.concat()).unwrap();
    let server =
        Server::start_with(&["--input", file.to_str().unwrap(), "--fps", "50"], Stdio::null());
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let first = viewer.next_frame();
    let at = sent.iter().position(|f| *f == first).expect("a frame of the file");
    for i in 1..=7 {
        assert_eq!(viewer.next_frame(), sent[(at + i) % 3], "frame {i} after the first");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn stdin_from_a_file_is_paced_and_ends() {
    let dir = temp_dir("stdin-file");
    let file = dir.join("clip.mjpg");
    let sent = frames(5);
    fs::write(&file, sent.concat()).unwrap();
    let mut server =
        Server::start_with(&["--fps", "20"], Stdio::from(fs::File::open(&file).unwrap()));
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let mut got = vec![viewer.next_frame()];
    while let Some(frame) = viewer.try_next_frame() {
        got.push(frame);
    }
    let at = sent.iter().position(|f| *f == got[0]).unwrap();
    assert_eq!(got, sent[at..].to_vec());
    assert!(server.wait().success());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_originals_file_list_is_looped() {
    let dir = temp_dir("list");
    let sent = frames(3);
    let mut list = String::new();
    for (i, frame) in sent.iter().enumerate() {
        let path = dir.join(format!("{i}.jpg"));
        fs::write(&path, frame).unwrap();
        list.push_str(&format!("{}\n", path.display()));
    }
    let list_path = dir.join("list.txt");
    fs::write(&list_path, list).unwrap();
    let server =
        Server::start_with(&["-f", list_path.to_str().unwrap(), "-d", "20000"], Stdio::null());
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let first = viewer.next_frame();
    let at = sent.iter().position(|f| *f == first).unwrap();
    for i in 1..=5 {
        assert_eq!(viewer.next_frame(), sent[(at + i) % 3]);
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_input_is_a_one_line_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_raspivid_mjpeg_server"))
        .args(["-p", "0", "--bind", "127.0.0.1", "--input", "/nonexistent/cam"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot open the input: "), "{err}");
}

#[test]
fn the_test_pattern_streams_when_asked() {
    let server = Server::start_with(&["--pattern", "--fps", "60"], Stdio::null());
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("test pattern"), "{log}");
    let mut viewer = Viewer::open(&server, "/video.mjpg");
    let (a, b) = (viewer.next_frame(), viewer.next_frame());
    assert_ne!(a, b, "the pattern moves");
    for frame in [a, b] {
        assert_eq!(&frame[..2], &[0xFF, 0xD8]);
        assert_eq!(&frame[frame.len() - 2..], &[0xFF, 0xD9]);
    }
}

#[test]
fn sigterm_ends_the_server_cleanly_with_stats() {
    let mut server = Server::start(&["--stats", "60"]);
    server.stdin().write_all(&frames(1)[0]).unwrap();
    let _viewer = Viewer::open(&server, "/video.mjpg");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.wait();
    assert!(status.success(), "{status}");
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("done: "), "{log}");
    assert!(log.contains("Value     Percentile TotalCount"), "{log}");
}
