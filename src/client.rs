/*!
One HTTP client: its state, and the output it has yet to send.

```text
            request parsed: stream                 socket error, EOF, or no
 Request ───────────────────────────▶ Streaming ──progress for --client-timeout──▶ closed
    │        (head + latest frame)      ▲    │
    │                                   └────┘ frame done: start the newest, or wait
    │ request parsed: anything else, or an error status
    └───────────────────────────────▶ Replying ──all sent──▶ Closing ──client's EOF──▶ closed
```

A client's output is a response head it owns (small) plus at most one frame
it shares with every other client (`Rc<Frame>`), and how much of the two it
has sent. A streaming client that is still busy when a new frame arrives
simply does not take it; once its socket drains, it takes the newest frame.
So a slow client holds one frame, never a queue, and never delays the rest.
*/

use crate::frame::{io_slices, Frame};
use crate::http::Framing;
use crate::stats::Stats;
use mio::net::TcpStream;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A client whose queue was found nearly empty starts this many frames
/// before it is looked at again: the look costs an `ioctl` or two, which a
/// thousand clients that keep up would otherwise pay on every frame (12 %
/// of the server's CPU). A queue that builds is seen within these frames,
/// and from then on at every frame.
const CHECK_EVERY: u8 = 8;

/// Scratch space for reading requests and draining what clients send later.
const READ_CHUNK: usize = 4096;

/// Most bytes thrown away per read event once the request is in: a client
/// that sends without end must not hold the loop from everyone else. The
/// rest waits in the socket, and TCP's flow control slows the sender down.
const DRAIN_PER_EVENT: usize = 64 * 1024;

pub enum State {
    /// Reading the request; `buf` never exceeds [`crate::http::MAX_REQUEST_BYTES`].
    Request { buf: Vec<u8> },
    /// Sending a whole response, then closing.
    Replying,
    /// Sending frames.
    Streaming(Stream),
    /// The reply is sent and our side shut down; waiting for the client to
    /// close, so that closing first does not reset the connection under a
    /// reply it has not read yet.
    Closing { since: Instant },
}

pub struct Stream {
    pub framing: Framing,
    /// The sequence number of the last frame this client started.
    pub last_seq: u64,
    /// `?fps=N`: the shortest time between two frames, and when the last began.
    pub min_interval: Option<Duration>,
    pub last_start: Option<Instant>,
    pub frames: u64,
    pub skipped: u64,
    /// Frames sent in the last second, and the count when it began.
    pub fps: u64,
    pub frames_at_tick: u64,
}

/// What follows the response head in the output.
#[derive(Clone, Copy)]
enum Body {
    /// A part of the multipart stream.
    Part(Framing),
    /// The bare JPEG (a snapshot).
    Jpeg,
}

pub struct Client {
    pub socket: TcpStream,
    pub addr: SocketAddr,
    pub state: State,
    pub accepted: Instant,
    /// When the client last took bytes, or was last given a frame.
    pub last_progress: Instant,
    pub bytes_sent: u64,
    head: Vec<u8>,
    frame: Option<(Rc<Frame>, Body)>,
    sent: usize,
    /// False for the frame a viewer is given on joining: it was read before
    /// the viewer came, so its age is no measure of delivery latency.
    timed: bool,
    /// The socket was full during the current frame: look at the kernel's
    /// queue before starting the next.
    blocked: bool,
    /// Frames started since the queue was last looked at.
    unchecked: u8,
}

/// Whether a client is still open after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Open {
    Yes,
    No,
}

impl Client {
    pub fn new(socket: TcpStream, addr: SocketAddr, now: Instant) -> Client {
        Client {
            socket,
            addr,
            state: State::Request { buf: Vec::new() },
            accepted: now,
            last_progress: now,
            bytes_sent: 0,
            head: Vec::new(),
            frame: None,
            sent: 0,
            timed: false,
            blocked: false,
            unchecked: CHECK_EVERY,
        }
    }

    /// True when nothing is waiting to be sent.
    pub fn idle(&self) -> bool {
        self.sent == self.out_len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.out_len() - self.sent
    }

    fn out_len(&self) -> usize {
        self.head.len()
            + self
                .frame
                .as_ref()
                .map_or(0, |(f, body)| pieces(f, *body).iter().map(|p| p.len()).sum())
    }

    /// Sends `head`, then closes.
    pub fn reply(&mut self, head: Vec<u8>, jpeg: Option<Rc<Frame>>) {
        self.state = State::Replying;
        self.set_out(head, jpeg.map(|f| (f, Body::Jpeg)));
    }

    /// Sends the stream's head, then frames, starting with `latest`.
    /// A new viewer gets the latest frame at once: OpenCV's open otherwise
    /// waits for frames to analyse, for many seconds on a slow stream.
    pub fn stream(
        &mut self,
        head: Vec<u8>,
        framing: Framing,
        max_fps: u32,
        latest: Option<&Rc<Frame>>,
        now: Instant,
    ) {
        self.state = State::Streaming(Stream {
            framing,
            last_seq: latest.map_or(0, |f| f.seq),
            min_interval: (max_fps > 0).then(|| Duration::from_secs(1) / max_fps),
            last_start: latest.map(|_| now),
            frames: 0,
            skipped: 0,
            fps: 0,
            frames_at_tick: 0,
        });
        self.set_out(head, latest.map(|f| (Rc::clone(f), Body::Part(framing))));
        self.timed = false;
    }

    fn set_out(&mut self, head: Vec<u8>, frame: Option<(Rc<Frame>, Body)>) {
        self.head = head;
        self.frame = frame;
        self.sent = 0;
    }

    /// Counts `frame` as skipped unless this client has started it.
    pub fn count_skip(&mut self, frame: &Frame, stats: &mut Stats) {
        if let State::Streaming(s) = &mut self.state {
            if s.last_seq < frame.seq {
                s.skipped += 1;
                stats.frames_skipped += 1;
            }
        }
    }

    /// Writes until the socket would block or there is nothing more to send,
    /// taking the newest frame each time a streaming client finishes one.
    ///
    /// A new frame is started only while fewer than `max_queued` bytes are
    /// ahead of it (see [`backlog`]): on a link slower than the stream,
    /// the frame chosen is then the newest when the link has room, not one
    /// that waits behind a queue.
    pub fn pump(
        &mut self,
        latest: Option<&Rc<Frame>>,
        max_queued: usize,
        now: Instant,
        stats: &mut Stats,
    ) -> io::Result<Open> {
        loop {
            if !self.idle() && !self.write_out(now, stats)? {
                return Ok(Open::Yes);
            }
            if let Some((frame, Body::Part(_))) = self.frame.take() {
                // Now, not `now`: the clients served before this one took time.
                let done = Instant::now();
                stats.delivered(self.timed.then(|| done.saturating_duration_since(frame.read_at)));
                if let State::Streaming(s) = &mut self.state {
                    s.frames += 1;
                }
            }
            self.head.clear();
            self.sent = 0;
            match &mut self.state {
                State::Request { .. } | State::Closing { .. } => return Ok(Open::Yes),
                State::Replying => {
                    self.socket.shutdown(std::net::Shutdown::Write)?;
                    self.state = State::Closing { since: now };
                    return Ok(Open::Yes);
                }
                State::Streaming(s) => {
                    let Some(frame) = latest.filter(|f| f.seq > s.last_seq) else {
                        return Ok(Open::Yes);
                    };
                    if let (Some(min), Some(last)) = (s.min_interval, s.last_start) {
                        if now < last + min {
                            return Ok(Open::Yes);
                        }
                    }
                    if self.blocked || self.unchecked >= CHECK_EVERY {
                        match backlog(&self.socket, max_queued) {
                            Backlog::Full => return Ok(Open::Yes),
                            Backlog::Some => self.unchecked = CHECK_EVERY,
                            Backlog::Light => self.unchecked = 0,
                        }
                    } else {
                        self.unchecked += 1;
                    }
                    self.blocked = false;
                    s.last_seq = frame.seq;
                    s.last_start = Some(now);
                    let body = Body::Part(s.framing);
                    self.frame = Some((Rc::clone(frame), body));
                    self.timed = true;
                    // A frame to send counts as progress: the client-timeout
                    // measures how long a client sits on unsent data.
                    self.last_progress = now;
                }
            }
        }
    }

    /// Writes with `writev` until done (true) or the socket is full (false).
    fn write_out(&mut self, now: Instant, stats: &mut Stats) -> io::Result<bool> {
        let total = self.out_len();
        while self.sent < total {
            let mut iov = [IoSlice::new(&[]); 4];
            let n = {
                let [a, b, c] = match &self.frame {
                    Some((f, body)) => pieces(f, *body),
                    None => [&[][..], &[], &[]],
                };
                io_slices(&[&self.head, a, b, c], self.sent, &mut iov)
            };
            match self.socket.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    self.sent += k;
                    self.bytes_sent += k as u64;
                    stats.bytes_out += k as u64;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads what the client sent, until the socket is empty. Returns false
    /// at the end of the client's stream. The request, while it is being
    /// read, is kept (up to `cap` bytes); anything later is thrown away, at
    /// most [`DRAIN_PER_EVENT`] bytes a call.
    pub fn read_in(&mut self, cap: usize) -> io::Result<bool> {
        let mut chunk = [0; READ_CHUNK];
        let mut drained = 0;
        loop {
            match self.socket.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    if let State::Request { buf } = &mut self.state {
                        let room = cap.saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..n.min(room)]);
                        if buf.len() >= cap {
                            return Ok(true);
                        }
                    } else {
                        drained += n;
                        if drained >= DRAIN_PER_EVENT {
                            return Ok(true);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Bytes the kernel holds for this socket that have not been sent yet
/// (`SIOCOUTQNSD`), or None where the kernel cannot say.
pub fn unsent_bytes(socket: &TcpStream) -> Option<usize> {
    outq(socket, true)
}

/// How much is ahead of a frame started now.
#[derive(Debug, PartialEq, Eq)]
enum Backlog {
    /// Under a quarter of the limit, unsent and in flight together.
    Light,
    /// Under the limit.
    Some,
    /// The limit or more: the client waits for the newest frame.
    Full,
}

/// Whether `max` bytes or more are ahead of a frame started now: the
/// unsent bytes, plus the sent but unacknowledged ones that wait in a queue
/// on the path rather than travel. A loss-based congestion control (cubic,
/// the usual default) keeps a slow link's bottleneck queue full, so counting
/// only the unsent bytes lets a frame wait behind that queue too, and the
/// losses that end each of cubic's rounds stall everything behind them.
///
/// The queued share is estimated from the round trip as the kernel sees it:
/// of the bytes in flight, the share `(srtt - min_rtt) / srtt` is waiting,
/// the rest is the path's own delay, which a long link needs in flight to
/// keep its rate. Where the kernel cannot say, nothing is ahead.
fn backlog(socket: &TcpStream, max: usize) -> Backlog {
    // SIOCOUTQ (TIOCOUTQ): unsent and unacknowledged bytes together. Below
    // `max` there is no need to look closer: the common case, one ioctl.
    let Some(total) = outq(socket, false) else { return Backlog::Light };
    if total < max / 4 {
        return Backlog::Light;
    }
    if total < max {
        return Backlog::Some;
    }
    let Some(unsent) = unsent_bytes(socket) else { return Backlog::Some };
    let in_flight = total.saturating_sub(unsent) as u64;
    let queued = match round_trips(socket) {
        Some((srtt, min_rtt)) if srtt > min_rtt => in_flight * (srtt - min_rtt) / srtt,
        _ => 0,
    };
    if unsent as u64 + queued >= max as u64 {
        Backlog::Full
    } else {
        Backlog::Some
    }
}

/// The bytes in the socket's send queue: the unsent ones, or all.
fn outq(socket: &TcpStream, unsent_only: bool) -> Option<usize> {
    let fd = socket.as_raw_fd();
    let mut n: libc::c_int = 0;
    // SAFETY: either ioctl writes one int through a valid pointer.
    let rc = unsafe {
        if unsent_only {
            libc::ioctl(fd, libc::SIOCOUTQNSD, &mut n)
        } else {
            libc::ioctl(fd, libc::TIOCOUTQ, &mut n)
        }
    };
    (rc == 0).then_some(n as usize)
}

/// The smoothed and the smallest round-trip time in microseconds, from
/// `TCP_INFO` (`tcpi_rtt` at byte 64, `tcpi_min_rtt` at byte 148, Linux
/// 4.6 and later; the libc crate's `tcp_info` stops before the latter).
fn round_trips(socket: &TcpStream) -> Option<(u64, u64)> {
    let mut info = [0u32; 64];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0 && len >= 152).then(|| (u64::from(info[16]), u64::from(info[37])))
}

fn pieces(frame: &Frame, body: Body) -> [&[u8]; 3] {
    match body {
        Body::Part(framing) => frame.pieces(framing),
        Body::Jpeg => [&[], &frame.jpeg, &[]],
    }
}
