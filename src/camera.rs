/*!
The camera process: `/bin/sh -c CMD` in a process group of its own, its
stdout a non-blocking pipe of frames, its stderr copied line by line to
ours. It is stopped by signalling the whole group, when and how the
[`Supervisor`](crate::supervisor::Supervisor) says, and always reaped.
Dropping a [`Process`] kills the group at once and waits for nothing: the
server is going, and the loop must not wait on a camera. The kernel kills
the shell if the server dies without that (`PR_SET_PDEATHSIG`).
*/

use crate::input;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};

/// A camera's stderr line longer than this is cut: a program writing
/// without newlines must not grow our memory.
const MAX_LINE: usize = 1024;

/// Most stderr bytes taken per event, so a chatty camera cannot hold the loop.
const STDERR_PER_EVENT: usize = 64 * 1024;

pub struct Process {
    child: Child,
    /// Frames; None once it has ended.
    pub stdout: Option<File>,
    /// None once it has ended.
    pub stderr: Option<File>,
    line: Vec<u8>,
    reaped: bool,
}

impl Process {
    /// Starts `command` under `/bin/sh -c`.
    pub fn spawn(command: &str) -> io::Result<Process> {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a stop reaches whatever the shell started.
            .process_group(0);
        // SAFETY: between fork and exec only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                // The backstop: die with the server, even if it is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The server may have died before the line above.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the camera's whole process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill on the group this process leads; ESRCH once all are gone.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), signal) };
    }

    /// The exit status, once the camera has ended (reaped then).
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let status = self.child.try_wait().ok().flatten()?;
        self.reaped = true;
        // Whatever the shell left behind in its group goes with it.
        self.signal(libc::SIGKILL);
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
    /// second signal, an error): the whole group is killed now. It is not
    /// waited for; whoever adopts it reaps it.
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
        }
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
    use std::io::Read;
    use std::thread;
    use std::time::{Duration, Instant};

    fn wait_reaped(p: &mut Process) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = p.try_reap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the camera did not end");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn stdout_and_stderr_lines_come_through_and_the_status_is_told() {
        let mut p = Process::spawn("printf 'one\\ntwo' >&2; printf frames; exit 3").unwrap();
        let status = wait_reaped(&mut p);
        assert_eq!(describe(status), "exited with status 3");
        // Non-blocking, and another test's child may hold the pipe's write
        // end for a moment between its fork and its exec: read to the end.
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match p.stdout.as_mut().unwrap().read_to_end(&mut out) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the camera's stdout never ended");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("reading the camera's stdout: {e}"),
            }
        }
        assert_eq!(out, b"frames");
        let mut lines = Vec::new();
        while p.read_stderr(&mut |l| lines.push(l.to_string())) {}
        assert_eq!(lines, ["one", "two"]);
    }

    /// Processes of process group `pgid` that are not zombies.
    fn live_members(pgid: i32) -> usize {
        let stats = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok());
        stats
            .filter(|stat| {
                // After the command's closing parenthesis: state, ppid, pgrp.
                let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
            })
            .count()
    }

    #[test]
    fn dropping_kills_the_whole_group_at_once_even_past_an_ignored_sigterm() {
        let command = "trap '' TERM; sleep 30 & echo ready; sleep 30";
        let mut p = Process::spawn(command).unwrap();
        let pgid = p.pid() as i32;
        // Once it says so, its SIGTERM is ignored.
        let mut ready = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.contains("ready") {
            assert!(Instant::now() < deadline, "the camera never became ready");
            let _ = p.stdout.as_mut().unwrap().read_to_string(&mut ready);
            thread::sleep(Duration::from_millis(5));
        }
        p.signal(libc::SIGTERM);
        drop(p);
        // SIGKILL is delivered, not done: a member ends once it next runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while live_members(pgid) > 0 {
            assert!(Instant::now() < deadline, "a member of the camera's group survived");
            thread::sleep(Duration::from_millis(5));
        }
        // Dropping waited for nothing: the shell is still ours to reap.
        let mut status = 0;
        // SAFETY: waitpid on our own child, which nothing else reaps.
        assert_eq!(unsafe { libc::waitpid(pgid, &mut status, 0) }, pgid);
        assert_eq!(describe(ExitStatus::from_raw(status)), "was killed by signal 9");
    }
}
