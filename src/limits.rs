/*!
Open files. Nearly every descriptor the server holds is a client's, so at
start it raises its soft `RLIMIT_NOFILE` to the hard limit, as nginx's
`worker_rlimit_nofile` and Go's runtime do (the usual soft limit, 1024,
is the default `--max-clients`), and keeps [`RESERVE`] descriptors out of
the clients' reach, so that the camera can always be restarted.

The camera gets the soft limit the server was started with: a program that
closes, or `select`s on, every descriptor up to its limit must not meet a
million of them.
*/

use std::sync::OnceLock;

/// Descriptors the server opens after it starts, beyond those it was
/// given: the epoll instance, the signal pipe (two), the notice renderer's
/// waker, the listener, systemd's notify socket, the camera's two pipes and
/// the four more its start holds for a moment (the child's ends and Rust's
/// exec-error pipe), a relay's socket and its resolver's, reading /proc,
/// the spare descriptor that answers 503 when accept runs out, and the
/// 503 itself: about 17, with room for what a library opens unasked.
pub const RESERVE: usize = 32;

/// The soft and hard limits the server was started with.
static STARTED_WITH: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises the soft limit on open files to the hard one, and returns how
/// many descriptors clients may have: the limit, less those open now (the
/// standard streams, any a parent left open, systemd's socket) and
/// [`RESERVE`].
pub fn raise() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    let _ = STARTED_WITH.set(limit);
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit with a valid pointer. A hard limit above the
    // kernel's nr_open (RLIM_INFINITY) is refused: the soft one stays.
    let now = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        limit.rlim_cur
    };
    let now = usize::try_from(now).unwrap_or(usize::MAX);
    now.saturating_sub(open()).saturating_sub(RESERVE)
}

/// The limits to give the camera: those the server was started with.
pub fn started_with() -> Option<libc::rlimit> {
    STARTED_WITH.get().copied()
}

/// Descriptors open now.
fn open() -> usize {
    // The directory's own descriptor is among those listed.
    std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count().saturating_sub(1))
}
