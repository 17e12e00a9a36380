/*!
What systemd offers a service, without a library: readiness and watchdog
notifications over `$NOTIFY_SOCKET` (`sd_notify(3)`), and a listening
socket passed in as fd 3 (`sd_listen_fds(3)`). Outside systemd both are
absent and everything here does nothing.
*/

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Where to tell systemd how the service is.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WatchdogSec`, when it is set: how often to say "alive".
    pub watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd set up for this process, if any.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None => SocketAddr::from_pathname(path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_nonblocking(true).ok()?;
        // The watchdog applies to this process only if WATCHDOG_PID says so.
        let ours =
            std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours)
            .map(|usec| Duration::from_micros(usec) / 2);
        Some(Notifier { socket, addr, watchdog })
    }

    /// Sends `state` (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…`).
    /// Never blocks; a lost message is systemd's to time out on.
    pub fn notify(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.addr);
    }
}

/// The listening socket systemd passed in (`LISTEN_PID`, `LISTEN_FDS`), if
/// any. The variables are removed, so that no child (the camera) takes it
/// for its own.
pub fn listen_fd() -> io::Result<Option<std::net::TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // SAFETY: no other thread reads the environment this early.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let ours = pid.is_some_and(|p| p == std::process::id().to_string());
    let count: i32 = fds.and_then(|n| n.parse().ok()).unwrap_or(0);
    if !ours || count < 1 {
        return Ok(None);
    }
    if count > 1 {
        return Err(io::Error::other(format!(
            "systemd passed {count} sockets; this server listens on one (one ListenStream=)"
        )));
    }
    // SAFETY: systemd passes fd 3 open, and nothing else in this process owns it.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(LISTEN_FDS_START) };
    listener.set_nonblocking(true)?;
    // SAFETY: fcntl on the descriptor just taken.
    unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let systemd = UnixDatagram::bind(&dir).unwrap();
        let notifier = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&dir).unwrap(),
            watchdog: None,
        };
        notifier.notify("READY=1");
        let mut buf = [0; 64];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&dir).unwrap();
    }
}
