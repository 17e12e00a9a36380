/*!
The camera's guard: this same binary, run again by the server as
`raspivid_mjpeg_server --camera-guard SERVER_PID KILL_MS COMMAND`, standing
between the server and the camera's `/bin/sh -c COMMAND`. It is what makes
the camera never outlive the server, however the server ends (a SIGKILL,
the OOM killer, an abort), and it alone stops the camera:

- The kernel sends it SIGTERM when the server dies (`PR_SET_PDEATHSIG`);
  it asks for that first thing, then checks that the server is still its
  parent, for a server that died before it asked.
- Every process the camera starts is its descendant, and it adopts those
  whose parents die (`PR_SET_CHILD_SUBREAPER`): it reaps them all, and
  finds them to kill them.
- The shell leads a process group of its own, apart from the guard's, so
  that the guard can signal the whole of it without signalling itself.

On [`STOP`] (the server's, or the server's death) the camera's group gets
SIGTERM, and SIGKILL after the kill timeout; on [`STOP_NOW`], SIGKILL at
once. Once the shell has ended, whatever it left running is killed; once
nothing is left, the guard exits as the shell did, with its status or by
its signal, so the server tells the camera's end as before.

Signals are taken synchronously (`sigtimedwait`): the guard has one thread
and no handlers.
*/

use crate::server::ignored;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The hidden first argument that makes the binary a guard; argh never
/// sees it, so it is not in `--help`.
pub const FLAG: &str = "--camera-guard";

/// Asks the guard to stop the camera: SIGTERM to its group, SIGKILL after
/// the kill timeout. The same signal the kernel sends when the server dies.
pub const STOP: libc::c_int = libc::SIGTERM;

/// Asks the guard to kill the camera's group at once.
pub const STOP_NOW: libc::c_int = libc::SIGUSR1;

/// While killing, the guard kills its children again this often until none
/// is left: a process whose parent was just killed becomes the guard's
/// child only then, and no signal says so.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The command that runs `command` as the camera, under a guard that gives
/// it `kill_timeout` between SIGTERM and SIGKILL.
pub fn command(command: &str, kill_timeout: Duration) -> Command {
    // The running binary, even if a newer one has replaced it on disk.
    let mut guard = Command::new("/proc/self/exe");
    if let Some(name) = std::env::args_os().next() {
        guard.arg0(name);
    }
    guard
        .arg(FLAG)
        .arg(std::process::id().to_string())
        .arg(kill_timeout.as_millis().to_string())
        .arg(command);
    guard
}

/// Runs the guard with the arguments after [`FLAG`]; never returns. Must
/// run before any other thread starts: the signal mask is per thread.
pub fn run(args: &[OsString]) -> ! {
    let Some((server, kill_timeout, command)) = parse(args) else {
        say(format_args!("usage: {FLAG} SERVER_PID KILL_MS COMMAND (the server runs this)"));
        std::process::exit(2);
    };
    let signals = blocked_signals();
    // SAFETY: prctl and getppid with valid arguments; no memory is involved.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, STOP as libc::c_ulong) != 0 {
            fail("cannot ask to be told of the server's death")
        }
        if libc::getppid() != server {
            // The server died before the line above: start nothing.
            std::process::exit(1);
        }
        let on: libc::c_ulong = 1;
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on) != 0 {
            fail("cannot become the camera's subreaper")
        }
    }
    // The shell's signal mask is emptied by Command, so the camera gets
    // the signals the guard waits for.
    let mut shell = Command::new("/bin/sh");
    shell.arg("-c").arg(command).process_group(0);
    // SAFETY: getpid has no preconditions.
    let guard = unsafe { libc::getpid() };
    // SAFETY: prctl and getppid are async-signal-safe, and nothing else
    // runs between fork and exec.
    unsafe {
        shell.pre_exec(move || {
            // Should the guard itself be SIGKILLed, the shell (with `exec`,
            // the camera) goes too, for the server to start another.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != guard {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let shell = match shell.spawn() {
        Ok(child) => child.id() as libc::pid_t,
        Err(e) => {
            say(format_args!("cannot start /bin/sh: {e}"));
            std::process::exit(127);
        }
    };
    release_stdout();
    Guard { shell, shell_status: None, kill_timeout, kill_at: None, killing: false }.watch(&signals)
}

/// `SERVER_PID KILL_MS COMMAND`.
fn parse(args: &[OsString]) -> Option<(libc::pid_t, Duration, &OsStr)> {
    let [server, kill_ms, command] = args else { return None };
    let server = server.to_str()?.parse().ok()?;
    let kill_ms = kill_ms.to_str()?.parse().ok()?;
    Some((server, Duration::from_millis(kill_ms), command))
}

/// Blocks, and returns, the signals the guard waits for: the stop
/// requests, the server's death, children ending, and SIGINT and SIGHUP
/// unless they were ignored when it started (they would otherwise end the
/// guard and orphan the camera).
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before use,
    // and sigprocmask gets valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [STOP, STOP_NOW, libc::SIGCHLD] {
            libc::sigaddset(&mut set, signal);
        }
        for signal in [libc::SIGINT, libc::SIGHUP] {
            if !ignored(signal) {
                libc::sigaddset(&mut set, signal);
            }
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            fail("cannot block signals");
        }
        set
    }
}

/// Points the guard's stdout at /dev/null: the frames pipe must end when
/// the camera closes it, not when the guard exits.
fn release_stdout() {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout, which nothing in the guard writes.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

struct Guard {
    /// The shell's pid, which is also its process group's.
    shell: libc::pid_t,
    /// Its wait status, once reaped.
    shell_status: Option<libc::c_int>,
    kill_timeout: Duration,
    /// SIGTERM was sent: SIGKILL is due then.
    kill_at: Option<Instant>,
    /// SIGKILL was sent: everything left is killed until nothing is.
    killing: bool,
}

impl Guard {
    fn watch(mut self, signals: &libc::sigset_t) -> ! {
        loop {
            self.reap();
            if self.killing {
                self.kill(libc::SIGKILL);
            }
            let now = Instant::now();
            let wait = if self.killing {
                Some(SWEEP_EVERY)
            } else {
                self.kill_at.map(|at| at.saturating_duration_since(now))
            };
            match wait_for(signals, wait) {
                Some(STOP_NOW) => self.killing = true,
                Some(libc::SIGCHLD) | None => {}
                // STOP, the server's death, SIGINT or SIGHUP.
                Some(_) if self.kill_at.is_none() && !self.killing => {
                    self.kill(libc::SIGTERM);
                    self.kill_at = Some(now + self.kill_timeout);
                }
                Some(_) => {}
            }
            if self.kill_at.is_some_and(|at| Instant::now() >= at) {
                self.killing = true;
            }
        }
    }

    /// Reaps every child that has ended; exits once the shell has ended
    /// and no child is left.
    fn reap(&mut self) {
        loop {
            // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: waitid with a valid pointer; WNOWAIT leaves the child
            // to be reaped below.
            if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } != 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // No child at all.
                    _ => match self.shell_status {
                        Some(status) => exit_as(status),
                        None => return,
                    },
                }
            }
            // SAFETY: waitid filled in a child's siginfo_t, or left it zero.
            let pid = unsafe { info.si_pid() };
            if pid == 0 {
                return;
            }
            if pid == self.shell {
                // While the shell is unreaped its pid, the group's number,
                // cannot be reused: the group is signalled now or never.
                self.killing = true;
                self.kill(libc::SIGKILL);
            }
            let mut status = 0;
            // SAFETY: waitpid on a child that has ended.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if pid == self.shell {
                self.shell_status = Some(status);
            }
        }
    }

    /// Sends `signal` to the camera's group, while the shell is unreaped,
    /// and to every child of the guard that has left that group.
    fn kill(&self, signal: libc::c_int) {
        if self.shell_status.is_none() {
            // SAFETY: kill on the group the shell leads.
            unsafe { libc::kill(-self.shell, signal) };
        }
        for pid in strays(self.shell) {
            // SAFETY: kill on a child of ours, unreaped, so its pid is its own.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// The guard's children that are not in process group `group`: orphans it
/// adopted, and processes that made groups or sessions of their own.
fn strays(group: libc::pid_t) -> Vec<libc::pid_t> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok());
    pids.filter(|&pid| {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let mut fields = rest.split(' ').skip(1).map(|f| f.parse::<libc::pid_t>());
        matches!((fields.next(), fields.next()), (Some(Ok(ppid)), Some(Ok(pgrp))) if ppid == me && pgrp != group)
    })
    .collect()
}

/// Waits for one of `signals`, at most `limit` (None: for ever); None when
/// the time is up or the wait was interrupted.
fn wait_for(signals: &libc::sigset_t, limit: Option<Duration>) -> Option<libc::c_int> {
    let timeout = limit.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let timeout = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: valid pointers, or null for no timeout and no siginfo.
    let signal = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), timeout) };
    (signal > 0).then_some(signal)
}

/// Exits as the shell did: with its status, or killed by its signal.
fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: setrlimit, signal, sigprocmask and raise with valid
        // arguments, on the guard's one thread.
        unsafe {
            // The camera's crash is not the guard's: no core file of ours.
            let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// A line on stderr, which the server shows as the camera's; a stderr gone
/// with the server is no reason to stop.
fn say(what: std::fmt::Arguments) {
    let _ = writeln!(io::stderr(), "camera guard: {what}");
}

fn fail(what: &str) -> ! {
    say(format_args!("{what}: {}", io::Error::last_os_error()));
    std::process::exit(1);
}
