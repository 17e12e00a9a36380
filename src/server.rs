/*!
The poll loop: one thread, one `mio::Poll`, and nothing in it ever blocks.

It owns the listener, the input, a signal source and every client (in a
`Slab`, keyed by token). Each wake-up handles the ready sources, then does
the once-a-second chores (timeouts, rates, the stats line) when they are due.

A frame's life: the input is read until it would block; each read is fed to
the splitter; each frame it completes becomes one `Rc<Frame>` and is at once
written with `writev` to every idle streaming client, in an order that
rotates so no client is always last. Busy clients finish their frame when
their socket becomes writable, then take the newest frame.
*/

use crate::cli::Config;
use crate::client::{self, Client, Open, State};
use crate::frame::Frame;
use crate::http::{self, Parsed, Route, Status};
use crate::input::{self, AtEnd, Input};
use crate::splitter::Splitter;
use crate::stats::{self, Stats};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LISTENER: Token = Token(usize::MAX - 1);
const INPUT: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Events taken per wake-up; more simply wait for the next `poll`.
const EVENTS: usize = 1024;

/// One read from the input: a whole 640x480 frame usually fits, and a read
/// never asks for more than a pipe (64 KiB by default) can hold twice over.
const READ_BUF: usize = 128 * 1024;

/// Reads from the polled input per turn of the loop (1 MiB): a producer
/// writing flat out must not keep the loop from clients that wait to write.
const INPUT_READS: usize = 8;

/// How often timeouts are checked and rates updated.
const TICK: Duration = Duration::from_secs(1);

/// Out of file descriptors, the listener rests this long before accepting
/// again: the waiting connections stay in the kernel's backlog, and the
/// loop does not spin on an accept that cannot succeed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After the input ends, clients get this long to take the frame they are
/// being sent before the server exits.
const DRAIN: Duration = Duration::from_secs(2);

/// How long a client that has its reply may take to close its end.
const LINGER: Duration = Duration::from_secs(2);

/// `/stats` lists this many viewers at most, so that its size stays small
/// with thousands connected.
const MAX_VIEWERS_LISTED: usize = 256;

/// The listen backlog: connection storms wait here rather than being refused.
const BACKLOG: i32 = 1024;

pub struct Server {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    input: Input,
    splitter: Splitter,
    clients: Slab<Client>,
    latest: Option<Rc<Frame>>,
    stats: Stats,
    read_buf: Vec<u8>,
    /// The polled input may hold more than the last turn read.
    input_pending: bool,
    /// Bytes read from a paced file and not yet fed to the splitter.
    paced: (usize, usize),
    next_paced: Instant,
    next_tick: Instant,
    next_stats: Option<Instant>,
    accept_paused_until: Option<Instant>,
    /// Set once the input has ended: when to stop waiting for clients.
    draining_until: Option<Instant>,
    /// Rotates the order in which clients are served.
    rotation: usize,
    order: Vec<usize>,
    /// Headers every response carries (CORS).
    extra_headers: String,
    warned_oversize: bool,
    /// Clients in the `Closing` state.
    lingering: usize,
}

/// Binds the listening socket: by default one IPv6 socket that takes IPv4 too.
pub fn listen(config: &Config) -> io::Result<(TcpListener, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let bind = |addr: SocketAddr, dual: bool| -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if dual {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(TcpListener::from_std(socket.into()))
    };
    let (addr, result) = match config.bind {
        Some(ip) => {
            let addr = SocketAddr::new(ip, config.port);
            (addr, bind(addr, false))
        }
        None => {
            let any6 = SocketAddr::from(([0u16; 8], config.port));
            match bind(any6, true) {
                // No IPv6 on this machine: every IPv4 interface, then.
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    let any4 = SocketAddr::from(([0, 0, 0, 0], config.port));
                    (any4, bind(any4, false))
                }
                other => (any6, other),
            }
        }
    };
    let listener = result.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => "; is another server using that port? Choose one with -p",
            io::ErrorKind::AddrNotAvailable => "; that address is not one of this machine's",
            io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
            _ => "",
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}{hint}"))
    })?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

impl Server {
    pub fn new(config: Config, listener: TcpListener, input: Input) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut server = Server {
            splitter: Splitter::new(config.max_frame_bytes),
            signals: Signals::new([SIGINT, SIGTERM])?,
            extra_headers: cors_headers(config.allow_origin.as_deref()),
            config,
            poll,
            listener,
            input,
            clients: Slab::new(),
            latest: None,
            stats: Stats::new(Instant::now()),
            read_buf: vec![0; READ_BUF],
            input_pending: false,
            paced: (0, 0),
            next_paced: Instant::now(),
            next_tick: Instant::now() + TICK,
            next_stats: None,
            accept_paused_until: None,
            draining_until: None,
            rotation: 0,
            order: Vec::new(),
            warned_oversize: false,
            lingering: 0,
        };
        let registry = server.poll.registry();
        registry.register(&mut server.listener, LISTENER, Interest::READABLE)?;
        registry.register(&mut server.signals, SIGNALS, Interest::READABLE)?;
        if let Input::Polled { file, .. } = &server.input {
            registry.register(&mut SourceFd(&file.as_raw_fd()), INPUT, Interest::READABLE)?;
        }
        server.next_stats = server.config.stats_every.map(|every| Instant::now() + every);
        Ok(server)
    }

    /// Runs until the input ends (and clients have their last frame) or a
    /// signal asks to stop. Errors of single clients never end it.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            if let Some(until) = self.draining_until {
                if now >= until || self.clients.iter().all(|(_, c)| c.idle()) {
                    return Ok(());
                }
            }
            let timeout = if self.input_pending {
                Duration::ZERO
            } else {
                self.next_wakeup().saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    INPUT => self.read_input()?,
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            return Ok(());
                        }
                    }
                    Token(key) => self.client_ready(key, event.is_readable()),
                }
            }
            if self.input_pending {
                self.read_input()?;
            }
            let now = Instant::now();
            if matches!(self.input, Input::Paced { .. })
                && now >= self.next_paced
                && self.draining_until.is_none()
            {
                self.read_paced(now)?;
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept();
            }
            if now >= self.next_tick {
                self.tick(now);
            }
        }
    }

    /// The final word on stderr.
    pub fn report(&self) -> String {
        let now = Instant::now();
        let mut out = self.stats.summary(now, &self.splitter.counters);
        if self.config.stats_every.is_some() {
            out.push_str("\nlatency from read to write, per client and frame:\n");
            out.push_str(&stats::percentile_distribution(&self.stats.latency));
        }
        out
    }

    fn next_wakeup(&self) -> Instant {
        let mut next = self.next_tick;
        if matches!(self.input, Input::Paced { .. }) && self.draining_until.is_none() {
            next = next.min(self.next_paced);
        }
        for t in [self.accept_paused_until, self.draining_until].into_iter().flatten() {
            next = next.min(t);
        }
        next
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() || self.draining_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((socket, addr)) => self.admit(socket, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if out_of_resources(&e) => {
                    if self.stats.accept_pauses == 0 {
                        eprintln!(
                            "warning: cannot accept connections: {e}; waiting for clients to leave"
                        );
                    }
                    self.stats.accept_pauses += 1;
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
                // The peer gave up before we got to it, or a passing fault:
                // the next connection is unaffected.
                Err(_) => {}
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, addr: SocketAddr) {
        // Clients that have their reply and wait only for the peer's close
        // do not count: a burst of snapshot requests must not cause 503s.
        if self.clients.len() - self.lingering >= self.config.max_clients {
            self.stats.clients_refused += 1;
            // Best effort: a fresh socket has room for these few bytes.
            let _ = socket.write(&http::error_response(
                Status::Unavailable,
                &self.extra_headers,
                false,
            ));
            // Take in the request if it is there: closing with it unread
            // would send a reset, which can destroy the answer unread.
            let _ = socket.read(&mut [0; 4096]);
            return;
        }
        // Frames go out the moment they are written, not after Nagle's delay.
        let _ = socket.set_nodelay(true);
        // The kernel takes only this much more than is on the wire, so a
        // slow viewer's queue stays short, and one that reads nothing stops
        // taking data at once: it then skips frames, and --client-timeout
        // sees it stall, instead of the send buffer growing for seconds of
        // stale frames.
        let _ = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(self.config.max_queued_bytes);
        let entry = self.clients.vacant_entry();
        let token = Token(entry.key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self.poll.registry().register(&mut socket, token, interest).is_err() {
            return;
        }
        self.stats.clients_total += 1;
        entry.insert(Client::new(socket, addr, Instant::now()));
    }

    fn client_ready(&mut self, key: usize, readable: bool) {
        let now = Instant::now();
        if readable && !self.client_read(key, now) {
            self.close(key);
            return;
        }
        let Some(client) = self.clients.get_mut(key) else { return };
        let replying = matches!(client.state, State::Replying);
        let max_queued = self.config.max_queued_bytes as usize;
        let open = matches!(
            client.pump(self.latest.as_ref(), max_queued, now, &mut self.stats),
            Ok(Open::Yes)
        );
        if replying && matches!(client.state, State::Closing { .. }) {
            self.lingering += 1;
        }
        if !open {
            self.close(key);
        }
    }

    /// Reads what a client sent and answers its request once complete.
    /// Returns false when the client is finished.
    fn client_read(&mut self, key: usize, now: Instant) -> bool {
        let Some(client) = self.clients.get_mut(key) else { return false };
        let Ok(more) = client.read_in(http::MAX_REQUEST_BYTES) else { return false };
        if matches!(client.state, State::Request { .. }) {
            self.respond(key, now);
        }
        // The client's end of the stream ends a stream or an unfinished
        // request, but a reply is still owed to a client that sent its
        // request and then half-closed.
        more || matches!(self.clients[key].state, State::Replying)
    }

    /// Answers a client in the `Request` state once its request is complete.
    fn respond(&mut self, key: usize, now: Instant) {
        let clients_now = self.clients.len();
        let viewers = self.viewers_json(now);
        let Some(client) = self.clients.get_mut(key) else { return };
        let State::Request { buf } = &client.state else { return };
        let extra = &self.extra_headers;
        let parsed = http::parse(buf);
        let request = match parsed {
            Parsed::Partial => return,
            Parsed::Error(status) => {
                client.reply(http::error_response(status, extra, false), None);
                return;
            }
            Parsed::Request(request) => request,
        };
        if let Some(expected) = &self.config.authorization {
            let given = request.authorization.as_deref().unwrap_or_default();
            if !constant_time_eq(given, expected.as_bytes()) {
                client.reply(
                    http::error_response(Status::Unauthorized, extra, request.head_only),
                    None,
                );
                return;
            }
        }
        let latest = self.latest.as_ref();
        match request.route {
            Route::Stream if request.head_only => client.reply(http::stream_head_only(extra), None),
            Route::Stream => {
                let head = http::stream_head(extra, request.framing, unix_micros());
                client.stream(head, request.framing, request.max_fps, latest, now);
            }
            Route::Snapshot => match latest {
                Some(frame) => {
                    let head = http::response_head("200 OK", "image/jpeg", frame.jpeg.len(), extra);
                    let body = (!request.head_only).then(|| Rc::clone(frame));
                    client.reply(head, body);
                }
                None => client.reply(
                    http::error_response(Status::Unavailable, extra, request.head_only),
                    None,
                ),
            },
            Route::Index => client.reply(
                page(INDEX_HTML, "text/html; charset=utf-8", extra, request.head_only),
                None,
            ),
            Route::Favicon => {
                client.reply(http::response_head("204 No Content", "image/x-icon", 0, extra), None)
            }
            Route::Stats => {
                let json = self.stats.json(now, &self.splitter.counters, clients_now, &viewers);
                client.reply(page(&json, "application/json", extra, request.head_only), None);
            }
        }
    }

    /// Per-viewer figures for `/stats`, for the first `MAX_VIEWERS_LISTED`.
    fn viewers_json(&self, now: Instant) -> String {
        let mut out = String::from("[");
        let viewers = self.clients.iter().filter_map(|(_, c)| match &c.state {
            State::Streaming(s) => Some((c, s)),
            _ => None,
        });
        for (i, (c, s)) in viewers.take(MAX_VIEWERS_LISTED).enumerate() {
            let unsent = client::unsent_bytes(&c.socket).unwrap_or(0);
            let _ = write!(
                out,
                "{}{{\"addr\":\"{}\",\"age_s\":{:.1},\"fps\":{},\"frames\":{},\"skipped\":{},\
                 \"pending_bytes\":{},\"kernel_unsent_bytes\":{},\"bytes_sent\":{}}}",
                if i == 0 { "" } else { "," },
                c.addr,
                now.duration_since(c.accepted).as_secs_f64(),
                s.fps,
                s.frames,
                s.skipped,
                c.queued_bytes(),
                unsent,
                c.bytes_sent,
            );
        }
        out.push(']');
        out
    }

    fn close(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut client.socket);
            if matches!(client.state, State::Closing { .. }) {
                self.lingering -= 1;
            }
        }
        // A free descriptor: connections waiting in the backlog can come in.
        if self.accept_paused_until.take().is_some() {
            self.accept();
        }
    }

    /// Reads the polled input until it would block, handing on every frame;
    /// after [`INPUT_READS`] reads, the rest waits for the next turn.
    fn read_input(&mut self) -> io::Result<()> {
        self.input_pending = false;
        let mut reads = 0;
        while self.draining_until.is_none() {
            if reads == INPUT_READS {
                self.input_pending = true;
                break;
            }
            reads += 1;
            let Input::Polled { file, end } = &mut self.input else { break };
            let end = *end;
            match input::read_some(file, &mut self.read_buf) {
                Ok(0) => return self.input_ended(end),
                Ok(n) => {
                    let read_at = Instant::now();
                    self.stats.bytes_in += n as u64;
                    self.feed(n, read_at);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io::Error::new(e.kind(), format!("reading the input: {e}"))),
            }
        }
        Ok(())
    }

    fn feed(&mut self, n: usize, read_at: Instant) {
        let mut at = 0;
        while at < n {
            let fed = self.splitter.feed(&self.read_buf[at..n]);
            at += fed.consumed;
            if let Some(jpeg) = fed.frame {
                self.publish(jpeg, read_at);
            }
        }
        self.warn_once_oversize();
    }

    fn warn_once_oversize(&mut self) {
        if self.splitter.counters.oversize_frames > 0 && !self.warned_oversize {
            self.warned_oversize = true;
            eprintln!(
                "warning: dropped a frame larger than --max-frame-bytes ({} bytes); \
                 later ones are counted in /stats",
                self.config.max_frame_bytes
            );
        }
    }

    /// A regular file: feed it until one frame comes out, once per interval.
    fn read_paced(&mut self, now: Instant) -> io::Result<()> {
        let Input::Paced { interval, .. } = self.input else { return Ok(()) };
        self.next_paced = (self.next_paced + interval).max(now);
        let frames = self.splitter.counters.frames;
        // Bounded so that a file with no frame in it cannot hold the loop.
        for _ in 0..64 {
            if self.paced.0 == self.paced.1 {
                let Input::Paced { file, looped, .. } = &mut self.input else { unreachable!() };
                let n = input::read_some(file, &mut self.read_buf)?;
                if n == 0 {
                    if !*looped {
                        return self.input_ended(AtEnd::Exit);
                    }
                    self.splitter.finish();
                    file.rewind()?;
                    self.paced = (0, 0);
                    if self.splitter.counters.frames == 0 && self.stats.bytes_in > 0 {
                        return Err(io::Error::other("the input file holds no JPEG frame"));
                    }
                    continue;
                }
                self.stats.bytes_in += n as u64;
                self.paced = (0, n);
            }
            let (at, len) = self.paced;
            let fed = self.splitter.feed(&self.read_buf[at..len]);
            self.paced.0 = at + fed.consumed;
            if let Some(jpeg) = fed.frame {
                self.publish(jpeg, Instant::now());
            }
            self.warn_once_oversize();
            if self.splitter.counters.frames > frames {
                return Ok(());
            }
        }
        Ok(())
    }

    fn input_ended(&mut self, end: AtEnd) -> io::Result<()> {
        if self.splitter.finish() {
            eprintln!("warning: the input ended in the middle of a frame; it was dropped");
        }
        if let Input::Polled { file, .. } = &self.input {
            let _ = self.poll.registry().deregister(&mut SourceFd(&file.as_raw_fd()));
        }
        if end == AtEnd::Failed {
            return Err(io::Error::other("the frame producer stopped"));
        }
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.draining_until = Some(Instant::now() + DRAIN);
        Ok(())
    }

    /// Makes `jpeg` the latest frame and writes it to every idle streaming
    /// client; busy ones skip it.
    fn publish(&mut self, jpeg: Vec<u8>, read_at: Instant) {
        let seq = self.splitter.counters.frames;
        let frame = Rc::new(Frame::new(seq, jpeg, read_at, unix_micros()));
        self.order.clear();
        self.order.extend(
            self.clients
                .iter()
                .filter(|(_, c)| matches!(c.state, State::Streaming(_)))
                .map(|(k, _)| k),
        );
        let count = self.order.len();
        self.rotation = (self.rotation + 1) % count.max(1);
        let max_queued = self.config.max_queued_bytes as usize;
        let now = Instant::now();
        for i in 0..count {
            let key = self.order[(self.rotation + i) % count];
            let client = &mut self.clients[key];
            if client.idle()
                && !matches!(
                    client.pump(Some(&frame), max_queued, now, &mut self.stats),
                    Ok(Open::Yes)
                )
            {
                self.close(key);
                continue;
            }
            client.count_skip(&frame, &mut self.stats);
        }
        self.latest = Some(frame);
    }

    /// Once a second: close clients that overstayed, update rates, print stats.
    fn tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        self.stats.tick(now, self.splitter.counters.frames);
        for (_, client) in self.clients.iter_mut() {
            if let State::Streaming(s) = &mut client.state {
                s.fps = s.frames - s.frames_at_tick;
                s.frames_at_tick = s.frames;
            }
        }
        let (request_timeout, client_timeout) =
            (self.config.request_timeout, self.config.client_timeout);
        let latest_seq = self.latest.as_ref().map_or(0, |f| f.seq);
        self.order.clear();
        self.order.extend(self.clients.iter().filter_map(|(key, c)| {
            let expired = match c.state {
                State::Request { .. } => now.duration_since(c.accepted) >= request_timeout,
                State::Closing { since } => now.duration_since(since) >= LINGER,
                // A viewer is stalled when a frame waits for it, in our
                // output or as a newer frame it cannot take because its
                // kernel queue is full, and it has taken nothing for a while.
                State::Streaming(ref s) => {
                    (!c.idle() || s.last_seq < latest_seq)
                        && now.duration_since(c.last_progress) >= client_timeout
                }
                State::Replying => now.duration_since(c.last_progress) >= client_timeout,
            };
            expired.then_some(key)
        }));
        for i in 0..self.order.len() {
            let key = self.order[i];
            if !matches!(self.clients[key].state, State::Closing { .. }) {
                self.stats.clients_timed_out += 1;
            }
            self.close(key);
        }
        if let (Some(at), Some(every)) = (self.next_stats, self.config.stats_every) {
            if now >= at {
                self.next_stats = Some(at + every);
                eprintln!("{}", self.stats.line(self.clients.len()));
            }
        }
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guessed password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &y) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(!y) ^ y);
    }
    diff == 0
}

fn cors_headers(origin: Option<&str>) -> String {
    match origin {
        Some(origin) => format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        ),
        None => String::new(),
    }
}

fn page(body: &str, content_type: &str, extra: &str, head_only: bool) -> Vec<u8> {
    let mut out = http::response_head("200 OK", content_type, body.len(), extra);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

const INDEX_HTML: &str = include_str!("index.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"Basic abc", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abd", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic ab", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abcd", b"Basic abc"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
