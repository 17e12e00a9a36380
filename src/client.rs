/*!
One HTTP client's state and the output it has yet to send: pure code, no
socket. The viewer set ([`crate::viewers`]) writes what [`Client::iovecs`]
gives, reports with [`Client::wrote`], and asks [`Client::next`] what comes
after; everything a client decides is tested here, state by state.

```text
            request routed: stream                 a write fails, or no
 Request ───────────────────────────▶ Streaming ──progress for --client-timeout──▶ closed
  │ ▲       (head + latest frame)      ▲    │
  │ │                                  └────┘ frame done: the newest, or wait
  │ │ request routed: anything else, or an error status
  └─┼────────────────────────────────▶ Replying ──all sent──▶ Closing ──client's EOF──▶ closed
    │                                   │
    └────── all sent, kept alive ───────┘
```

A whole reply keeps the connection for the next request when the client
lets it (HTTP/1.1 unless it says `Connection: close`; HTTP/1.0 only if it
says `keep-alive`) and the connection has answered fewer than
[`MAX_REQUESTS_PER_CONNECTION`]. Requests pipelined behind it wait in the
client's input, at most [`MAX_INPUT`] bytes, and are answered in order once
the reply is sent. A client that ends its side after a whole request (a
half-close, as `nc -N` does) is still served: its reply, the requests it
pipelined before its end, its stream or its waiting snapshot. A stream
whose client has really gone ends when a write to it fails.

A client's output is a response head it owns (small) plus at most one frame
it shares with every other client (`Rc<Frame>`), and how much of the two it
has sent. A streaming client that is still busy when a new frame arrives
does not take it; once its socket drains, it takes the newest frame. So a
slow client holds one frame, never a queue, and never delays the rest.
*/

use crate::frame::{io_slices, Frame};
use crate::http::{self, Connection, Framing};
use crate::reader::Reader;
use crate::stats::Stats;
use crate::tcp::{self, Backlog, Look};
use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A client whose queue was found nearly empty starts this many frames
/// before it is looked at again: the look costs an `ioctl` or two, which a
/// thousand clients that keep up would otherwise pay on every frame (12 %
/// of the server's CPU). A queue that builds is seen within these frames,
/// and from then on at every frame.
const CHECK_EVERY: u8 = 8;

/// A viewer on this host is looked at on every frame until this many
/// looks in a row have found nothing it had not read: a new viewer that
/// reads slowly is held as soon as a frame waits unread, where the
/// [`CHECK_EVERY`] frames started unlooked at would have queued eight
/// (eight seconds of them for a reader of a frame a second).
const READ_UP_LOOKS: u8 = CHECK_EVERY;

/// A viewer that declined a frame because its path was full looks again
/// after this long: its socket may stay writable throughout, so no event
/// would wake it, and a slow source's next frame may be far off.
pub const QUEUE_RETRY: Duration = Duration::from_millis(10);

/// A viewer on this host held back because it has a frame still to read
/// ([`Reader::holds`]) is looked at again after this long, then after
/// twice as long each time it is still held, [`READ_RETRY_DOUBLINGS`]
/// times at most (to 32 ms): its reads bring no event. A reader of nearly
/// the camera's rate gets the frame it was held from within a few ms of
/// reading; one that has stopped costs a look (`TCP_INFO` and a
/// socket-diagnostics lookup, about 4 µs here) some 30 times a second,
/// until it is closed as stalled ([`Client::expired`]).
const READ_RETRY: Duration = Duration::from_millis(2);
const READ_RETRY_DOUBLINGS: u8 = 4;

/// A kept-alive connection must bring its next whole request within this
/// long of its last reply (or `--request-timeout`, if that is shorter), or
/// it is closed. Pollers such as Mainsail's and Fluidd's ask many times a
/// second, so this ends only connections nobody uses, which count towards
/// `--max-clients` while they wait; 5 s is Apache's `KeepAliveTimeout`.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);

/// Requests one connection may make; the reply to the last says
/// `Connection: close`. So a poller's connection is opened again now and
/// then, and a load balancer in front of several relays spreads it anew;
/// one connect per 100 snapshots costs little (Apache's
/// `MaxKeepAliveRequests` is also 100).
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 100;

/// Bytes kept of what a client has sent and is not answered yet: the
/// request being read, or on a kept-alive connection the requests pipelined
/// behind the one being answered. One request's worth, since a request must
/// fit whole to be parsed; more waits in the kernel's socket buffer, where
/// TCP's flow control holds the sender back.
pub const MAX_INPUT: usize = http::MAX_REQUEST_BYTES;

/// A viewer whose window shows it behind is given this many times what a
/// reader of one frame a second takes to read its full buffer
/// ([`Reader::full_buffer_time`]), when that is more than
/// `--client-timeout`: room for reads in bursts, and for the backoff of
/// our probes of a closed window.
const PATIENCE: u32 = 2;

/// ... but never more than this: a viewer that has stopped reading holds a
/// descriptor, a frame and its socket's buffers no longer.
const MAX_PATIENCE: Duration = Duration::from_secs(60);

pub enum State {
    /// Waiting for a whole request in the client's input, since the
    /// connection was accepted or its last reply was sent.
    Request { since: Instant },
    /// Sending a whole response; then the connection closes, or waits for
    /// the next request.
    Replying { connection: Connection },
    /// Sending frames.
    Streaming(Box<Stream>),
    /// A snapshot waiting for the camera's first frame, until its retry
    /// deadline (`router::SNAPSHOT_WAIT`).
    Awaiting { head_only: bool, connection: Connection },
    /// The reply is sent and our side shut down; waiting for the client to
    /// close, so that closing first does not reset the connection under a
    /// reply it has not read yet.
    Closing { since: Instant },
}

pub struct Stream {
    pub framing: Framing,
    /// The sequence number of the last frame this client started.
    pub last_seq: u64,
    /// `?fps=N`: the pace, and the earliest start of the next frame.
    rate: Option<Rate>,
    /// Why a newer frame than `last_seq` is held back, if one is.
    held: Option<Hold>,
    pub frames: u64,
    /// Frames published that this viewer never started.
    pub skipped: u64,
    /// Of those, the ones it skipped because its application read slowly
    /// (not because its link was slow or its `?fps` said so).
    pub skipped_reading: u64,
    /// How far behind its application reads.
    pub reader: Reader,
    /// When it last started a frame, for its reader's pace.
    started_at: Instant,
    /// The reader held a frame back since this viewer last started one.
    reader_held: bool,
    /// Looks in a row that found it held by [`Hold::Reader`]: the next
    /// comes after [`READ_RETRY`] doubled as many times.
    read_holds: u8,
    /// Frames sent in the last second, and the count when it began.
    pub fps: u64,
    pub frames_at_tick: u64,
}

/// Why an idle viewer holds off the newest frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Its `?fps` cap: not a stall, the viewer asked for it.
    Rate,
    /// Its path is full ([`Backlog::Full`]): a stall if it lasts.
    Queue,
    /// On this host, it has a frame still to read ([`Reader::holds`]): a
    /// stall if it lasts.
    Reader,
}

/// `?fps=N` as a schedule rather than a minimum gap, so that a cap of 20 on a
/// 30 fps source gives 20 fps, not every other frame (15).
#[derive(Clone, Copy)]
struct Rate {
    interval: Duration,
    /// When the next frame is due; none before the viewer's first frame, so
    /// that the schedule starts with that frame, not when the viewer joined
    /// (which, before any frame exists, may be long before).
    next: Option<Instant>,
}

impl Rate {
    /// A frame this early is still taken: arrival jitter must not cost a
    /// frame when the source runs at the cap.
    fn slack(&self) -> Duration {
        self.interval / 4
    }

    /// When to look again at a frame offered at `now`, if it must wait:
    /// after the next one is due, so that a source as fast as the cap is
    /// served by its own frames, and the last frame before a pause still
    /// goes out.
    fn wait(&self, now: Instant) -> Option<Instant> {
        let next = self.next?;
        (now + self.slack() < next).then(|| next + self.interval / 2)
    }

    fn took(&mut self, now: Instant) {
        self.next = Some(match self.next {
            Some(next) => (next + self.interval).max(now),
            None => now + self.interval,
        });
    }
}

/// What follows the response head in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    /// A part of the multipart stream.
    Part(Framing),
    /// The bare JPEG (a snapshot).
    Jpeg,
}

/// Bytes to send: a head the client owns, then maybe a shared frame.
#[derive(Default)]
struct Output {
    head: Vec<u8>,
    frame: Option<(Rc<Frame>, Body)>,
    sent: usize,
}

impl Output {
    fn pieces(&self) -> [&[u8]; 4] {
        match &self.frame {
            Some((f, Body::Part(framing))) => {
                let [a, b, c] = f.pieces(*framing);
                [&self.head, a, b, c]
            }
            Some((f, Body::Jpeg)) => [&self.head, &f.jpeg, &[], &[]],
            None => [&self.head, &[], &[], &[]],
        }
    }

    fn len(&self) -> usize {
        self.pieces().iter().map(|p| p.len()).sum()
    }

    fn remaining(&self) -> usize {
        self.len() - self.sent
    }
}

/// What a client waits for after [`Client::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Bytes are ready: write them.
    Write,
    /// A streaming viewer with nothing to send: the next frame wakes it.
    Idle,
    /// A streaming viewer holding off the newest frame: look again then
    /// (or at the next frame).
    Retry(Instant),
    /// The reply is sent: shut down our side of the socket.
    Shutdown,
    /// The reply is sent and the connection kept: answer the next request,
    /// which may have come already.
    Request,
    /// Only the client can move things on (its request, or its close).
    Read,
}

pub struct Client {
    pub state: State,
    /// What the client sent that is not answered yet, at most [`MAX_INPUT`].
    input: Vec<u8>,
    /// Requests answered on this connection.
    requests: u32,
    /// The client has ended its side (closed, or half-closed): no request
    /// can follow what is in its input.
    pub ended: bool,
    /// `--max-queued-bytes`: how much may be ahead of a frame on the path,
    /// and unread by the application.
    max_queued: usize,
    pub accepted: Instant,
    /// When the client last finished or was given a frame or a reply, or
    /// its kernel took bytes held on the path: bytes trickled into its
    /// socket are no progress, or a client could hold a frame for ever.
    pub last_progress: Instant,
    /// The peer's `bytes_acked` at the last look.
    acked: u64,
    /// For a viewer on this host, the bytes its application had read at
    /// the last look.
    read: u64,
    pub bytes_sent: u64,
    out: Output,
    /// False for the frame a viewer is given on joining: it was read before
    /// the viewer came, so its age is no measure of delivery latency.
    timed: bool,
    /// The socket was full during the current frame: look at the kernel's
    /// queue before starting the next.
    blocked: bool,
    /// Frames started since the queue was last looked at.
    unchecked: u8,
    /// Looks in a row that found a viewer on this host with nothing unread.
    read_up: u8,
}

impl Client {
    pub fn new(now: Instant, max_queued: usize) -> Client {
        Client {
            state: State::Request { since: now },
            input: Vec::new(),
            requests: 0,
            ended: false,
            max_queued,
            accepted: now,
            last_progress: now,
            acked: 0,
            read: 0,
            bytes_sent: 0,
            out: Output::default(),
            timed: false,
            blocked: false,
            unchecked: CHECK_EVERY,
            read_up: 0,
        }
    }

    /// True when nothing is waiting to be sent.
    pub fn idle(&self) -> bool {
        self.out.remaining() == 0
    }

    /// Bytes of the current output not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.remaining()
    }

    /// The frame this client holds while it sends it: its number and size.
    pub fn holding(&self) -> Option<(u64, usize)> {
        self.out.frame.as_ref().map(|(f, _)| (f.seq, f.jpeg.len()))
    }

    /// How many more bytes of what the client sends to keep for its next
    /// request, or None when they are thrown away (during a stream, or a
    /// reply after which the connection closes).
    pub fn input_room(&self) -> Option<usize> {
        let keeps = match self.state {
            State::Request { .. } => true,
            State::Replying { connection } | State::Awaiting { connection, .. } => {
                connection == Connection::KeepAlive
            }
            State::Streaming(_) | State::Closing { .. } => false,
        };
        keeps.then(|| MAX_INPUT.saturating_sub(self.input.len()))
    }

    /// Keeps bytes the client sent, within [`Client::input_room`].
    pub fn received(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.input_room().unwrap_or(0));
        self.input.extend_from_slice(bytes);
    }

    /// What the client has sent towards its next request.
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// Takes the request about to be answered out of the input; `message`
    /// says where it ends, and whether the client lets the connection stay
    /// open after it. Returns what the reply should do to the connection.
    pub fn answering(&mut self, message: Option<http::Message>) -> Connection {
        self.requests += 1;
        match message {
            Some(m) if m.keep_alive && self.requests < MAX_REQUESTS_PER_CONNECTION => {
                self.input.drain(..m.len);
                Connection::KeepAlive
            }
            _ => {
                self.input = Vec::new();
                Connection::Close
            }
        }
    }

    /// True when the client has ended its side and is owed nothing more:
    /// no whole request is left to answer, or its reply is sent. A client
    /// may end its side as soon as its request is sent (`nc -N`, ncat, some
    /// proxies), so its end never ends a reply, a stream or a waiting
    /// snapshot: a stream whose client has really gone ends when a write
    /// to it fails.
    pub fn finished(&self) -> bool {
        self.ended && matches!(self.state, State::Request { .. } | State::Closing { .. })
    }

    /// True for a kept-alive connection that has sent nothing of a next
    /// request: when its wait ends, the client did nothing wrong.
    pub fn between_requests(&self) -> bool {
        matches!(self.state, State::Request { .. }) && self.requests > 0 && self.input.is_empty()
    }

    /// Waits for the camera's first frame, to answer a snapshot with it.
    pub fn await_frame(&mut self, head_only: bool, connection: Connection) {
        self.state = State::Awaiting { head_only, connection };
    }

    /// Sends `head` (and a snapshot's JPEG), then closes the connection or
    /// waits for the next request, as `connection` says.
    pub fn reply(
        &mut self,
        head: Vec<u8>,
        jpeg: Option<Rc<Frame>>,
        connection: Connection,
        now: Instant,
    ) {
        if connection == Connection::Close {
            // What the client sends from now on is thrown away.
            self.input = Vec::new();
        }
        self.state = State::Replying { connection };
        self.last_progress = now;
        self.out = Output { head, frame: jpeg.map(|f| (f, Body::Jpeg)), sent: 0 };
    }

    /// Sends the stream's head, then frames newer than `latest`, starting
    /// with `latest` itself if `send_latest`. A new viewer gets the latest
    /// frame at once: OpenCV's open otherwise waits for frames to analyse,
    /// for many seconds on a slow stream. Not so a frame left from a camera
    /// that is starting again: it may be minutes old.
    pub fn stream(
        &mut self,
        head: Vec<u8>,
        framing: Framing,
        frame_interval: Option<Duration>,
        latest: Option<&Rc<Frame>>,
        send_latest: bool,
        now: Instant,
    ) {
        let mut rate = frame_interval.map(|interval| Rate { interval, next: None });
        let sent = latest.filter(|_| send_latest);
        if let (Some(rate), Some(_)) = (&mut rate, sent) {
            rate.took(now);
        }
        self.state = State::Streaming(Box::new(Stream {
            framing,
            last_seq: latest.map_or(0, |f| f.seq),
            rate,
            held: None,
            frames: 0,
            skipped: 0,
            skipped_reading: 0,
            reader: Reader::default(),
            started_at: now,
            reader_held: false,
            read_holds: 0,
            fps: 0,
            frames_at_tick: 0,
        }));
        let frame = sent.map(|f| (Rc::clone(f), Body::Part(framing)));
        self.out = Output { head, frame, sent: 0 };
        self.timed = false;
        // A stream never ends: anything pipelined behind it is thrown away.
        self.input = Vec::new();
    }

    /// Fills `iov` with what remains to be sent; returns how many slices.
    pub fn iovecs<'a>(&'a self, iov: &mut [IoSlice<'a>; 4]) -> usize {
        io_slices(&self.out.pieces(), self.out.sent, iov)
    }

    /// Records that the socket took `n` more bytes.
    pub fn wrote(&mut self, n: usize) {
        debug_assert!(n <= self.out.remaining());
        self.out.sent += n;
        self.bytes_sent += n as u64;
    }

    /// Records that the socket was full before the output was.
    pub fn would_block(&mut self) {
        self.blocked = true;
    }

    /// Decides what the client does once its output has been written:
    /// finishes the frame (its latency goes to `stats`), then, for a
    /// viewer, starts the newest frame unless its `?fps` pace, its path
    /// or its reader say wait. `look` asks the kernel about the socket, and
    /// is called only when a look is due.
    pub fn next(
        &mut self,
        latest: Option<&Rc<Frame>>,
        now: Instant,
        stats: &mut Stats,
        look: impl FnOnce() -> Option<Look>,
    ) -> Next {
        if !self.idle() {
            return Next::Write;
        }
        if let Some((frame, Body::Part(_))) = self.out.frame.take() {
            // Now, not `now`: the clients served before this one took time.
            let done = Instant::now();
            stats.delivered(self.timed.then(|| done.saturating_duration_since(frame.read_at)));
            if let State::Streaming(s) = &mut self.state {
                s.frames += 1;
                self.last_progress = now;
            }
        }
        self.out = Output::default();
        match &mut self.state {
            State::Request { .. } | State::Closing { .. } | State::Awaiting { .. } => Next::Read,
            State::Replying { connection: Connection::Close } => {
                self.state = State::Closing { since: now };
                Next::Shutdown
            }
            State::Replying { connection: Connection::KeepAlive } => {
                self.state = State::Request { since: now };
                self.last_progress = now;
                Next::Request
            }
            State::Streaming(s) => {
                let held_for_reads = s.held.take() == Some(Hold::Reader);
                let Some(frame) = latest.filter(|f| f.seq > s.last_seq) else {
                    return Next::Idle;
                };
                if let Some(at) = s.rate.and_then(|r| r.wait(now)) {
                    s.held = Some(Hold::Rate);
                    return Next::Retry(at);
                }
                // The pace its reads showed, once learned: a schedule, as
                // `?fps` is, and no stall.
                if let Some(at) = s.reader.next_start(s.started_at).filter(|&at| at > now) {
                    s.held = Some(Hold::Rate);
                    s.reader_held = true;
                    return Next::Retry(at);
                }
                let due = self.unchecked >= CHECK_EVERY || held_for_reads;
                if self.blocked || due || s.reader.behind(now) {
                    let Some(look) = look() else {
                        return self.start(frame, now, stats);
                    };
                    if look.acked > self.acked {
                        // The link moves what waits on it: not a stall.
                        self.acked = look.acked;
                        self.last_progress = now;
                    }
                    if let Some(read) = look.read_here().filter(|&read| read > self.read) {
                        // Its application reads: not a stall.
                        self.read = read;
                        self.last_progress = now;
                    }
                    s.reader.observe(&look, frame.jpeg.len() as u64, frame.seq, now);
                    match tcp::backlog(&look, self.max_queued) {
                        Backlog::Full => {
                            s.held = Some(Hold::Queue);
                            return Next::Retry(now + QUEUE_RETRY);
                        }
                        Backlog::Some => self.unchecked = CHECK_EVERY,
                        Backlog::Light => self.unchecked = 0,
                    }
                    if let Some(unread) = look.unread_here() {
                        self.read_up =
                            if unread == 0 { (self.read_up + 1).min(READ_UP_LOOKS) } else { 0 };
                        if self.read_up < READ_UP_LOOKS {
                            self.unchecked = CHECK_EVERY;
                        }
                    }
                    if Reader::holds(&look, frame.jpeg.len() as u64) {
                        s.held = Some(Hold::Reader);
                        s.reader_held = true;
                        let wait = READ_RETRY * (1 << s.read_holds);
                        s.read_holds = (s.read_holds + 1).min(READ_RETRY_DOUBLINGS);
                        return Next::Retry(now + wait);
                    }
                } else {
                    self.unchecked += 1;
                }
                self.start(frame, now, stats)
            }
        }
    }

    /// Starts `frame` for a streaming viewer: counts what it skipped, and
    /// why.
    fn start(&mut self, frame: &Rc<Frame>, now: Instant, stats: &mut Stats) -> Next {
        let State::Streaming(s) = &mut self.state else { return Next::Read };
        self.blocked = false;
        let skipped = frame.seq - s.last_seq - 1;
        s.skipped += skipped;
        stats.frames_skipped += skipped;
        if std::mem::take(&mut s.reader_held) {
            s.skipped_reading += skipped;
            stats.frames_skipped_reading += skipped;
        }
        s.last_seq = frame.seq;
        if let Some(rate) = &mut s.rate {
            rate.took(now);
        }
        s.started_at = now;
        s.read_holds = 0;
        self.out.frame = Some((Rc::clone(frame), Body::Part(s.framing)));
        self.timed = frame.live();
        // A frame to send counts as progress: the client-timeout measures
        // how long a client sits on unsent data.
        self.last_progress = now;
        Next::Write
    }

    /// Frames a viewer has not taken and never will: those between the
    /// last it started and `latest_seq` (which it may still take).
    pub fn pending_skips(&self, latest_seq: u64) -> u64 {
        match &self.state {
            State::Streaming(s) => latest_seq.saturating_sub(s.last_seq + 1),
            _ => 0,
        }
    }

    /// True when the client has overstayed: no whole request by `request`
    /// (by [`KEEP_ALIVE_IDLE`], if shorter, after a kept-alive reply), a
    /// reply or frame it has not taken for `client` (a frame held back
    /// only by the viewer's own `?fps` is not waiting for it; a viewer
    /// whose window `look` shows behind is given [`PATIENCE`] times what a
    /// reader of a frame a second takes to read its full buffer, up to
    /// [`MAX_PATIENCE`]), or no close within `linger` of its reply. `look`
    /// is called only for a viewer past `client`.
    pub fn expired(
        &self,
        now: Instant,
        request: Duration,
        client: Duration,
        linger: Duration,
        look: impl FnOnce() -> Option<Look>,
    ) -> bool {
        let waited = now.duration_since(self.last_progress);
        let stuck = waited >= client;
        match &self.state {
            State::Request { since } => {
                let limit = if self.requests == 0 { request } else { request.min(KEEP_ALIVE_IDLE) };
                now.duration_since(*since) >= limit
            }
            State::Closing { since } => now.duration_since(*since) >= linger,
            State::Replying { .. } => stuck,
            // Its own deadline answers it.
            State::Awaiting { .. } => false,
            State::Streaming(s) => {
                let stalled = matches!(s.held, Some(Hold::Queue | Hold::Reader));
                if !stuck || (self.idle() && !stalled) {
                    return false;
                }
                let Some(full) = look().and_then(|look| s.reader.full_buffer_time(&look)) else {
                    return true;
                };
                waited >= (full * PATIENCE).min(MAX_PATIENCE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Framing::{AdvanceHeaders, Length};

    const MAX_QUEUED: usize = 16 * 1024;

    fn frame(seq: u64, len: usize) -> Rc<Frame> {
        let mut jpeg = vec![0xAB; len];
        jpeg[..2].copy_from_slice(&[0xFF, 0xD8]);
        Rc::new(Frame::new(seq, jpeg, Instant::now(), 1_000_000, ""))
    }

    fn bytes(c: &Client) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 4];
        let n = c.iovecs(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    /// Writes everything, `chunk` bytes at a time, as a socket would take it.
    fn drain(c: &mut Client, chunk: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while !c.idle() {
            let b = bytes(c);
            let k = chunk.min(b.len());
            all.extend_from_slice(&b[..k]);
            c.wrote(k);
        }
        all
    }

    /// A socket with nothing queued and a wide-open window.
    fn light() -> Option<Look> {
        Some(Look { window: Some(1 << 20), ..Look::default() })
    }

    /// A socket with `n` bytes unsent.
    fn unsent(n: u64) -> Option<Look> {
        Some(Look { unsent: n, ..light().unwrap() })
    }

    // The Request state.

    #[test]
    fn a_new_client_reads_its_request_and_has_nothing_to_send() {
        let t = Instant::now();
        let mut c = Client::new(t, MAX_QUEUED);
        assert!(c.idle());
        assert_eq!(c.next(None, t, &mut Stats::new(t), light), Next::Read);
        assert!(!c.expired(t + Duration::from_secs(9), secs(10), secs(10), secs(2), no_look));
        assert!(c.expired(t + Duration::from_secs(10), secs(10), secs(10), secs(2), no_look));
    }

    // The Replying and Closing states.

    #[test]
    fn a_reply_goes_out_in_pieces_then_shuts_down_then_lingers() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = Client::new(t, MAX_QUEUED);
        let snap = frame(3, 100);
        c.reply(b"HEAD\r\n\r\n".to_vec(), Some(Rc::clone(&snap)), Connection::Close, t);
        assert_eq!(c.queued_bytes(), 8 + 100);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Write);
        let sent = drain(&mut c, 7);
        assert_eq!(&sent[..8], b"HEAD\r\n\r\n");
        assert_eq!(&sent[8..], &snap.jpeg[..]);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Shutdown);
        assert!(matches!(c.state, State::Closing { .. }));
        // A snapshot is not a delivered stream frame.
        assert_eq!(stats.frames_out, 0);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Read);
        assert!(!c.expired(t + secs(1), secs(10), secs(10), secs(2), no_look));
        assert!(c.expired(t + secs(2), secs(10), secs(10), secs(2), no_look));
    }

    #[test]
    fn a_reply_the_client_does_not_take_expires_at_the_client_timeout() {
        let t = Instant::now();
        let mut c = Client::new(t, MAX_QUEUED);
        c.reply(vec![b'x'; 10], None, Connection::Close, t);
        // Bytes trickled out are no progress: the reply must be done in time.
        c.wrote(4);
        c.would_block();
        assert!(!c.expired(t + secs(9), secs(10), secs(10), secs(2), no_look));
        assert!(c.expired(t + secs(10), secs(10), secs(10), secs(2), no_look));
    }

    // Keep-alive: the Replying state back to Request.

    /// A client that has sent `input`, with its first request answered by
    /// `reply` (`connection` as the parse and the cap allow).
    fn answered(input: &[u8], reply: &[u8], t: Instant) -> Client {
        let mut c = Client::new(t, MAX_QUEUED);
        c.received(input);
        let (_, message) = http::parse_message(c.input());
        let connection = c.answering(message);
        c.reply(reply.to_vec(), None, connection, t);
        c
    }

    #[test]
    fn a_kept_alive_reply_goes_back_to_reading_with_the_pipelined_requests_kept() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let next = b"GET /stats HTTP/1.1\r\n\r\nGET /";
        let c = &mut answered(&[&b"GET / HTTP/1.1\r\n\r\n"[..], next].concat(), b"R", t);
        assert!(matches!(c.state, State::Replying { connection: Connection::KeepAlive }));
        assert_eq!(c.input(), next, "only the answered request is taken out");
        // Bytes that come while the reply goes out are kept too.
        assert_eq!(c.input_room(), Some(MAX_INPUT - next.len()));
        c.received(b"x");
        assert_eq!(drain(c, 1), b"R");
        let later = t + secs(1);
        assert_eq!(c.next(None, later, &mut stats, light), Next::Request);
        assert!(matches!(c.state, State::Request { since } if since == later));
        assert_eq!(c.input(), [&next[..], b"x"].concat());
        assert_eq!(c.next(None, later, &mut stats, light), Next::Read);
        assert!(!c.between_requests(), "part of a request came");
    }

    #[test]
    fn input_is_kept_to_a_bound_while_a_request_is_due_and_thrown_away_otherwise() {
        let t = Instant::now();
        let mut c = Client::new(t, MAX_QUEUED);
        assert_eq!(c.input_room(), Some(MAX_INPUT));
        c.received(&[b'G'; MAX_INPUT]);
        assert_eq!(c.input_room(), Some(0));
        let closing = &mut answered(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n", b"R", t);
        assert!(matches!(closing.state, State::Replying { connection: Connection::Close }));
        assert_eq!((closing.input(), closing.input_room()), (&b""[..], None));
        let mut viewer = Client::new(t, MAX_QUEUED);
        viewer.received(b"GET /stream HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        viewer.stream(b"H".to_vec(), Length, None, None, true, t);
        assert_eq!((viewer.input(), viewer.input_room()), (&b""[..], None));
        let mut waiting = Client::new(t, MAX_QUEUED);
        waiting.await_frame(false, Connection::KeepAlive);
        assert_eq!(waiting.input_room(), Some(MAX_INPUT));
        waiting.await_frame(false, Connection::Close);
        assert_eq!(waiting.input_room(), None);
    }

    #[test]
    fn the_hundredth_request_on_a_connection_is_answered_with_close() {
        let t = Instant::now();
        let request = b"GET /snapshot HTTP/1.1\r\n\r\n";
        let message = http::parse_message(request).1;
        let mut c = Client::new(t, MAX_QUEUED);
        for n in 1..MAX_REQUESTS_PER_CONNECTION {
            c.received(request);
            assert_eq!(c.answering(message), Connection::KeepAlive, "request {n}");
        }
        c.received(request);
        assert_eq!(c.answering(message), Connection::Close);
        assert_eq!(MAX_REQUESTS_PER_CONNECTION, 100);
    }

    #[test]
    fn a_malformed_request_or_one_that_says_close_closes() {
        let t = Instant::now();
        let mut c = Client::new(t, MAX_QUEUED);
        c.received(b"GET / HTTP/1.1\r\nNo colon\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        let (_, message) = http::parse_message(c.input());
        assert_eq!(c.answering(message), Connection::Close);
        assert!(c.input().is_empty());
        let c = answered(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"R", t);
        assert!(matches!(c.state, State::Replying { connection: Connection::Close }));
    }

    #[test]
    fn a_kept_alive_connection_waits_the_shorter_of_its_idle_time_and_the_request_timeout() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let c = &mut answered(b"GET / HTTP/1.1\r\n\r\n", b"R", t);
        drain(c, 100);
        let sent = t + secs(30);
        assert_eq!(c.next(None, sent, &mut stats, light), Next::Request);
        assert!(c.between_requests());
        let request = secs(10);
        let idle = KEEP_ALIVE_IDLE;
        assert!(!c.expired(
            sent + idle - Duration::from_millis(1),
            request,
            secs(10),
            secs(2),
            no_look
        ));
        assert!(c.expired(sent + idle, request, secs(10), secs(2), no_look));
        // A shorter --request-timeout is the shorter wait.
        assert!(c.expired(sent + secs(1), secs(1), secs(10), secs(2), no_look));
        // A next request begun is no longer idle: its timeout is the client's fault.
        c.received(b"GET /sn");
        assert!(!c.between_requests());
        // The first request has the whole --request-timeout.
        let first = Client::new(t, MAX_QUEUED);
        assert!(!first.between_requests());
        assert!(!first.expired(t + idle, request, secs(10), secs(2), no_look));
    }

    #[test]
    fn a_client_that_ended_its_side_is_finished_only_when_nothing_more_is_owed() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        // Half-closed after a request: the reply is still owed.
        let c = &mut answered(b"GET / HTTP/1.1\r\n\r\n", b"R", t);
        c.ended = true;
        assert!(!c.finished());
        drain(c, 100);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Request);
        assert!(c.finished(), "no further request can come");
        // A stream and a waiting snapshot are served.
        let mut viewer = streaming(0, None, t);
        viewer.ended = true;
        assert!(!viewer.finished());
        let mut waiting = Client::new(t, MAX_QUEUED);
        waiting.await_frame(false, Connection::KeepAlive);
        waiting.ended = true;
        assert!(!waiting.finished());
        // A closing reply, once sent, is done with.
        let c = &mut answered(b"GET / HTTP/1.0\r\n\r\n", b"R", t);
        c.ended = true;
        drain(c, 100);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Shutdown);
        assert!(c.finished());
        // An unfinished request never will be.
        let mut partial = Client::new(t, MAX_QUEUED);
        partial.received(b"GET /vid");
        partial.ended = true;
        assert!(partial.finished());
    }

    // The Streaming state.

    fn streaming(max_fps: u32, latest: Option<&Rc<Frame>>, t: Instant) -> Client {
        let mut c = Client::new(t, MAX_QUEUED);
        let interval = (max_fps > 0).then(|| Duration::from_secs(1) / max_fps);
        c.stream(b"H".to_vec(), Length, interval, latest, true, t);
        c
    }

    /// A viewer that has sent its response head and waits for a frame.
    fn waiting(t: Instant) -> Client {
        let mut c = streaming(0, None, t);
        drain(&mut c, 100);
        c
    }

    /// What `expired` sees of a socket that cannot be looked at.
    fn no_look() -> Option<Look> {
        None
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_viewer_gets_the_head_and_the_latest_frame_untimed() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let f = frame(5, 50);
        let mut c = streaming(0, Some(&f), t);
        let sent = drain(&mut c, 1);
        let mut expected = b"H".to_vec();
        expected.extend(f.pieces(Length).concat());
        assert_eq!(sent, expected);
        assert_eq!(c.next(Some(&f), t, &mut stats, light), Next::Idle);
        assert_eq!(stats.frames_out, 1);
        assert!(stats.latency.is_empty(), "the joining frame is no latency sample");
        let State::Streaming(s) = &c.state else { panic!() };
        assert_eq!((s.frames, s.skipped, s.last_seq), (1, 0, 5));
    }

    #[test]
    fn a_finished_viewer_takes_the_newest_frame_and_counts_the_skipped_ones() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = streaming(0, Some(&frame(1, 10)), t);
        drain(&mut c, 1000);
        let newest = frame(4, 10);
        assert_eq!(c.next(Some(&newest), t, &mut stats, light), Next::Write);
        assert_eq!(bytes(&c), newest.pieces(Length).concat());
        drain(&mut c, 1000);
        assert_eq!(c.next(Some(&newest), t, &mut stats, light), Next::Idle);
        let State::Streaming(s) = &c.state else { panic!() };
        assert_eq!((s.frames, s.skipped), (2, 2));
        assert_eq!(stats.frames_skipped, 2);
        assert_eq!(stats.latency.len(), 1, "a frame taken live is a latency sample");
    }

    #[test]
    fn advance_framing_sends_the_next_parts_headers_after_each_frame() {
        let t = Instant::now();
        let f = frame(1, 10);
        let mut c = Client::new(t, MAX_QUEUED);
        c.stream(b"H".to_vec(), AdvanceHeaders, None, Some(&f), true, t);
        let sent = drain(&mut c, 3);
        assert_eq!(sent, [&b"H"[..], &f.pieces(AdvanceHeaders).concat()].concat());
    }

    #[test]
    fn a_viewer_joining_a_restarting_camera_skips_its_old_frame_and_takes_the_next() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let old = frame(7, 10);
        let mut c = Client::new(t, MAX_QUEUED);
        c.stream(b"H".to_vec(), Length, None, Some(&old), false, t);
        assert_eq!(drain(&mut c, 100), b"H");
        assert_eq!(c.next(Some(&old), t, &mut stats, light), Next::Idle);
        let new = frame(8, 10);
        assert_eq!(c.next(Some(&new), t, &mut stats, light), Next::Write);
        assert_eq!(bytes(&c), new.pieces(Length).concat());
    }

    #[test]
    fn a_viewer_without_frames_waits_idle_and_is_never_stalled() {
        let t = Instant::now();
        let mut c = streaming(0, None, t);
        drain(&mut c, 1);
        assert_eq!(c.next(None, t, &mut Stats::new(t), light), Next::Idle);
        assert!(!c.expired(t + secs(100), secs(10), secs(10), secs(2), no_look));
    }

    #[test]
    fn a_viewer_sitting_on_a_frame_expires_at_the_client_timeout() {
        let t = Instant::now();
        let mut c = streaming(0, Some(&frame(1, 100)), t);
        c.wrote(10);
        c.would_block();
        assert!(!c.expired(t + secs(9), secs(60), secs(10), secs(2), no_look));
        assert!(c.expired(t + secs(10), secs(60), secs(10), secs(2), no_look));
    }

    #[test]
    fn a_viewer_whose_window_shows_it_behind_is_given_what_a_slow_reader_needs() {
        let t = Instant::now();
        // Its reader learns the window (128 KB) and the frames; then a
        // frame sits half sent.
        let half_sent = |len| {
            let mut c = waiting(t);
            let opened = Some(Look { window: Some(128_000), ..Look::default() });
            assert_eq!(c.next(Some(&frame(1, len)), t, &mut Stats::new(t), || opened), Next::Write);
            c.wrote(len / 2);
            c
        };
        let window = |window| Some(Look { window: Some(window), ..Look::default() });
        let expired = |c: &Client, after, look: Option<Look>| {
            c.expired(t + secs(after), secs(60), secs(10), secs(2), || look)
        };
        // A full buffer, twice the window, of 18 KB frames at a frame a
        // second: 14.2 s, twice that given.
        let c = half_sent(18_000);
        assert!(!expired(&c, 28, window(0)));
        assert!(expired(&c, 29, window(0)));
        // A window that shows it keeping up, or none to see, is the
        // client-timeout's.
        assert!(expired(&c, 10, window(100_000)));
        assert!(expired(&c, 10, None));
        // A longer --client-timeout stands.
        assert!(!c.expired(t + secs(39), secs(60), secs(40), secs(2), || window(0)));
        // Frames of a few bytes would take hours: a minute at most.
        let c = half_sent(60);
        assert!(!expired(&c, 59, window(0)));
        assert!(expired(&c, 60, window(0)));
    }

    /// A viewer on this host that was sent `sent` bytes and has `unread`
    /// of them in its socket, its window 100 KB.
    fn here(sent: u64, unread: u64) -> Option<Look> {
        Some(Look {
            acked: sent,
            peer_unread: Some(unread),
            window: Some(100_000),
            ..Look::default()
        })
    }

    fn skipped_reading(c: &Client) -> u64 {
        let State::Streaming(s) = &c.state else { panic!("not streaming") };
        s.skipped_reading
    }

    #[test]
    fn a_viewer_on_this_host_with_a_frame_unread_waits_for_its_reads_then_takes_the_newest() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        // A whole frame of 1000 bytes unread: held, and looked at again
        // after 2, 4, 8, 16, 32 and 32 ms.
        let mut at = t;
        for wait in [2, 4, 8, 16, 32, 32] {
            let next = c.next(Some(&frame(1, 1000)), at, &mut stats, || here(5000, 1000));
            assert_eq!(next, Next::Retry(at + ms(wait)));
            at += ms(wait);
        }
        // It has begun to read it: the newest frame starts, and what it
        // skipped meanwhile it skipped for reading slowly.
        assert_eq!(c.next(Some(&frame(3, 1000)), at, &mut stats, || here(5000, 999)), Next::Write);
        assert_eq!((skipped_reading(&c), stats.frames_skipped_reading), (2, 2));
        drain(&mut c, 10_000);
        // Bytes still in our socket are as unread as those in its: held,
        // looked at again after 2 ms as the frame started.
        let behind = Look { unsent: 600, ..here(6000, 400).unwrap() };
        let next = c.next(Some(&frame(4, 1000)), at, &mut stats, || Some(behind));
        assert_eq!(next, Next::Retry(at + ms(2)));
        // The same counts from a viewer elsewhere hold nothing back.
        let elsewhere = Some(Look { peer_unread: None, ..behind });
        assert_eq!(c.next(Some(&frame(4, 1000)), at, &mut stats, || elsewhere), Next::Write);
    }

    #[test]
    fn a_viewer_on_this_host_is_looked_at_on_every_frame_until_it_shows_it_reads_up() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        let looks = std::cell::Cell::new(0);
        let mut take = |seqs: std::ops::RangeInclusive<u64>, unread| {
            for seq in seqs {
                let look = || {
                    looks.set(looks.get() + 1);
                    here(seq * 1000, unread)
                };
                assert_eq!(c.next(Some(&frame(seq, 1000)), t, &mut stats, look), Next::Write);
                drain(&mut c, 10_000);
            }
            looks.get()
        };
        // Eight looks in a row with nothing unread, then one every eighth
        // frame, as for any viewer that keeps up.
        assert_eq!(take(1..=8, 0), 8);
        assert_eq!(take(9..=17, 0), 9);
        // Part of a frame unread at a look: every frame again.
        assert_eq!(take(18..=26, 500), 10);
        assert_eq!(take(27..=28, 0), 12);
    }

    #[test]
    fn a_viewer_on_this_host_held_for_its_reads_stalls_only_once_it_stops_reading() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        let f = frame(1, 10_000);
        // Three frames unread; it reads 1000 bytes every 5 s for a minute
        // (from its socket: its application may hold more in a buffer of
        // its own).
        let mut at = t;
        for step in 0..=12 {
            at = t + secs(step * 5);
            let look = || here(30_000, 30_000 - step * 1000);
            assert!(matches!(c.next(Some(&f), at, &mut stats, look), Next::Retry(_)));
            assert!(!c.expired(at + secs(5), secs(60), secs(10), secs(2), look));
        }
        // Then it stops. A reader of a frame a second would read what a
        // full buffer holds (twice its 100 KB window) in 20 s: it is given
        // twice that, however short the client-timeout.
        let stopped = || here(30_000, 18_000);
        assert!(!c.expired(at + secs(39), secs(60), secs(10), secs(2), stopped));
        assert!(c.expired(at + secs(40), secs(60), secs(10), secs(2), stopped));
    }

    #[test]
    fn a_viewer_that_trickles_expires_unless_it_finishes_its_frame() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = streaming(0, Some(&frame(1, 100)), t);
        for _ in 1..10 {
            c.wrote(1);
        }
        assert!(c.expired(t + secs(10), secs(60), secs(10), secs(2), no_look), "a byte a second");
        // One that finishes its frame by then starts the clock again.
        let mut c = streaming(0, Some(&frame(1, 100)), t);
        let done = t + secs(9);
        drain(&mut c, 1000);
        assert_eq!(c.next(Some(&frame(2, 100)), done, &mut stats, light), Next::Write);
        assert!(!c.expired(t + secs(18), secs(60), secs(10), secs(2), no_look));
        assert!(c.expired(t + secs(19), secs(60), secs(10), secs(2), no_look));
    }

    #[test]
    fn a_held_viewer_whose_link_moves_bytes_is_not_stalled() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        let f = frame(1, 10);
        let full = |acked| Some(Look { unsent: MAX_QUEUED as u64, acked, ..light().unwrap() });
        let mut at = t;
        for step in 1..=30 {
            at = t + secs(step);
            assert_eq!(
                c.next(Some(&f), at, &mut stats, || full(step * 1000)),
                Next::Retry(at + QUEUE_RETRY)
            );
        }
        assert!(!c.expired(at + secs(9), secs(60), secs(10), secs(2), no_look));
        assert!(c.expired(at + secs(10), secs(60), secs(10), secs(2), no_look));
    }

    #[test]
    fn the_queue_is_looked_at_every_eighth_frame_and_after_a_full_socket() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        let mut looks = 0;
        for seq in 1..=17 {
            let f = frame(seq, 10);
            let next = c.next(Some(&f), t, &mut stats, || {
                looks += 1;
                light()
            });
            assert_eq!(next, Next::Write);
            drain(&mut c, 100);
        }
        // The first frame is looked at, then every CHECK_EVERY + 1.
        assert_eq!(looks, 2);
        c.would_block();
        let f = frame(18, 10);
        c.next(Some(&f), t, &mut stats, || {
            looks += 1;
            unsent(MAX_QUEUED as u64 / 2)
        });
        assert_eq!(looks, 3);
    }

    #[test]
    fn a_full_path_holds_the_frame_retries_soon_and_is_a_stall_if_it_lasts() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = waiting(t);
        let f = frame(1, 10);
        assert_eq!(
            c.next(Some(&f), t, &mut stats, || unsent(MAX_QUEUED as u64)),
            Next::Retry(t + QUEUE_RETRY)
        );
        assert!(c.idle());
        assert!(!c.expired(t + secs(9), secs(60), secs(10), secs(2), no_look));
        assert!(c.expired(t + secs(10), secs(60), secs(10), secs(2), no_look));
        // The retry finds room and takes the frame it held.
        let later = t + QUEUE_RETRY;
        assert_eq!(c.next(Some(&f), later, &mut stats, light), Next::Write);
        drain(&mut c, 100);
        assert!(!c.expired(t + secs(100), secs(60), secs(10), secs(2), no_look));
    }

    // The `?fps` cap.

    /// Frames every `period` from `t` for `span`; returns the frames taken.
    fn capped(max_fps: u32, period: Duration, span: Duration) -> u64 {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let mut c = streaming(max_fps, None, t);
        drain(&mut c, 1000);
        let mut retry = None;
        let mut seq = 0;
        let mut at = t;
        while at < t + span {
            at += period;
            // A retry due before this frame runs first, as the loop does.
            if let Some(r) = retry.filter(|&r| r <= at) {
                let latest = (seq > 0).then(|| frame(seq, 4));
                retry = None;
                if let Next::Retry(r) = c.next(latest.as_ref(), r, &mut stats, light) {
                    retry = Some(r);
                }
                drain(&mut c, 1000);
            }
            seq += 1;
            match c.next(Some(&frame(seq, 4)), at, &mut stats, light) {
                Next::Retry(r) => retry = Some(r),
                Next::Write => {
                    drain(&mut c, 1000);
                    c.next(None, at, &mut stats, light);
                }
                other => panic!("{other:?}"),
            }
        }
        stats.frames_out
    }

    #[test]
    fn fps_caps_give_their_rate_for_any_faster_source() {
        let period = |fps: u64| Duration::from_nanos(1_000_000_000 / fps);
        for (cap, source) in [(20, 30), (25, 30), (30, 30), (30, 31), (1, 30), (10, 90), (15, 16)] {
            let got = capped(cap, period(source), secs(40)) as f64 / 40.0;
            let want = f64::from(cap);
            assert!((got - want).abs() <= want * 0.05, "?fps={cap} of {source} fps gave {got}");
        }
        // A source slower than the cap is passed through whole.
        let got = capped(30, period(10), secs(40)) as f64 / 40.0;
        assert!((got - 10.0).abs() <= 0.5, "?fps=30 of 10 fps gave {got}");
    }

    #[test]
    fn a_capped_viewer_gets_the_last_frame_before_a_pause_and_is_never_stalled() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let first = frame(1, 10);
        let mut c = streaming(1, Some(&first), t);
        drain(&mut c, 100);
        assert_eq!(c.next(Some(&first), t, &mut stats, light), Next::Idle);
        // The second frame comes 100 ms later, then nothing.
        let second = frame(2, 10);
        let at = t + Duration::from_millis(100);
        let Next::Retry(retry) = c.next(Some(&second), at, &mut stats, light) else { panic!() };
        assert!(retry > t + secs(1) && retry <= t + Duration::from_millis(1500), "{retry:?}");
        assert!(
            !c.expired(t + secs(30), secs(60), secs(2), secs(2), no_look),
            "declined is not stalled"
        );
        assert_eq!(c.next(Some(&second), retry, &mut stats, light), Next::Write);
        drain(&mut c, 100);
        c.next(Some(&second), retry, &mut stats, light);
        let State::Streaming(s) = &c.state else { panic!() };
        assert_eq!((s.frames, s.last_seq), (2, 2));
    }

    #[test]
    fn a_capped_viewer_that_joins_before_any_frame_is_paced_from_its_first_frame() {
        let t = Instant::now();
        let mut stats = Stats::new(t);
        let ms = |n| t + Duration::from_millis(n);
        let mut c = Client::new(t, MAX_QUEUED);
        // ?fps=0.5, and no frame yet.
        c.stream(b"H".to_vec(), Length, Some(secs(2)), None, true, t);
        drain(&mut c, 100);
        assert_eq!(c.next(None, t, &mut stats, light), Next::Idle);
        // The first frame comes 1.4 s later: taken at once.
        assert_eq!(c.next(Some(&frame(1, 10)), ms(1400), &mut stats, light), Next::Write);
        drain(&mut c, 100);
        // The next is due 2 s after it (taken from 1.5 s after, the slack),
        // not 2 s after the viewer joined.
        let second = frame(2, 10);
        let Next::Retry(retry) = c.next(Some(&second), ms(1500), &mut stats, light) else {
            panic!("the second frame 0.1 s after the first")
        };
        assert_eq!(retry, ms(1400 + 2000 + 1000));
        assert!(matches!(c.next(Some(&second), ms(2899), &mut stats, light), Next::Retry(_)));
        assert_eq!(c.next(Some(&second), ms(2900), &mut stats, light), Next::Write);
    }
}
