//! Scale-out, the short form of bench/scaleout.sh: an origin on its test
//! pattern, two relays of it, HAProxy in front of them with the shipped
//! bench/haproxy.cfg, and 20 viewers through HAProxy, each node in a network
//! namespace of its own on one bridge. The origin must see exactly two
//! connections (one per relay), every viewer must get frames, and when a
//! relay is killed, its viewers must reconnect through HAProxy and get
//! frames again within 5 s.
//!
//! The namespaces (and with them the bridge and the veth pairs) are deleted
//! when the test ends, however it ends; every process it started is killed
//! before that. Needs root, iproute2 and HAProxy, as .ci/run provides
//! (.ci/scaleout-setup.sh installs HAProxy).

mod common;

use common::{json_number, STEP};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const VIEWERS: usize = 20;
const NET: &str = "10.215.0";
const ORIGIN: &str = "10.215.0.1";
const BALANCER: &str = "10.215.0.2";
const RELAYS: [&str; 2] = ["10.215.0.11", "10.215.0.12"];
const PORT: u16 = 8554;
const BALANCER_PORT: u16 = 8080;
/// Viewers of the killed relay must have frames again within this.
const RECOVERY: Duration = Duration::from_secs(5);
/// A viewer waits this long before it connects again.
const RETRY: Duration = Duration::from_millis(100);

/// The namespaces of one run: deleted, with their links, when dropped.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// A hub namespace holding a bridge, and one namespace per node with a
    /// veth pair to the bridge and its address on it.
    fn create(nodes: &[(&str, &str)]) -> Result<Namespaces, String> {
        let pid = std::process::id();
        let hub = format!("rmso{pid}hub");
        ip(&["netns", "add", &hub])?;
        let mut ns = Namespaces { names: vec![hub.clone()] };
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (node, addr)) in nodes.iter().enumerate() {
            let name = ns.name(node);
            ip(&["netns", "add", &name])?;
            ns.names.push(name.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    fn name(&self, node: &str) -> String {
        format!("rmso{}{node}", std::process::id())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A process this test started (`ip netns exec` execs it, so the child is
/// the process itself), killed when dropped.
struct Killed(Child);

impl Killed {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `program` in namespace `ns`, its stderr to `log`.
fn spawn_in(
    ns: &str,
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
    log: &PathBuf,
) -> Killed {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    Killed(command.spawn().unwrap_or_else(|e| panic!("{program}: {e}")))
}

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("the namespace");
    // SAFETY: setns on a valid namespace descriptor; it moves this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// `f` run on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn addr(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(host.parse().unwrap(), port)
}

/// A server's /stats, or "" while it cannot be had.
fn stats(ns: &str, host: &'static str) -> String {
    in_ns(ns, move || {
        let get = || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr(host, PORT), Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET /stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        get().unwrap_or_default()
    })
}

/// The count of streaming viewers in a /stats document.
fn viewers(stats: &str) -> Option<f64> {
    stats.contains("\"streaming\":").then(|| json_number(stats, "streaming"))
}

/// How many servers of HAProxy's backend are UP, from its admin socket.
fn haproxy_up(socket: &PathBuf) -> usize {
    let Ok(mut s) = UnixStream::connect(socket) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut out).is_err() {
        return 0;
    }
    out.lines()
        .filter(|l| l.starts_with("relays,relay"))
        .filter(|l| l.split(',').nth(17) == Some("UP"))
        .count()
}

/// What one viewer saw: when each frame of the source came, and when its
/// stream was lost.
#[derive(Default)]
struct Seen {
    frames: Vec<Instant>,
    losses: Vec<Instant>,
    connects: u32,
}

/// A viewer in the viewers' namespace: reads the stream through HAProxy,
/// and when it ends or fails, connects again after [`RETRY`], until `stop`.
fn viewer(ns: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    enter(&ns);
    let deadline = Instant::now() + 6 * STEP;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        seen.lock().unwrap().connects += 1;
        let had_frames = read_stream(&seen, &stop);
        if had_frames {
            seen.lock().unwrap().losses.push(Instant::now());
        }
        thread::sleep(RETRY);
    }
}

/// One connection: true if it brought frames before it ended.
fn read_stream(seen: &Mutex<Seen>, stop: &AtomicBool) -> bool {
    let to = addr(BALANCER, BALANCER_PORT);
    let Ok(mut socket) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    if write!(socket, "GET /video.mjpg HTTP/1.1\r\nHost: {BALANCER}\r\nUser-Agent: test\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    let mut got = false;
    // The response head, then parts: headers (Content-Length, and
    // X-Source-State on a relay's own notices), a blank line, the JPEG.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 && line == "\r\n" => break,
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let (mut length, mut notice) = (None, false);
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return got,
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            notice |= lower.starts_with("x-source-state:");
            if line == "\r\n" && length.is_some() {
                break;
            }
        }
        let mut jpeg = vec![0; length.unwrap()];
        if reader.read_exact(&mut jpeg).is_err() {
            return got;
        }
        if !notice && jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]) {
            got = true;
            seen.lock().unwrap().frames.push(Instant::now());
        }
    }
    got
}

/// Polls `done` every 20 ms for at most `limit`; false if it never held.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sets the stop flag when dropped, so that the viewers end on any exit.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
#[ignore = "needs root, network namespaces and HAProxy: run with --include-ignored, as .ci/run does"]
fn relays_behind_haproxy_share_one_origin_and_viewers_survive_a_relay_dying() {
    assert!(common::is_root(), "network namespaces need root (ip netns add)");
    common::require("ip");
    common::require("haproxy");
    let viewers_addr = format!("{NET}.100");
    let nodes = [
        ("o", ORIGIN),
        ("r1", RELAYS[0]),
        ("r2", RELAYS[1]),
        ("b", BALANCER),
        ("v", &viewers_addr),
    ];
    // Declared first, dropped last: every process below is gone by then.
    let net = Namespaces::create(&nodes).unwrap_or_else(|e| panic!("network namespaces: {e}"));
    let (ns_o, ns_v) = (net.name("o"), net.name("v"));
    let dir = std::env::temp_dir().join(format!("rms-scaleout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = env!("CARGO_BIN_EXE_raspivid_mjpeg_server");
    let port = PORT.to_string();

    let _origin = spawn_in(
        &ns_o,
        server,
        &["-p", &port, "--pattern", "--fps", "30"],
        &[],
        &dir.join("origin.log"),
    );
    let upstream = format!("http://{ORIGIN}:{PORT}/video.mjpg");
    let mut relays: Vec<Killed> = (0..2)
        .map(|i| {
            spawn_in(
                &net.name(&format!("r{}", i + 1)),
                server,
                &["-p", &port, "--input", &upstream],
                &[],
                &dir.join(format!("relay{}.log", i + 1)),
            )
        })
        .collect();
    for relay in RELAYS {
        let online = poll(STEP, || stats(&ns_v, relay).contains("\"state\":\"online\""));
        assert!(online, "relay {relay} never got the origin's stream: {}", stats(&ns_v, relay));
    }
    let socket = dir.join("haproxy.sock");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/haproxy.cfg");
    let _haproxy = spawn_in(
        &net.name("b"),
        "haproxy",
        &["-f", config, "-db"],
        &[
            ("RELAY1", format!("{}:{PORT}", RELAYS[0])),
            ("RELAY2", format!("{}:{PORT}", RELAYS[1])),
            ("BALANCER_BIND", format!("{BALANCER}:{BALANCER_PORT}")),
            ("HAPROXY_SOCKET", socket.display().to_string()),
        ],
        &dir.join("haproxy.log"),
    );
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(
        poll(STEP, || haproxy_up(&socket) == 2),
        "HAProxy never saw both relays up: {}",
        log("haproxy.log")
    );

    // The viewers, all through HAProxy.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = Stop(stop.clone());
    let seen: Vec<Arc<Mutex<Seen>>> = (0..VIEWERS).map(|_| Arc::default()).collect();
    let threads: Vec<_> = seen
        .iter()
        .map(|s| {
            let (ns, s, stop) = (ns_v.clone(), s.clone(), stop.clone());
            thread::spawn(move || viewer(ns, s, stop))
        })
        .collect();
    let frames_of = |i: usize| seen[i].lock().unwrap().frames.len();
    let streaming = poll(STEP, || (0..VIEWERS).all(|i| frames_of(i) >= 15));
    let counts: Vec<usize> = (0..VIEWERS).map(frames_of).collect();
    assert!(streaming, "not every viewer got frames through HAProxy: {counts:?}");
    let origin = stats(&ns_v, ORIGIN);
    assert_eq!(
        viewers(&origin),
        Some(2.0),
        "the origin should serve the two relays only: {origin}"
    );
    let on = [stats(&ns_v, RELAYS[0]), stats(&ns_v, RELAYS[1])].map(|s| viewers(&s));
    assert_eq!(
        on[0].unwrap_or(0.0) + on[1].unwrap_or(0.0),
        VIEWERS as f64,
        "viewers per relay: {on:?}"
    );
    assert!(on.iter().all(|v| v.unwrap_or(0.0) >= 1.0), "leastconn left a relay idle: {on:?}");

    // Relay 1 dies: its viewers lose their streams and must come back
    // through relay 2 within RECOVERY.
    relays[0].kill();
    let killed = Instant::now();
    let back = |i: usize| seen[i].lock().unwrap().frames.last().is_some_and(|&t| t > killed);
    // A viewer of relay 2 gets its next frame within a frame period; one of
    // relay 1 only after it has noticed the loss and reconnected.
    let recovered = poll(RECOVERY, || (0..VIEWERS).all(back));
    let lost: Vec<usize> =
        (0..VIEWERS).filter(|&i| !seen[i].lock().unwrap().losses.is_empty()).collect();
    let gaps: Vec<u128> = lost
        .iter()
        .map(|&i| {
            let s = seen[i].lock().unwrap();
            let loss = s.losses[0];
            s.frames.iter().find(|&&t| t > loss).map_or(u128::MAX, |&t| (t - loss).as_millis())
        })
        .collect();
    eprintln!(
        "relay1 killed: {} of {VIEWERS} viewers lost their stream; loss to next frame (ms): {gaps:?}",
        lost.len()
    );
    assert!(recovered, "viewers without a frame {RECOVERY:?} after the kill: {:?}", {
        (0..VIEWERS).filter(|&i| !back(i)).collect::<Vec<_>>()
    });
    assert_eq!(
        lost.len() as f64,
        on[0].unwrap(),
        "the viewers of relay 1, and only they, should have lost their stream"
    );
    let survivors = poll(STEP, || viewers(&stats(&ns_v, RELAYS[1])) == Some(VIEWERS as f64));
    assert!(survivors, "relay 2 should now serve everyone: {}", stats(&ns_v, RELAYS[1]));
    let origin = stats(&ns_v, ORIGIN);
    assert_eq!(viewers(&origin), Some(1.0), "the origin should serve relay 2 only: {origin}");

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
