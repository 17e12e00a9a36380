/*!
The camera process: `/bin/sh -c CMD` under its [guard](crate::guard), its
stdout a non-blocking pipe of frames, its stderr copied line by line to
ours. The server's child is the guard: the server asks it to stop the
camera when the [`Supervisor`](crate::supervisor::Supervisor) says, and
reaps it; the guard stops, kills and reaps the camera's processes, and does
so too if the server dies. Dropping a [`Process`] asks for the kill at once
and waits for nothing: the server is going, and must not wait on a camera.
*/

use crate::{guard, input, limits};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

/// A camera's stderr line longer than this is cut: a program writing
/// without newlines must not grow our memory.
const MAX_LINE: usize = 1024;

/// Most stderr bytes taken per event, so a chatty camera cannot hold the loop.
const STDERR_PER_EVENT: usize = 64 * 1024;

pub struct Process {
    /// The guard.
    child: Child,
    /// Frames; None once it has ended.
    pub stdout: Option<File>,
    /// None once it has ended.
    pub stderr: Option<File>,
    line: Vec<u8>,
    reaped: bool,
}

impl Process {
    /// Starts `command` under `/bin/sh -c`, under a guard that kills it
    /// `kill_timeout` after a SIGTERM it outlasts.
    pub fn spawn(command: &str, kill_timeout: Duration) -> io::Result<Process> {
        let mut guard = guard::command(command, kill_timeout);
        guard
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a terminal's Ctrl-C is the server's to act on.
            .process_group(0);
        if let Some(limit) = limits::started_with() {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs
            // between fork and exec.
            unsafe {
                guard.pre_exec(move || {
                    // The open-files limit the server was given, not the one
                    // it raised for its clients.
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                    Ok(())
                });
            }
        }
        let mut child = guard.spawn()?;
        let stdout = child.stdout.take().map(|p| nonblocking(p.into()));
        let stderr = child.stderr.take().map(|p| nonblocking(p.into()));
        Ok(Process {
            child,
            stdout: stdout.transpose()?,
            stderr: stderr.transpose()?,
            line: Vec::new(),
            reaped: false,
        })
    }

    /// The guard's pid: SIGTERM to it stops the camera.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the guard to stop the camera: SIGTERM to its group, SIGKILL
    /// after the kill timeout.
    pub fn stop(&self) {
        self.tell(guard::STOP);
    }

    /// Asks the guard to kill the camera's group now.
    pub fn stop_now(&self) {
        self.tell(guard::STOP_NOW);
    }

    fn tell(&self, signal: libc::c_int) {
        if !self.reaped {
            // SAFETY: kill on our own child, unreaped, so its pid is its own.
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        }
    }

    /// The exit status, once the camera has ended (reaped then): the
    /// shell's, as the guard passes it on, once nothing of the camera runs.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let status = self.child.try_wait().ok().flatten()?;
        self.reaped = true;
        Some(status)
    }

    /// Reads the camera's stderr and hands on each whole line (the last
    /// one too, at its end). Returns false once stderr has ended.
    pub fn read_stderr(&mut self, line_out: &mut dyn FnMut(&str)) -> bool {
        let Some(stderr) = &mut self.stderr else { return false };
        let mut buf = [0; 4096];
        let mut taken = 0;
        while taken < STDERR_PER_EVENT {
            let n = match input::read_some(stderr, &mut buf) {
                Ok(0) => {
                    flush_line(&mut self.line, line_out);
                    self.stderr = None;
                    return false;
                }
                Ok(n) => n,
                Err(_) => return true,
            };
            taken += n;
            for &b in &buf[..n] {
                if b == b'\n' {
                    flush_line(&mut self.line, line_out);
                } else if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
            }
        }
        true
    }
}

impl Drop for Process {
    /// The server is going without waiting for the camera to stop (a
    /// second signal, an error): the guard kills it now. The guard is not
    /// waited for; whoever adopts it reaps it.
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn flush_line(line: &mut Vec<u8>, out: &mut dyn FnMut(&str)) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if !text.is_empty() {
        out(text);
    }
    line.clear();
}

fn nonblocking(fd: OwnedFd) -> io::Result<File> {
    let file = File::from(fd);
    input::set_nonblocking(&file)?;
    Ok(file)
}

/// Reaps every child that has ended, except `camera` (the guard's pid),
/// whose status its [`Process`] takes. Only the init of a PID namespace (a
/// container without one) needs this: the orphans of everything in it are
/// given to it, and each would stay a zombie, holding a pid, for ever.
pub fn reap_orphans(camera: Option<u32>) {
    loop {
        // SAFETY: a zeroed siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waitid with a valid pointer; WNOWAIT only looks, so the
        // camera's status is left for its Process.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } != 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // SAFETY: waitid filled in a child's siginfo_t, or left it zero.
        let pid = unsafe { info.si_pid() };
        if pid == 0 || camera == Some(pid as u32) {
            return;
        }
        let mut status = 0;
        // SAFETY: waitpid on a child that has ended and is no Process's.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// An exit status in words: `exited with status 1`, `was killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Spawning needs the server's binary, which runs the guard: the
    // process itself is tested in tests/camera.rs.

    #[test]
    fn a_status_is_told_in_words() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with status 3");
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGKILL)), "was killed by signal 9");
    }

    #[test]
    fn a_line_is_handed_on_without_its_carriage_return_and_empty_ones_are_not() {
        let mut lines = Vec::new();
        for text in [&b"exposure 1/120\r"[..], b"", b"\r"] {
            flush_line(&mut text.to_vec(), &mut |l| lines.push(l.to_string()));
        }
        assert_eq!(lines, ["exposure 1/120"]);
    }
}
