//! The server as a service: systemd's readiness, watchdog and socket
//! activation, and Prometheus's view of it.

mod common;

use common::Killed;

use common::{frames, produce, Server, STEP};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn temp(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rms-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// A free port on 127.0.0.1, as the kernel picks one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(common::split_response(&raw))
}

#[test]
fn systemd_hears_ready_then_the_watchdog_then_stopping() {
    let path = temp("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(STEP)).unwrap();
    let mut server = Server::start_configured(&[], |c| {
        c.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "200000");
    });
    let next = || {
        let mut buf = [0; 256];
        let n = systemd.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    // Every 100 ms, half the watchdog's 200 ms, from the loop.
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    // SAFETY: SIGTERM to the server this test started.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    let mut said = next();
    while said == "WATCHDOG=1" {
        said = next();
    }
    assert_eq!(said, "STOPPING=1");
    assert!(server.wait_keeping_stdin().success());
    std::fs::remove_file(&path).unwrap();
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian's systemd): run with --include-ignored, as .ci/run does"]
fn a_socket_passed_by_systemd_is_served() {
    common::require("systemd-socket-activate");
    let port = free_port();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), env!("CARGO_BIN_EXE_raspivid_mjpeg_server")])
        .args(["--pattern", "-p", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    // The first connection starts the server on the passed socket (not on
    // port 1, which it was told and could not have bound).
    let deadline = Instant::now() + STEP;
    let (status, head, jpeg) = loop {
        match http_get(port, "/snapshot.jpg") {
            Some((200, head, body)) => break (200, head, body),
            _ => assert!(Instant::now() < deadline, "no snapshot from the activated server"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{head}");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    assert!(child.0.try_wait().unwrap().is_none());
}

#[test]
fn metrics_are_prometheus_text_with_help_and_type() {
    let mut server = Server::start(&[]);
    produce(&mut server, &frames(3), Duration::ZERO);
    common::wait_until("three frames are in", || {
        common::json_number(&server.stats(), "frames_in") == 3.0
    });
    let (status, head, body) = server.get_path("/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\nraspivid_mjpeg_server_input_frames_total 3\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family =
            name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {name}");
        assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {name}");
    }
    // --auth covers it like every other URL.
    let guarded = Server::start(&["--auth", "a:b"]);
    assert_eq!(guarded.get_path("/metrics").0, 401);
}

#[test]
#[ignore = "needs promtool (Debian's prometheus): run with --include-ignored, as .ci/run does"]
fn promtool_finds_nothing_wrong_with_the_metrics() {
    common::require("promtool");
    let mut server = Server::start(&[]);
    produce(&mut server, &frames(2), Duration::ZERO);
    let (_, _, body) = server.get_path("/metrics");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(&body).unwrap();
    let out = check.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");
}

#[test]
#[ignore = "needs prometheus (Debian's prometheus): run with --include-ignored, as .ci/run does"]
fn prometheus_scrapes_the_server_and_reads_its_frame_rate_back() {
    common::require("prometheus");
    let server = Server::start(&["--pattern", "--fps", "10"]);
    let dir = temp("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: camera\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.port
        ),
    )
    .unwrap();
    let web = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _prometheus = Killed(child);
    // The value of the first series an instant query gives, once it gives one.
    let value = |promql: &str| -> Option<f64> {
        let encoded =
            promql.replace(' ', "%20").replace('[', "%5B").replace(']', "%5D").replace('>', "%3E");
        let answer = http_get(web, &format!("/api/v1/query?query={encoded}"))
            .map(|(_, _, body)| String::from_utf8_lossy(&body).into_owned())?;
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[t,"29.9"]}]}}
        let (_, v) = answer.rsplit_once(",\"")?;
        v.split('"').next()?.parse::<f64>().ok()
    };
    let wait = |what: &str, promql: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = value(promql).filter(|&v| v > 0.0) {
                break v;
            }
            assert!(Instant::now() < deadline, "no {what} from Prometheus");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let rate = wait("rate", "rate(raspivid_mjpeg_server_input_frames_total[5s])");
    // At most the pattern's pace, on the server's own clock: the frames it
    // counted over the seconds it had run, both from one scrape. The pattern
    // never runs ahead of its schedule, only behind on a loaded machine; a
    // rate over a few scrapes would follow its catching up afterwards, and
    // Prometheus's extrapolation to the window's ends. A counter that
    // counted twice, or counted something else, is far off.
    let pace = wait(
        "pace",
        "raspivid_mjpeg_server_input_frames_total / raspivid_mjpeg_server_uptime_seconds \
         and on(instance) raspivid_mjpeg_server_uptime_seconds > 3",
    );
    eprintln!("Prometheus: rate {rate} frames/s over 5 s, {pace} frames per second of uptime");
    assert!(pace <= 12.0, "Prometheus reads {pace} frames/s of a 10 fps pattern");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `AUDIT_ARCH_*` of `<linux/audit.h>`, which a seccomp filter checks
/// before it trusts a system call's number.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "arm")]
const AUDIT_ARCH: u32 = 0x4000_0028;

/// Makes `socket(AF_NETLINK, ...)` fail with `EAFNOSUPPORT` in the child,
/// as systemd's `RestrictAddressFamilies=` without `AF_NETLINK` does: a
/// seccomp filter installed between fork and exec.
fn without_netlink(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let statement = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf,
        k,
    };
    let load = |offset: u32| statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // Offsets in `struct seccomp_data`: nr, arch, then args[0] (its low
    // half on a little-endian machine).
    let filter = [
        load(4),
        jump(AUDIT_ARCH, 5),
        load(0),
        jump(libc::SYS_socket as u32, 3),
        load(16),
        jump(libc::AF_NETLINK as u32, 1),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec the closure only makes two prctl
    // calls on memory it owns.
    unsafe {
        command.pre_exec(move || {
            let program =
                libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A viewer's `unread_from` in `/stats`, once it has taken a few frames.
fn unread_from(server: &Server) -> String {
    let mut viewer = common::Viewer::open(server, "/video.mjpg");
    for _ in 0..3 {
        viewer.next_frame();
    }
    let stats = server.stats();
    let key = "\"unread_from\":\"";
    let at = stats.find(key).unwrap_or_else(|| panic!("no viewer's unread_from: {stats}"));
    let rest = &stats[at + key.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn a_sandbox_without_netlink_is_named_once_and_viewers_are_paced_by_their_window() {
    const SAID: &str = "cannot open socket diagnostics (NETLINK_SOCK_DIAG)";
    let args = ["--pattern", "--fps", "30"];
    // As the packaged unit allows it: a viewer on this host is read from
    // its own socket.
    let server = Server::start_with(&args, Stdio::null());
    assert_eq!(unread_from(&server), "socket");
    assert!(!server.stderr.lock().unwrap().contains(SAID));
    // Without it: said once, at start, and every viewer is served and
    // seen by its window.
    let sandboxed = Server::start_configured(&args, |c| {
        c.stdin(Stdio::null());
        without_netlink(c);
    });
    assert_eq!(unread_from(&sandboxed), "window");
    assert_eq!(unread_from(&sandboxed), "window");
    let log = sandboxed.stderr.lock().unwrap().clone();
    assert_eq!(log.matches(SAID).count(), 1, "{log}");
    assert!(log.contains("Address family not supported"), "{log}");
}
