/*!
The source: where frames come from, with the splitter that cuts them out,
turning readiness or its own deadline into frames for the loop.

Each frame goes to the `publish` callback the moment its EOI is read. The
source says when it ended (stdin's end ends the server) or failed, when it
next needs a turn, and what viewers should see while it has no frames.

What the bytes come from is a feed, one file each, all with the same
small surface ([`Feed`]: start, stop, read, deadline):

- `paced.rs`: a regular file, read on a timer, one frame per interval;
- `polled.rs`: a pipe, a FIFO or a producer thread's pipe, read until it
  would block, at most [`INPUT_READS`] reads a turn;
- `camera_feed.rs`: the camera process (`--exec`), its stdout read as a
  polled pipe;
- `relay_feed.rs`: the relay's connection to another server.

The camera and the relay are run by a [`Supervisor`]: they also share
[`Supervised`], and the one loop over the supervisor's actions,
[`Source::supervise`]. This file keeps what all feeds share: the
splitter, the frames' times, and which notice the source calls for (the
policy, when and how, is `notice.rs`).
*/

mod camera_feed;
mod paced;
mod polled;
mod relay_feed;

pub use camera_feed::CameraFeed;
pub use paced::Paced;
pub use polled::{AtEnd, Polled};
pub use relay_feed::RelayFeed;

use crate::notice::{Notice, Pace, OFFLINE_AFTER};
use crate::splitter::{Counters, Splitter};
use crate::supervisor::{Action, Supervisor, Timing};
use crate::upstream::Url;
use mio::{Registry, Token};
use std::io;
use std::time::{Duration, Instant};

/// One read from a feed: a whole 640x480 frame usually fits, and a read
/// never asks for more than a pipe (64 KiB by default) can hold twice over.
const READ_BUF: usize = 128 * 1024;

/// Reads from a polled feed, or the relay's upstream, per turn of the
/// loop (1 MiB): a producer writing flat out must not keep the loop from
/// clients that wait to write.
pub(crate) const INPUT_READS: usize = 8;

/// The time between frames at `fps` (`--fps`: a paced file, the test pattern).
pub fn interval(fps: u32) -> Duration {
    Duration::from_secs(1) / fps
}

/// What a feed does for the source; the source keeps the splitter, the
/// frames' times and the notices.
trait Feed {
    /// Joins the loop: what it polls comes with `token`. `what` names it
    /// in errors.
    fn start(&mut self, _registry: &Registry, _token: Token, _what: &str) -> io::Result<()> {
        Ok(())
    }

    /// Stops reading: no more frames come.
    fn stop(&mut self, registry: &Registry);

    /// Reads what it has for this turn into `sink`.
    fn read(&mut self, now: Instant, registry: &Registry, sink: &mut Sink) -> io::Result<Turn>;

    /// When it next needs a turn without an event.
    fn deadline(&self, now: Instant) -> Option<Instant>;
}

/// A feed a [`Supervisor`] starts, stops and restarts: the camera, the relay.
trait Supervised {
    fn supervisor(&self) -> &Supervisor;

    fn supervisor_mut(&mut self) -> &mut Supervisor;

    /// A frame came.
    fn frame(&mut self, at: Instant) {
        self.supervisor_mut().frame(at);
    }

    /// Work between the supervisor's actions (the relay's name lookup);
    /// true if the run failed meanwhile.
    fn tend(&mut self, _registry: &Registry, _now: Instant) -> bool {
        false
    }

    /// Starts a run, as the supervisor asked: true if it started, else it
    /// has told the supervisor why not. `errors` is the camera's stderr's
    /// token.
    fn start_run(&mut self, registry: &Registry, errors: Token, now: Instant) -> bool;

    /// Stops the run, as the supervisor asked; `quiet` once the source has
    /// stopped (the server is ending).
    fn stop_run(&mut self, registry: &Registry, now: Instant, quiet: bool);
}

/// What a feed reads into for a turn: the splitter, the byte count and
/// where frames go, lent by the [`Source`].
struct Sink<'a> {
    splitter: &'a mut Splitter,
    bytes_in: &'a mut u64,
    publish: &'a mut dyn FnMut(Vec<u8>, Instant),
    /// The source, in errors: "stdin", a path.
    what: &'a str,
    /// The feed's run ended this turn: the source's state changed.
    changed: bool,
}

impl Sink<'_> {
    /// `n` bytes were read.
    fn took(&mut self, n: usize) {
        *self.bytes_in += n as u64;
    }

    /// Feeds `bytes` read at `read_at`, publishing every frame they complete.
    fn feed(&mut self, mut bytes: &[u8], read_at: Instant) {
        while !bytes.is_empty() {
            let (consumed, _) = self.feed_one(bytes, read_at);
            bytes = &bytes[consumed..];
        }
    }

    /// Feeds `bytes` up to the end of the first frame in them, if any, and
    /// publishes it. Returns the bytes consumed and whether a frame came.
    fn feed_one(&mut self, bytes: &[u8], read_at: Instant) -> (usize, bool) {
        let fed = self.splitter.feed(bytes);
        let frame = fed.frame.is_some();
        if let Some(jpeg) = fed.frame {
            (self.publish)(jpeg, read_at);
        }
        (fed.consumed, frame)
    }

    /// `what` ended: see [`cut_short`].
    fn cut_short(&mut self, what: &str) {
        cut_short(self.splitter, what);
    }
}

/// `what` ended: a frame it was in the middle of is dropped, and said so.
fn cut_short(splitter: &mut Splitter, what: &str) {
    if splitter.finish() {
        crate::log!("warning: {what} ended in the middle of a frame; it was dropped");
    }
}

/// A buffer for one read.
fn read_buf() -> Box<[u8]> {
    vec![0; READ_BUF].into_boxed_slice()
}

/// A read's error, saying what was read.
fn read_error(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("reading {what}: {e}"))
}

/// What a feed's turn did.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Read what there was; `more` if a cap left some unread.
    Open { more: bool },
    /// The end: the server drains and exits.
    Ended,
}

/// The feed, as one of the four.
enum Kind {
    Paced(Paced),
    Polled(Polled),
    Camera(Box<CameraFeed>),
    Relay(Box<RelayFeed>),
}

impl Kind {
    fn feed(&mut self) -> &mut dyn Feed {
        match self {
            Kind::Paced(feed) => feed,
            Kind::Polled(feed) => feed,
            Kind::Camera(feed) => feed.as_mut(),
            Kind::Relay(feed) => feed.as_mut(),
        }
    }

    fn feed_ref(&self) -> &dyn Feed {
        match self {
            Kind::Paced(feed) => feed,
            Kind::Polled(feed) => feed,
            Kind::Camera(feed) => feed.as_ref(),
            Kind::Relay(feed) => feed.as_ref(),
        }
    }

    /// The camera or the relay: what a supervisor runs.
    fn supervised(&mut self) -> Option<&mut dyn Supervised> {
        match self {
            Kind::Camera(feed) => Some(feed.as_mut()),
            Kind::Relay(feed) => Some(feed.as_mut()),
            Kind::Paced(_) | Kind::Polled(_) => None,
        }
    }

    fn supervisor(&self) -> Option<&Supervisor> {
        match self {
            Kind::Camera(feed) => Some(feed.supervisor()),
            Kind::Relay(feed) => Some(feed.supervisor()),
            Kind::Paced(_) | Kind::Polled(_) => None,
        }
    }
}

/// What [`crate::input::open`] opens: a file read at a pace, or something
/// polled.
pub enum Opened {
    Paced(Paced),
    Polled(Polled),
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

/// What the source did in one turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// The end of the source: the server drains and exits.
    Ended,
}

pub struct Source {
    feed: Kind,
    /// What the source is, for messages ("stdin", a path).
    what: String,
    splitter: Splitter,
    /// The feed may hold more than the last turn read.
    pending: bool,
    ended: bool,
    warned_oversize: bool,
    max_frame_bytes: usize,
    pub bytes_in: u64,
    /// The frames' times, and when a silence is an outage.
    pace: Pace,
    /// Show viewers a notice once frames stop: a FIFO or a camera, not
    /// stdin, whose contract is the pipe's.
    notices: bool,
    /// The source's state changed since [`Source::take_changed`].
    changed: bool,
    /// The token the source's events come with.
    token: Token,
}

impl Source {
    /// A source that reads what [`crate::input::open`] opened.
    pub fn new(opened: Opened, what: String, max_frame_bytes: usize) -> Source {
        let feed = match opened {
            Opened::Paced(paced) => Kind::Paced(paced),
            Opened::Polled(polled) => Kind::Polled(polled),
        };
        Source::with_feed(feed, what, max_frame_bytes)
    }

    /// A source that runs `command` as the camera.
    pub fn exec(command: String, timing: Timing, max_frame_bytes: usize, now: Instant) -> Source {
        let feed = Kind::Camera(Box::new(CameraFeed::new(command, timing, now)));
        Source::with_feed(feed, "the camera".into(), max_frame_bytes)
            .with_notices(timing.source_timeout)
    }

    /// A source that relays the stream at `url`.
    pub fn relay(url: Url, timing: Timing, max_frame_bytes: usize, now: Instant) -> Source {
        let what = url.shown();
        let feed = Kind::Relay(Box::new(RelayFeed::new(url, timing, now)));
        Source::with_feed(feed, what, max_frame_bytes).with_notices(timing.source_timeout)
    }

    /// Shows viewers a notice when frames stop (a FIFO, a camera, a relay).
    pub fn with_notices(mut self, source_timeout: Duration) -> Source {
        self.notices = true;
        self.pace = Pace::new(source_timeout);
        self
    }

    fn with_feed(feed: Kind, what: String, max_frame_bytes: usize) -> Source {
        Source {
            notices: feed.supervisor().is_some(),
            token: Token(0),
            feed,
            what,
            splitter: Splitter::new(max_frame_bytes),
            pending: false,
            ended: false,
            warned_oversize: false,
            max_frame_bytes,
            bytes_in: 0,
            pace: Pace::new(OFFLINE_AFTER),
            changed: true,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.splitter.counters
    }

    /// Joins the loop: the feed's events come with `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = token;
        self.feed.feed().start(registry, token, &self.what)
    }

    /// Stops reading: the input is left as it is, and no more frames come.
    /// A camera is stopped for good, as its supervisor says: see
    /// [`Source::stopped`].
    pub fn stop(&mut self, registry: &Registry) {
        self.feed.feed().stop(registry);
        self.ended = true;
        self.pending = false;
    }

    /// True once nothing of the source runs any more: after
    /// [`Source::stop`], a camera takes until it has exited.
    pub fn stopped(&self) -> bool {
        match &self.feed {
            Kind::Camera(camera) => camera.finished(),
            _ => self.ended,
        }
    }

    /// When the source next needs a turn without an event: now, if a turn
    /// left bytes unread; what its feed says (a paced file's next frame, a
    /// supervisor's next step); never once ended.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.ended {
            None
        } else if self.pending {
            Some(now)
        } else {
            self.feed.feed_ref().deadline(now)
        }
    }

    /// Reads what the source has for this turn, handing each complete frame
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
        let mut sink = Sink {
            splitter: &mut self.splitter,
            bytes_in: &mut self.bytes_in,
            publish,
            what: &self.what,
            changed: false,
        };
        let turn = self.feed.feed().read(now, registry, &mut sink);
        self.changed |= sink.changed;
        let turn = turn?;
        self.pending = turn == Turn::Open { more: true };
        if self.splitter.counters.frames > frames {
            let at = Instant::now();
            self.changed |= self.pace.frame(at);
            if let Some(feed) = self.feed.supervised() {
                feed.frame(at);
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
        if turn == Turn::Ended {
            cut_short(&mut self.splitter, "the input");
            self.stop(registry);
            return Ok(Status::Ended);
        }
        Ok(Status::Open)
    }

    /// Runs what the supervisor of a camera or a relay asks for now:
    /// starts, stops. A new camera's stderr is registered as `errors`.
    pub fn supervise(&mut self, now: Instant, registry: &Registry, errors: Token) {
        // A relay is closed at once when the source stops; a camera is
        // stopped through its supervisor, and runs until it has exited.
        if self.ended && !matches!(self.feed, Kind::Camera(_)) {
            return;
        }
        let Some(feed) = self.feed.supervised() else { return };
        if feed.tend(registry, now) {
            self.pending = false;
            self.changed = true;
        }
        while let Some(action) = feed.supervisor_mut().poll(now) {
            self.changed = true;
            match action {
                Action::Spawn => {
                    if feed.start_run(registry, errors, now) {
                        feed.supervisor_mut().spawned(now);
                        self.splitter.finish();
                    }
                }
                Action::Stop => feed.stop_run(registry, now, self.ended),
            }
        }
    }

    /// After SIGCHLD: reaps the camera if it has ended, taking the frames
    /// and lines it left in its pipes first.
    pub fn reap(
        &mut self,
        now: Instant,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<()> {
        let Kind::Camera(camera) = &mut self.feed else { return Ok(()) };
        let Some(status) = camera.try_reap() else { return Ok(()) };
        self.read(now, registry, publish)?;
        self.stderr_ready();
        let Kind::Camera(camera) = &mut self.feed else { return Ok(()) };
        cut_short(&mut self.splitter, "the camera");
        camera.exited(status, registry, now, self.ended);
        self.changed = true;
        Ok(())
    }

    /// The camera's pid (its guard's), while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.feed {
            Kind::Camera(camera) => camera.pid(),
            _ => None,
        }
    }

    /// The camera's stderr is readable: its lines go to ours.
    pub fn stderr_ready(&mut self) {
        if let Kind::Camera(camera) = &mut self.feed {
            camera.stderr_ready();
        }
    }

    /// Whether somebody watches; with `--on-demand` the camera runs only then.
    pub fn want(&mut self, wanted: bool, now: Instant) {
        if let Some(feed) = self.feed.supervised() {
            feed.supervisor_mut().want(wanted, now);
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
            Some(supervisor) => supervisor.notice(now, self.pace.offline_after()),
            None => self.pace.silence(now),
        }
    }

    /// True for a source that may have no frames for a while (a camera, a
    /// relay, a FIFO): viewers are shown notices then.
    pub fn can_go_quiet(&self) -> bool {
        self.notices
    }

    /// When a notice would next begin, if frames stop now.
    pub fn notice_due(&self) -> Option<Instant> {
        self.pace.notice_due().filter(|_| self.notices)
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
            last_frame: self.pace.last_frame(),
        }
    }

    /// The source, for `/stats`.
    pub fn describe(&self, now: Instant) -> Described<'_> {
        match &self.feed {
            Kind::Camera(camera) => self.supervised("exec", camera.supervisor(), camera.pid()),
            Kind::Relay(relay) => self.supervised("relay", relay.supervisor(), None),
            Kind::Paced(_) | Kind::Polled(_) => Described {
                kind: match self.feed {
                    Kind::Paced(_) => "file",
                    _ if self.notices => "fifo",
                    _ => "pipe",
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
                last_frame: self.pace.last_frame(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::File;
    use std::io::Write;

    fn paced(bytes: &[u8], looped: bool) -> Source {
        let path =
            std::env::temp_dir().join(format!("paced-{}-{}", std::process::id(), bytes.len()));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Source::new(
            Opened::Paced(Paced::new(file, interval(100), looped)),
            "the file".into(),
            1 << 20,
        )
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
        let mut d = paced(&bytes, true);
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
        let mut d = paced(&jpeg(1), false);
        let mut got = 0;
        assert_eq!(d.read(t, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Open);
        let later = t + Duration::from_secs(1);
        assert_eq!(d.read(later, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Ended);
        assert_eq!((got, d.deadline(later)), (1, None));
    }

    #[test]
    fn a_looped_file_with_no_frame_or_no_bytes_is_an_error_not_a_busy_loop() {
        let poll = mio::Poll::new().unwrap();
        let mut d = paced(b"not a jpeg at all", true);
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file holds no JPEG frame"), "{err}");
        let mut d = paced(b"", true);
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
    }

    #[test]
    fn dev_null_is_named_when_epoll_refuses_it() {
        let poll = mio::Poll::new().unwrap();
        let file = File::open("/dev/null").unwrap();
        let polled = Opened::Polled(Polled::new(file, AtEnd::Exit));
        let mut d = Source::new(polled, "stdin".into(), 1 << 20);
        let err = d.register(poll.registry(), Token(0)).unwrap_err().to_string();
        assert!(err.starts_with("cannot stream stdin: it is /dev/null"), "{err}");
        assert!(err.contains("--input") && err.contains("--pattern"), "{err}");
    }
}
