//! Runs the real binary and talks to it over real sockets.
#![allow(dead_code)]

use raspivid_mjpeg_server::pattern::Canvas;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any single step of a test may wait before it fails.
pub const STEP: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stderr: Arc<Mutex<String>>,
    /// Reads stderr until the server (and whatever holds its stderr) ends.
    log_reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the server on a free port with frames to be written to its stdin.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, Stdio::piped())
    }

    pub fn start_with(args: &[&str], stdin: Stdio) -> Server {
        Server::start_configured(args, |command| {
            command.stdin(stdin);
        })
    }

    /// Starts the server with frames to be written to its stdin, after
    /// `configure` has had its say on the command (limits, environment).
    pub fn start_configured(args: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        Server::start_under(&[], args, configure)
    }

    /// Starts the server as the last word of `wrapper` (`unshare …`), which
    /// is then the child the test holds; otherwise as `start_configured`.
    pub fn start_under(
        wrapper: &[&str],
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let binary = env!("CARGO_BIN_EXE_raspivid_mjpeg_server");
        let mut command = Command::new(wrapper.first().copied().unwrap_or(binary));
        if !wrapper.is_empty() {
            command.args(&wrapper[1..]).arg(binary);
        }
        command
            .args(["-p", "0"])
            // Every test reaches it on 127.0.0.1, whatever else it binds.
            .args(if args.contains(&"--bind") { &[][..] } else { &["--bind", "127.0.0.1"][..] })
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("the server binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::clone(&stderr);
        let log_reader = thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                // The line is logged before the port is sent, so a test that
                // has the port also sees the start-up line in the log.
                log.lock().unwrap().push_str(&format!("{line}\n"));
                // "streaming SOURCE on http://ADDRESS:PORT/video.mjpg"; the
                // source may name another address (a relay's upstream).
                let ours = line.rsplit_once(" on http://").and_then(|(_, r)| r.split('/').next());
                if let Some((_, port)) = ours.and_then(|host| host.rsplit_once(':')) {
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("no start-up line: {}", stderr.lock().unwrap()));
        Server { child, port, stderr, log_reader: Some(log_reader) }
    }

    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().unwrap()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        s
    }

    /// A viewer that asks for the stream and never reads: its receive
    /// buffer is small so that it fills within a few frames.
    pub fn stalled_viewer(&self, path: &str) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], self.port)).into()).unwrap();
        let mut s: TcpStream = socket.into();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        s
    }

    /// A whole non-streaming response: status code, head, body. It is read
    /// by its framing, so a connection the server keeps open need not end
    /// first; the connection is then dropped.
    pub fn get(&self, request: &str) -> (u16, String, Vec<u8>) {
        let mut s = self.connect();
        s.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        read_response(&mut reader, request.starts_with("HEAD "))
            .unwrap_or_else(|| panic!("no whole response to {request:?}"))
    }

    pub fn get_path(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.get(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    }

    /// Closes stdin and waits for the server to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        self.wait_keeping_stdin()
    }

    /// Waits for the server to exit by itself, its stdin left open.
    pub fn wait_keeping_stdin(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its stderr is closed now: the reader has the last lines.
                if let Some(reader) = self.log_reader.take() {
                    reader.join().unwrap();
                }
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn stats(&self) -> String {
        String::from_utf8(self.get_path("/stats").2).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds, failing the test after [`STEP`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `value` gives something, failing the test after [`STEP`].
pub fn wait_for_value<T>(what: &str, mut value: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = value() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to its end, killing it (by its PID) past `limit`.
pub fn run(command: &mut Command, limit: Duration) -> std::process::Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("{what} did not finish in {limit:?}; stderr:\n{err}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// A process a test started, killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads one number from the `/stats` JSON.
pub fn json_number(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim().parse().unwrap()
}

/// Reads one whole response (status code, head, body) off a connection
/// that may stay open: the body is as long as its `Content-Length` says
/// (none under HEAD), or lasts until the server closes. None if the
/// connection ends first.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> Option<(u16, String, Vec<u8>)> {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if reader.read_line(&mut head).ok()? == 0 {
            return None;
        }
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let mut body = Vec::new();
    match length {
        _ if head_only => {}
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).ok()?;
        }
        None => {
            reader.read_to_end(&mut body).ok()?;
        }
    }
    let status = head[9..12].parse().unwrap();
    Some((status, head, body))
}

pub fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[end..].to_vec())
}

/// Writes `frames` into stdin, one every `interval`.
pub fn produce(server: &mut Server, frames: &[Vec<u8>], interval: Duration) {
    let start = Instant::now();
    for (n, frame) in frames.iter().enumerate() {
        server.stdin().write_all(frame).unwrap();
        let due = start + interval * (n as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// `count` distinct JPEG frames of the test pattern.
pub fn frames(count: u64) -> Vec<Vec<u8>> {
    let mut canvas = Canvas::new();
    (0..count)
        .map(|n| {
            canvas.draw(n, 1_700_000_000_000 + n);
            canvas.encode().unwrap()
        })
        .collect()
}

/// A streaming viewer that parses parts by their `Content-Length`.
pub struct Viewer {
    reader: BufReader<TcpStream>,
    pub head: String,
}

impl Viewer {
    pub fn open(server: &Server, path: &str) -> Viewer {
        Viewer::connect(server.port, path)
    }

    pub fn connect(port: u16, path: &str) -> Viewer {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(reader.read_line(&mut head).unwrap() > 0, "stream head cut short: {head}");
        }
        let mut delimiter = String::new();
        reader.read_line(&mut delimiter).unwrap();
        assert_eq!(delimiter, "--boundarydonotcross\r\n");
        Viewer { reader, head }
    }

    /// The next part's JPEG, checking the framing around it.
    pub fn next_frame(&mut self) -> Vec<u8> {
        self.try_next_frame().expect("the stream went on")
    }

    /// The next part's JPEG, or None at the end of the stream.
    pub fn try_next_frame(&mut self) -> Option<Vec<u8>> {
        self.try_next_part().map(|(_, jpeg)| jpeg)
    }

    /// The next part's header block and JPEG, or None at the end of the stream.
    pub fn try_next_part(&mut self) -> Option<(String, Vec<u8>)> {
        let mut headers = String::new();
        let mut length = None;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
            headers.push_str(&line);
        }
        let mut jpeg = vec![0; length.expect("Content-Length")];
        self.reader.read_exact(&mut jpeg).ok()?;
        const TRAILER: &[u8] = b"\r\n--boundarydonotcross\r\n";
        let mut trailer = [0; TRAILER.len()];
        self.reader.read_exact(&mut trailer).ok()?;
        assert_eq!(trailer, TRAILER);
        Some((headers, jpeg))
    }

    pub fn close(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}

/// Fails the test unless `program` can be run. Tests that need a program
/// are `#[ignore]`d with the reason, so a plain `cargo test` lists them as
/// ignored; `--include-ignored` (as .ci/run runs them) makes them run, and a
/// missing program is then a failure, never a silent pass.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{program} is missing; .ci/run installs it");
}

/// True when the test runs as root (network namespaces, limits).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
