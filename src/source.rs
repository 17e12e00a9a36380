/*!
The source: where frames come from, with the splitter that cuts them out,
turning readiness or its own deadline into frames for the loop.

A polled input (a pipe, a FIFO, a producer thread's pipe, the camera
process's stdout) is read until it would block, at most [`INPUT_READS`]
reads a turn; a regular file is read on a timer, one frame per interval.
Each frame goes to the `publish` callback the moment its EOI is read. The
source says when it ended (stdin's end ends the server) or failed,
when it next needs a turn, and what viewers should see while it has no
frames. With `--exec` it runs the camera, as its [`Supervisor`] says.
*/

use crate::camera::{self, Process};
use crate::input::{self, AtEnd, Input};
use crate::relay::{Relay, Turn};
use crate::splitter::{Counters, Splitter};
use crate::supervisor::{Action, Cause, Notice, Phase, Retry, Supervisor, Timing};
use crate::upstream::Url;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

/// One read from the input: a whole 640x480 frame usually fits, and a read
/// never asks for more than a pipe (64 KiB by default) can hold twice over.
const READ_BUF: usize = 128 * 1024;

/// Reads from the polled input, or the relay's upstream, per turn of the
/// loop (1 MiB): a producer writing flat out must not keep the loop from
/// clients that wait to write.
pub(crate) const INPUT_READS: usize = 8;

/// Reads of a paced file per interval: a file with no frame in it must not
/// hold the loop.
const PACED_READS: usize = 64;

/// A source that may go quiet shows viewers a notice after this long
/// without a frame, or after [`GAPS_BEFORE_NOTICE`] of its own gaps
/// between frames if those are longer, and never later than
/// `--source-timeout` (nor sooner, if that is shorter): clients with read
/// timeouts must get bytes, and a person wants to know, but a time-lapse
/// or low-light camera at 0.2 fps is not down between its frames.
const OFFLINE_AFTER: Duration = Duration::from_secs(2);

/// A silence this many times the last gap between frames is the source
/// being down, not its pace.
const GAPS_BEFORE_NOTICE: u32 = 2;

/// The camera process and what decides its life.
struct Exec {
    command: String,
    /// The guard's, between SIGTERM and SIGKILL.
    kill_timeout: Duration,
    process: Option<Process>,
    supervisor: Supervisor,
    /// Its last stderr line this run: why it failed, as the camera says it
    /// (rpicam-vid's "no cameras available" says more than a status).
    last_line: Option<String>,
}

/// The most of a camera's last stderr line that goes into the reason
/// viewers are shown: the notice picture has room for about this much.
const LAST_LINE_SHOWN: usize = 60;

/// Where the bytes come from.
enum Feed {
    Input(Input),
    Exec(Box<Exec>),
    Relay(Box<Relay>),
}

impl Feed {
    /// What decides when the source runs, for a camera or a relay.
    fn supervisor(&self) -> Option<&Supervisor> {
        match self {
            Feed::Exec(exec) => Some(&exec.supervisor),
            Feed::Relay(relay) => Some(&relay.supervisor),
            Feed::Input(_) => None,
        }
    }

    fn supervisor_mut(&mut self) -> Option<&mut Supervisor> {
        match self {
            Feed::Exec(exec) => Some(&mut exec.supervisor),
            Feed::Relay(relay) => Some(&mut relay.supervisor),
            Feed::Input(_) => None,
        }
    }
}

/// The source for `/stats`.
pub struct Described<'a> {
    pub kind: &'static str,
    pub state: &'static str,
    pub reason: Option<&'a str>,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub last_frame: Option<Instant>,
}

/// What the input did in one turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// The end of the input: the server drains and exits.
    Ended,
}

pub struct Source {
    feed: Feed,
    /// What the input is, for messages ("stdin", a path).
    what: String,
    splitter: Splitter,
    buf: Vec<u8>,
    /// The polled input may hold more than the last turn read.
    pending: bool,
    /// Bytes read from a paced file and not yet fed: `buf[at..len]`.
    paced_at: usize,
    paced_len: usize,
    /// Bytes a paced file gave since it was last rewound.
    paced_pass: u64,
    next_paced: Instant,
    ended: bool,
    warned_oversize: bool,
    max_frame_bytes: usize,
    pub bytes_in: u64,
    last_frame: Option<Instant>,
    /// Show viewers a notice once frames stop: a FIFO or a camera, not
    /// stdin, whose contract is the pipe's.
    notices: bool,
    /// `--source-timeout`: no silence longer than this goes without a notice.
    source_timeout: Duration,
    /// The time between the last two frames.
    last_gap: Duration,
    /// The source's state changed since [`Source::take_changed`].
    changed: bool,
    /// The token the input's events come with.
    token: Token,
}

impl Source {
    pub fn new(input: Input, what: String, max_frame_bytes: usize, now: Instant) -> Source {
        Source::with_feed(Feed::Input(input), what, max_frame_bytes, now)
    }

    /// A source that runs `command` as the camera.
    pub fn exec(command: String, timing: Timing, max_frame_bytes: usize, now: Instant) -> Source {
        let supervisor = Supervisor::new(timing, Retry::Backoff, now);
        let exec = Exec {
            command,
            kill_timeout: timing.kill_timeout,
            process: None,
            supervisor,
            last_line: None,
        };
        let feed = Feed::Exec(Box::new(exec));
        Source::with_feed(feed, "the camera".into(), max_frame_bytes, now)
            .with_notices(timing.source_timeout)
    }

    /// A source that relays the stream at `url`.
    pub fn relay(url: Url, timing: Timing, max_frame_bytes: usize, now: Instant) -> Source {
        let what = url.shown();
        let relay = Relay::new(url, timing, now);
        Source::with_feed(Feed::Relay(Box::new(relay)), what, max_frame_bytes, now)
            .with_notices(timing.source_timeout)
    }

    /// Shows viewers a notice when frames stop (a FIFO, a camera, a relay).
    pub fn with_notices(mut self, source_timeout: Duration) -> Source {
        self.notices = true;
        self.source_timeout = source_timeout;
        self
    }

    /// How long a silence is before viewers are shown a notice: see
    /// [`OFFLINE_AFTER`].
    fn offline_after(&self) -> Duration {
        let pace = self.last_gap * GAPS_BEFORE_NOTICE;
        OFFLINE_AFTER.max(pace).min(self.source_timeout)
    }

    fn with_feed(feed: Feed, what: String, max_frame_bytes: usize, now: Instant) -> Source {
        Source {
            notices: feed.supervisor().is_some(),
            token: Token(0),
            feed,
            what,
            splitter: Splitter::new(max_frame_bytes),
            buf: vec![0; READ_BUF],
            pending: false,
            paced_at: 0,
            paced_len: 0,
            paced_pass: 0,
            next_paced: now,
            ended: false,
            warned_oversize: false,
            max_frame_bytes,
            bytes_in: 0,
            last_frame: None,
            source_timeout: OFFLINE_AFTER,
            last_gap: Duration::ZERO,
            changed: true,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.splitter.counters
    }

    /// Registers a polled input. epoll refuses some files (`/dev/null`,
    /// which systemd gives a service as stdin, directories, some devices):
    /// the error then says which, and what to give instead.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = token;
        let Feed::Input(Input::Polled { file, .. }) = &self.feed else { return Ok(()) };
        registry.register(&mut SourceFd(&file.as_raw_fd()), token, Interest::READABLE).map_err(
            |e| {
                let why = match e.raw_os_error() {
                    Some(libc::EPERM) => unpollable(file),
                    _ => e.to_string(),
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot stream {}: {why}; pipe a camera into stdin, or give --exec CMD, \
                         --input FIFO or --pattern",
                        self.what
                    ),
                )
            },
        )
    }

    /// Stops reading: the input is left as it is, and no more frames come.
    /// A camera is stopped for good, as its supervisor says: see
    /// [`Source::stopped`].
    pub fn stop(&mut self, registry: &Registry) {
        match &mut self.feed {
            Feed::Input(Input::Polled { file, .. }) => {
                let _ = registry.deregister(&mut SourceFd(&file.as_raw_fd()));
            }
            Feed::Input(Input::Paced { .. }) => {}
            Feed::Exec(exec) => {
                if let Some(process) = &mut exec.process {
                    close_pipes(process, registry);
                }
                exec.supervisor.shutdown();
            }
            Feed::Relay(relay) => relay.close(registry),
        }
        self.ended = true;
        self.pending = false;
    }

    /// True once nothing of the input runs any more: after
    /// [`Source::stop`], a camera takes until it has exited.
    pub fn stopped(&self) -> bool {
        match &self.feed {
            Feed::Exec(exec) => exec.process.is_none() && exec.supervisor.finished(),
            _ => self.ended,
        }
    }

    /// When the source next needs a turn without an event: now, if a turn
    /// left bytes unread; a paced file's next frame; never once ended.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.ended {
            None
        } else if self.pending {
            Some(now)
        } else {
            match &self.feed {
                Feed::Input(Input::Paced { .. }) => Some(self.next_paced),
                Feed::Input(Input::Polled { .. }) => None,
                Feed::Exec(exec) => exec.supervisor.deadline(),
                Feed::Relay(relay) => {
                    relay.supervisor.deadline().into_iter().chain(relay.deadline(now)).min()
                }
            }
        }
    }

    /// Reads what the input has for this turn, handing each complete frame
    /// and the time of the read that completed it to `publish`.
    pub fn read(
        &mut self,
        now: Instant,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<Status> {
        if self.ended {
            return Ok(Status::Ended);
        }
        let frames = self.splitter.counters.frames;
        let status = match self.feed {
            Feed::Input(Input::Paced { .. }) if now >= self.next_paced => {
                self.read_paced(now, publish)?
            }
            Feed::Input(Input::Paced { .. }) => Status::Open,
            Feed::Relay(_) => self.read_relay(now, registry, publish),
            _ => self.read_polled(registry, publish)?,
        };
        if self.splitter.counters.frames > frames {
            let at = Instant::now();
            if self.last_frame.is_none_or(|t| at >= t + self.offline_after()) {
                self.changed = true;
            }
            // A silence as long as --source-timeout is an outage, not the
            // source's pace.
            let gap = self.last_frame.map(|last| at.saturating_duration_since(last));
            self.last_gap = gap.filter(|&g| g < self.source_timeout).unwrap_or_default();
            self.last_frame = Some(at);
            if let Some(supervisor) = self.feed.supervisor_mut() {
                supervisor.frame(at);
            }
            if let Feed::Relay(relay) = &mut self.feed {
                relay.streaming();
            }
        }
        if self.splitter.counters.oversize_frames > 0 && !self.warned_oversize {
            self.warned_oversize = true;
            crate::log!(
                "warning: dropped a frame larger than --max-frame-bytes ({} bytes); \
                 later ones are counted in /stats",
                self.max_frame_bytes
            );
        }
        if status == Status::Ended {
            cut_short(&mut self.splitter, "the input");
            self.stop(registry);
        }
        Ok(status)
    }

    /// Reads until the input would block, or [`INPUT_READS`] times.
    fn read_polled(
        &mut self,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<Status> {
        self.pending = false;
        for _ in 0..INPUT_READS {
            let (file, end) = match &mut self.feed {
                Feed::Input(Input::Polled { file, end }) => (file, *end),
                feed => match process(feed).and_then(|p| p.stdout.as_mut()) {
                    Some(stdout) => (stdout, AtEnd::Restart),
                    None => return Ok(Status::Open),
                },
            };
            match input::read_some(file, &mut self.buf) {
                Ok(0) if end == AtEnd::Failed => {
                    return Err(io::Error::other(format!("{} stopped", self.what)));
                }
                Ok(0) if end == AtEnd::Restart => {
                    // The camera closed its output; its exit follows.
                    if let Some(p) = process(&mut self.feed) {
                        if let Some(stdout) = p.stdout.take() {
                            let _ = registry.deregister(&mut SourceFd(&stdout.as_raw_fd()));
                        }
                    }
                    cut_short(&mut self.splitter, "the camera's output");
                    return Ok(Status::Open);
                }
                Ok(0) => return Ok(Status::Ended),
                Ok(n) => {
                    let read_at = Instant::now();
                    self.bytes_in += n as u64;
                    feed(&mut self.splitter, &self.buf[..n], read_at, publish);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Open),
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("reading {}: {e}", self.what)))
                }
            }
        }
        self.pending = true;
        Ok(Status::Open)
    }

    /// A regular file: feeds it until one frame comes out, once per interval.
    fn read_paced(
        &mut self,
        now: Instant,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<Status> {
        let Feed::Input(Input::Paced { interval, .. }) = self.feed else { unreachable!() };
        self.next_paced = (self.next_paced + interval).max(now);
        let frames = self.splitter.counters.frames;
        for _ in 0..PACED_READS {
            if self.paced_at == self.paced_len {
                let Feed::Input(Input::Paced { file, looped, .. }) = &mut self.feed else {
                    unreachable!()
                };
                let n = input::read_some(file, &mut self.buf)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", self.what)))?;
                if n > 0 {
                    self.bytes_in += n as u64;
                    self.paced_pass += n as u64;
                    (self.paced_at, self.paced_len) = (0, n);
                } else if !*looped {
                    return Ok(Status::Ended);
                } else {
                    rewind(file, &self.what, self.paced_pass)?;
                    self.splitter.finish();
                    self.paced_pass = 0;
                    if self.splitter.counters.frames == 0 {
                        return Err(io::Error::other(format!("{} holds no JPEG frame", self.what)));
                    }
                    continue;
                }
            }
            let fed = self.splitter.feed(&self.buf[self.paced_at..self.paced_len]);
            self.paced_at += fed.consumed;
            if let Some(jpeg) = fed.frame {
                publish(jpeg, Instant::now());
            }
            if self.splitter.counters.frames > frames {
                break;
            }
        }
        Ok(Status::Open)
    }
}

impl Source {
    /// Runs what the camera's supervisor asks for now: starts, stops.
    /// Registers a new camera's stdout under the input's token and its
    /// stderr as `errors`.
    pub fn supervise(&mut self, now: Instant, registry: &Registry, errors: Token) {
        if self.ended && !matches!(self.feed, Feed::Exec(_)) {
            return;
        }
        let frames = self.token;
        if let Feed::Relay(relay) = &mut self.feed {
            if let Err(reason) = relay.resolved(registry, frames) {
                self.relay_failed(&reason, now);
            }
            return self.supervise_relay(now, registry);
        }
        let Feed::Exec(exec) = &mut self.feed else { return };
        while let Some(action) = exec.supervisor.poll(now) {
            self.changed = true;
            match action {
                Action::Spawn => {
                    let started = Process::spawn(&exec.command, exec.kill_timeout)
                        .and_then(|p| register_pipes(p, registry, frames, errors));
                    match started {
                        Ok(process) => {
                            crate::log!("camera: started (pid {})", process.pid());
                            exec.process = Some(process);
                            exec.last_line = None;
                            exec.supervisor.spawned(now);
                            self.splitter.finish();
                        }
                        Err(e) => {
                            let reason = format!("cannot start the camera: {e}");
                            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                                exec.supervisor.spawn_deferred(&reason, now);
                            } else {
                                exec.supervisor.spawn_failed(&reason, now);
                            }
                            crate::log!("camera: {reason}");
                        }
                    }
                }
                Action::Stop => {
                    if let Some(process) = &exec.process {
                        if !self.ended {
                            crate::log!("camera: {}; stopping it", exec.supervisor.reason);
                        }
                        process.stop();
                    }
                }
            }
        }
    }

    /// Connects, reconnects and disconnects the relay, as its supervisor says.
    fn supervise_relay(&mut self, now: Instant, registry: &Registry) {
        let token = self.token;
        let Feed::Relay(relay) = &mut self.feed else { return };
        while let Some(action) = relay.supervisor.poll(now) {
            self.changed = true;
            match action {
                Action::Spawn => match relay.start(registry, token) {
                    Ok(()) => {
                        relay.supervisor.spawned(now);
                        self.splitter.finish();
                    }
                    Err(reason) => {
                        relay.tell(&reason);
                        relay.supervisor.spawn_failed(&reason, now);
                    }
                },
                // A connection stops at once: closed is as good as exited.
                Action::Stop => {
                    let stalled = relay.supervisor.phase == Phase::Stopping { cause: Cause::Stall };
                    let reason = relay.supervisor.reason.clone();
                    relay.close(registry);
                    relay.supervisor.exited(&reason, now);
                    // An upstream that answers and sends nothing stalls
                    // again every few seconds: a failure like the others.
                    if stalled {
                        relay.tell(&format!("{reason}; disconnected"));
                    } else {
                        crate::log!("relay: {reason}; disconnected");
                    }
                }
            }
        }
    }

    /// Reads the relay's connection: its body goes to the splitter.
    fn read_relay(
        &mut self,
        now: Instant,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> Status {
        let Feed::Relay(relay) = &mut self.feed else { return Status::Open };
        let (splitter, bytes_in) = (&mut self.splitter, &mut self.bytes_in);
        let turn = relay.ready(registry, self.token, &mut self.buf, &mut |body| {
            *bytes_in += body.len() as u64;
            feed(splitter, body, Instant::now(), publish);
        });
        match turn {
            Turn::Open { more } => self.pending = more,
            Turn::Failed(reason) => self.relay_failed(&reason, now),
        }
        Status::Open
    }

    fn relay_failed(&mut self, reason: &str, now: Instant) {
        cut_short(&mut self.splitter, "the upstream");
        if let Feed::Relay(relay) = &mut self.feed {
            relay.tell(reason);
            relay.supervisor.exited(reason, now);
        }
        self.pending = false;
        self.changed = true;
    }

    /// After SIGCHLD: reaps the camera if it has ended, taking the frames
    /// and lines it left in its pipes first.
    pub fn reap(
        &mut self,
        now: Instant,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<()> {
        let Feed::Exec(exec) = &mut self.feed else { return Ok(()) };
        let Some(status) = exec.process.as_mut().and_then(Process::try_reap) else { return Ok(()) };
        self.read(now, registry, publish)?;
        self.stderr_ready();
        let Feed::Exec(exec) = &mut self.feed else { return Ok(()) };
        if let Some(mut process) = exec.process.take() {
            close_pipes(&mut process, registry);
        }
        cut_short(&mut self.splitter, "the camera");
        let said = exec.last_line.take().map_or(String::new(), |line| format!(": {line}"));
        exec.supervisor.exited(&format!("camera {}{said}", camera::describe(status)), now);
        if !self.ended {
            let reason = &exec.supervisor.reason;
            match exec.supervisor.phase {
                Phase::Idle => crate::log!("camera: stopped ({reason})"),
                _ => crate::log!("camera: {}", camera::describe(status)),
            }
        }
        self.changed = true;
        Ok(())
    }

    /// The camera's pid (its guard's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.feed {
            Feed::Exec(exec) => exec.process.as_ref().map(Process::pid),
            Feed::Input(_) | Feed::Relay(_) => None,
        }
    }

    /// The camera's stderr is readable: its lines go to ours.
    pub fn stderr_ready(&mut self) {
        let Feed::Exec(exec) = &mut self.feed else { return };
        let Some(p) = exec.process.as_mut() else { return };
        let last = &mut exec.last_line;
        p.read_stderr(&mut |line| {
            crate::log!("camera: {line}");
            if !line.trim().is_empty() {
                *last = Some(shown(line.trim()));
            }
        });
    }

    /// Whether somebody watches; with `--on-demand` the camera runs only then.
    pub fn want(&mut self, wanted: bool, now: Instant) {
        if let Some(supervisor) = self.feed.supervisor_mut() {
            supervisor.want(wanted, now);
        }
    }

    /// True once, after the source's state changed.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What viewers should see instead of frames, if anything.
    pub fn notice(&self, now: Instant) -> Option<Notice> {
        if !self.notices || self.ended {
            return None;
        }
        match self.feed.supervisor() {
            Some(supervisor) => supervisor.notice(now, self.offline_after()),
            None => Notice::silence(self.last_frame?, now, self.offline_after()),
        }
    }

    /// True for a source that may have no frames for a while (a camera, a
    /// relay, a FIFO): viewers are shown notices then.
    pub fn can_go_quiet(&self) -> bool {
        self.notices
    }

    /// When a notice would next begin, if frames stop now.
    pub fn notice_due(&self) -> Option<Instant> {
        self.notices.then_some(self.last_frame? + self.offline_after())
    }

    /// True while a snapshot should wait for the camera's next first frame
    /// (it is starting, or about to), rather than be given what there is.
    pub fn starting(&self) -> bool {
        self.feed.supervisor().is_some_and(Supervisor::awaiting_first_frame)
    }

    fn supervised<'a>(
        &self,
        kind: &'static str,
        s: &'a Supervisor,
        pid: Option<u32>,
    ) -> Described<'a> {
        Described {
            kind,
            state: s.state(),
            reason: (s.state() != "online").then_some(s.reason.as_str()),
            pid,
            restarts: s.restarts(),
            last_frame: self.last_frame,
        }
    }

    /// The source, for `/stats`.
    pub fn describe(&self, now: Instant) -> Described<'_> {
        match &self.feed {
            Feed::Exec(exec) => self.supervised("exec", &exec.supervisor, self.pid()),
            Feed::Relay(relay) => self.supervised("relay", &relay.supervisor, None),
            Feed::Input(input) => Described {
                kind: match input {
                    Input::Paced { .. } => "file",
                    Input::Polled { .. } if self.notices => "fifo",
                    Input::Polled { .. } => "pipe",
                },
                state: if self.ended {
                    "stopped"
                } else if self.notice(now).is_some() {
                    "offline"
                } else {
                    "online"
                },
                reason: None,
                pid: None,
                restarts: 0,
                last_frame: self.last_frame,
            },
        }
    }
}

/// The camera process, if the feed runs one and it is running.
fn process(feed: &mut Feed) -> Option<&mut Process> {
    match feed {
        Feed::Exec(exec) => exec.process.as_mut(),
        Feed::Input(_) | Feed::Relay(_) => None,
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

/// Rewinds a looped file, which must have given bytes since the last time:
/// an emptied file is an error, not a busy loop.
fn rewind(file: &mut File, what: &str, pass: u64) -> io::Result<()> {
    if pass == 0 {
        return Err(io::Error::other(format!("{what} is empty: no frames to loop")));
    }
    file.rewind()
}

/// The time between frames at `fps` (`--fps`: a paced file, the test pattern).
pub fn interval(fps: u32) -> Duration {
    Duration::from_secs(1) / fps
}

/// `what` ended: a frame it was in the middle of is dropped, and said so.
fn cut_short(splitter: &mut Splitter, what: &str) {
    if splitter.finish() {
        crate::log!("warning: {what} ended in the middle of a frame; it was dropped");
    }
}

/// Feeds `bytes` to the splitter, publishing every frame it completes.
fn feed(
    splitter: &mut Splitter,
    mut bytes: &[u8],
    read_at: Instant,
    publish: &mut dyn FnMut(Vec<u8>, Instant),
) {
    while !bytes.is_empty() {
        let fed = splitter.feed(bytes);
        bytes = &bytes[fed.consumed..];
        if let Some(jpeg) = fed.frame {
            publish(jpeg, read_at);
        }
    }
}

/// Why epoll refused `file`, in words.
fn unpollable(file: &File) -> String {
    let Ok(meta) = file.metadata() else { return "it cannot be polled".into() };
    let kind = meta.file_type();
    // /dev/null is character device 1:3 on Linux.
    if kind.is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        "it is /dev/null (as under systemd), which has nothing to stream".into()
    } else if kind.is_dir() {
        "it is a directory".into()
    } else if kind.is_char_device() {
        "it is a character device that cannot be polled".into()
    } else {
        "it cannot be polled".into()
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
    use std::io::Write;

    fn paced(bytes: &[u8], looped: bool, t: Instant) -> Source {
        let path =
            std::env::temp_dir().join(format!("paced-{}-{}", std::process::id(), bytes.len()));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let input = Input::Paced { file, interval: interval(100), looped };
        Source::new(input, "the file".into(), 1 << 20, t)
    }

    fn jpeg(fill: u8) -> Vec<u8> {
        // SOI, a one-byte-long-body SOS segment, entropy data, EOI.
        vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00, fill, fill, 0xFF, 0xD9]
    }

    #[test]
    fn a_paced_file_gives_one_frame_per_interval_then_loops() {
        let poll = mio::Poll::new().unwrap();
        let bytes = [jpeg(1), jpeg(2)].concat();
        let t = Instant::now();
        let mut d = paced(&bytes, true, t);
        let mut got = Vec::new();
        for i in 0..5u32 {
            let at = t + interval(100) * i;
            let status = d.read(at, poll.registry(), &mut |f, _| got.push(f[7])).unwrap();
            assert_eq!(status, Status::Open);
            assert_eq!(d.deadline(at), Some(at + interval(100)));
        }
        assert_eq!(got, [1, 2, 1, 2, 1]);
        // Not yet due: nothing read.
        d.read(t, poll.registry(), &mut |_, _| panic!("early")).unwrap();
    }

    #[test]
    fn a_paced_file_that_is_not_looped_ends() {
        let poll = mio::Poll::new().unwrap();
        let t = Instant::now();
        let mut d = paced(&jpeg(1), false, t);
        let mut got = 0;
        assert_eq!(d.read(t, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Open);
        let later = t + Duration::from_secs(1);
        assert_eq!(d.read(later, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Ended);
        assert_eq!((got, d.deadline(later)), (1, None));
    }

    #[test]
    fn a_looped_file_with_no_frame_or_no_bytes_is_an_error_not_a_busy_loop() {
        let poll = mio::Poll::new().unwrap();
        let mut d = paced(b"not a jpeg at all", true, Instant::now());
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file holds no JPEG frame"), "{err}");
        let mut d = paced(b"", true, Instant::now());
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
    }

    #[test]
    fn dev_null_is_named_when_epoll_refuses_it() {
        let poll = mio::Poll::new().unwrap();
        let file = File::open("/dev/null").unwrap();
        let input = Input::Polled { file, end: AtEnd::Exit };
        let mut d = Source::new(input, "stdin".into(), 1 << 20, Instant::now());
        let err = d.register(poll.registry(), Token(0)).unwrap_err().to_string();
        assert!(err.starts_with("cannot stream stdin: it is /dev/null"), "{err}");
        assert!(err.contains("--input") && err.contains("--pattern"), "{err}");
    }
}
