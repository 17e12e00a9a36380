/*!
The camera as a feed: a [`Process`] run as the [`Supervisor`] says, its
stdout read like any polled pipe ([`drain`]), its stderr copied to ours.
Its end is told twice: the pipe's end (the frame in flight is dropped) and
then its exit, on SIGCHLD ([`CameraFeed::exited`]).
*/

use super::polled::{drain, Drained};
use super::{read_buf, Feed, Sink, Supervised, Turn};
use crate::camera::{self, Process};
use crate::supervisor::{Phase, Retry, Supervisor, Timing};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The most of a camera's last stderr line that goes into the reason
/// viewers are shown: the notice picture has room for about this much.
const LAST_LINE_SHOWN: usize = 60;

/// The camera process and what decides its life.
pub struct CameraFeed {
    command: String,
    /// The guard's, between SIGTERM and SIGKILL.
    kill_timeout: Duration,
    process: Option<Process>,
    pub(super) supervisor: Supervisor,
    /// Its last stderr line this run: why it failed, as the camera says it
    /// (rpicam-vid's "no cameras available" says more than a status).
    last_line: Option<String>,
    /// The token its frames come with.
    token: Token,
    buf: Box<[u8]>,
}

impl CameraFeed {
    pub fn new(command: String, timing: Timing, now: Instant) -> CameraFeed {
        CameraFeed {
            command,
            kill_timeout: timing.kill_timeout,
            process: None,
            supervisor: Supervisor::new(timing, Retry::Backoff, now),
            last_line: None,
            token: Token(0),
            buf: read_buf(),
        }
    }

    /// The camera's pid (its guard's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// True once it is down for good, after [`Feed::stop`].
    pub fn finished(&self) -> bool {
        self.process.is_none() && self.supervisor.finished()
    }

    /// Its exit status, if it has ended since the last look.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        self.process.as_mut().and_then(Process::try_reap)
    }

    /// Its stderr is readable: its lines go to ours, and the last one is
    /// kept for the reason viewers are shown.
    pub fn stderr_ready(&mut self) {
        let Some(p) = self.process.as_mut() else { return };
        let last = &mut self.last_line;
        p.read_stderr(&mut |line| {
            crate::log!("camera: {line}");
            if !line.trim().is_empty() {
                *last = Some(shown(line.trim()));
            }
        });
    }

    /// It was reaped with `status`: its pipes are closed and its
    /// supervisor told why, in its own last words if it said any.
    /// `quiet` once the server is ending.
    pub fn exited(&mut self, status: ExitStatus, registry: &Registry, now: Instant, quiet: bool) {
        if let Some(mut process) = self.process.take() {
            close_pipes(&mut process, registry);
        }
        let said = self.last_line.take().map_or(String::new(), |line| format!(": {line}"));
        self.supervisor.exited(&format!("camera {}{said}", camera::describe(status)), now);
        if !quiet {
            let reason = &self.supervisor.reason;
            match self.supervisor.phase {
                Phase::Idle => crate::log!("camera: stopped ({reason})"),
                _ => crate::log!("camera: {}", camera::describe(status)),
            }
        }
    }
}

impl Feed for CameraFeed {
    /// Nothing to register yet: a camera's pipes are, as it starts.
    fn start(&mut self, _registry: &Registry, token: Token, _what: &str) -> io::Result<()> {
        self.token = token;
        Ok(())
    }

    /// Closes its pipes and stops it for good, as its supervisor says: it
    /// is down once reaped.
    fn stop(&mut self, registry: &Registry) {
        if let Some(process) = &mut self.process {
            close_pipes(process, registry);
        }
        self.supervisor.shutdown();
    }

    fn deadline(&self, _now: Instant) -> Option<Instant> {
        self.supervisor.deadline()
    }

    fn read(&mut self, _now: Instant, registry: &Registry, sink: &mut Sink) -> io::Result<Turn> {
        let Some(stdout) = self.process.as_mut().and_then(|p| p.stdout.as_mut()) else {
            return Ok(Turn::Open { more: false });
        };
        match drain(stdout, &mut self.buf, sink)? {
            Drained::Open { more } => Ok(Turn::Open { more }),
            Drained::End => {
                // The camera closed its output; its exit follows.
                if let Some(stdout) = self.process.as_mut().and_then(|p| p.stdout.take()) {
                    let _ = registry.deregister(&mut SourceFd(&stdout.as_raw_fd()));
                }
                sink.cut_short("the camera's output");
                Ok(Turn::Open { more: false })
            }
        }
    }
}

impl Supervised for CameraFeed {
    fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    fn supervisor_mut(&mut self) -> &mut Supervisor {
        &mut self.supervisor
    }

    /// Spawns the camera, its stdout registered under the source's token
    /// and its stderr as `errors`. Out of descriptors, the start waits
    /// without counting as the camera's failure.
    fn start_run(&mut self, registry: &Registry, errors: Token, now: Instant) -> bool {
        let started = Process::spawn(&self.command, self.kill_timeout)
            .and_then(|p| register_pipes(p, registry, self.token, errors));
        match started {
            Ok(process) => {
                crate::log!("camera: started (pid {})", process.pid());
                self.process = Some(process);
                self.last_line = None;
                true
            }
            Err(e) => {
                let reason = format!("cannot start the camera: {e}");
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    self.supervisor.spawn_deferred(&reason, now);
                } else {
                    self.supervisor.spawn_failed(&reason, now);
                }
                crate::log!("camera: {reason}");
                false
            }
        }
    }

    /// Asks the guard to stop the camera; its exit comes on SIGCHLD.
    fn stop_run(&mut self, _registry: &Registry, _now: Instant, quiet: bool) {
        if let Some(process) = &self.process {
            if !quiet {
                crate::log!("camera: {}; stopping it", self.supervisor.reason);
            }
            process.stop();
        }
    }
}

/// `line` cut to [`LAST_LINE_SHOWN`] characters.
fn shown(line: &str) -> String {
    match line.char_indices().nth(LAST_LINE_SHOWN) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

/// Registers a new camera's stdout as `frames` and its stderr as `errors`.
/// A camera that cannot be registered is dropped, which kills it at once.
fn register_pipes(
    process: Process,
    registry: &Registry,
    frames: Token,
    errors: Token,
) -> io::Result<Process> {
    for (pipe, token) in [(&process.stdout, frames), (&process.stderr, errors)] {
        if let Some(pipe) = pipe {
            let fd = pipe.as_raw_fd();
            registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        }
    }
    Ok(process)
}

fn close_pipes(process: &mut Process, registry: &Registry) {
    for pipe in [process.stdout.take(), process.stderr.take()].into_iter().flatten() {
        let _ = registry.deregister(&mut SourceFd(&pipe.as_raw_fd()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stderr_line_is_cut_for_the_picture() {
        assert_eq!(shown("no cameras available"), "no cameras available");
        let long = "é".repeat(LAST_LINE_SHOWN + 5);
        assert_eq!(shown(&long), format!("{}…", "é".repeat(LAST_LINE_SHOWN)));
    }
}
