/*!
Every connected client, the latest frame, and the moving of bytes between
them and the sockets.

Clients live in a `Slab` keyed by their poll token. A frame is handed only
to the viewers on the idle list (streaming, nothing left to send), in an
order that rotates so no viewer is always last; a busy viewer takes the
newest frame itself when its socket drains. So the work per frame is the
work of the viewers that take it, however many connected before.

Each client's decisions are [`Client`]'s (pure); this file does the reads,
the `writev`s, the bookkeeping of who is idle, and closes clients in one
place, [`Viewers::close`].
*/

use crate::client::{Client, Next, State};
use crate::deadlines::Deadlines;
use crate::frame::Frame;
use crate::http::{self, Connection};
use crate::router::{self, Ctx, Reply};
use crate::sock_diag::{self, Diag, Lookup};
use crate::stats::Stats;
use crate::tcp::{self, Backlog, Look};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a client that has its reply may take to close its end.
const LINGER: Duration = Duration::from_secs(2);

/// `/stats` lists this many viewers at most, so that its size stays small
/// with thousands connected.
const MAX_VIEWERS_LISTED: usize = 256;

/// Scratch space for reading requests and draining what clients send later.
const READ_CHUNK: usize = 4096;

/// Most bytes thrown away per read event once the request is in: a client
/// that sends without end must not hold the loop from everyone else. The
/// rest waits in the socket, and TCP's flow control slows the sender down.
const DRAIN_PER_EVENT: usize = 64 * 1024;

/// What the viewer set works with that the loop owns: the counters, the
/// deadline set, and the poll registry.
pub struct Env<'a> {
    pub stats: &'a mut Stats,
    pub deadlines: &'a mut Deadlines,
    pub registry: &'a Registry,
}

/// What the clients are allowed and owed, from the flags.
pub struct Policy {
    pub max_clients: usize,
    pub max_queued_bytes: usize,
    /// Bytes of distinct frames clients may hold between them.
    pub max_held_bytes: usize,
    pub request_timeout: Duration,
    pub client_timeout: Duration,
    /// The base64 `USER:PASS` every request must carry, if any.
    pub credentials: Option<String>,
    /// Header lines every response and every part carries (CORS).
    pub extra_headers: String,
}

struct Conn {
    socket: TcpStream,
    addr: SocketAddr,
    /// The viewer's own socket, while it may be on this host: what it
    /// has not read is then looked up there.
    peer: Option<sock_diag::Peer>,
    client: Client,
    /// Where this viewer sits in `Viewers::idle`, if it does.
    idle_at: Option<usize>,
    /// The retry this viewer waits for, if any: an older one that comes
    /// due is ignored.
    retry_at: Option<Instant>,
    /// The frame counted for it in [`Held`]: its number and size.
    held: Option<(u64, usize)>,
    /// Bytes were left in the socket when its input was full: no event
    /// will announce them.
    unread: bool,
}

/// The distinct frames clients hold while they send them, counted once
/// however many hold each: what viewers cost in memory beyond the newest
/// frame. Clients that trickle, each partway through a different frame,
/// would otherwise hold a frame each for as long as they like.
#[derive(Default)]
struct Held {
    /// Holders and size by frame number; the first is the oldest.
    frames: std::collections::BTreeMap<u64, (usize, usize)>,
    bytes: usize,
}

impl Held {
    fn hold(&mut self, (seq, len): (u64, usize)) {
        let entry = self.frames.entry(seq).or_insert((0, len));
        if entry.0 == 0 {
            self.bytes += len;
        }
        entry.0 += 1;
    }

    fn release(&mut self, (seq, len): (u64, usize)) {
        if let Some(entry) = self.frames.get_mut(&seq) {
            entry.0 -= 1;
            if entry.0 == 0 {
                self.frames.remove(&seq);
                self.bytes -= len;
            }
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.frames.keys().next().copied()
    }
}

/// What a client asked for that only the caller can answer.
pub enum Asked {
    Figures { format: router::Format, head_only: bool, connection: Connection },
}

/// Clients by state, kept where states change: admission counts only
/// those not lingering, and draining waits only for viewers.
#[derive(Default)]
struct Census {
    streaming: usize,
    closing: usize,
}

impl Census {
    fn left(&mut self, state: &State) {
        match state {
            State::Streaming(_) => self.streaming -= 1,
            State::Closing { .. } => self.closing -= 1,
            State::Request { .. } | State::Replying { .. } | State::Awaiting { .. } => {}
        }
    }
}

pub struct Viewers {
    policy: Policy,
    conns: Slab<Conn>,
    /// Streaming viewers with nothing to send: the ones a new frame goes to.
    idle: Vec<usize>,
    /// Snapshots waiting for the camera's first frame.
    awaiting: Vec<usize>,
    /// The latest of the source's own frames (not a notice), for its size.
    last_live: Option<Rc<Frame>>,
    census: Census,
    held: Held,
    latest: Option<Rc<Frame>>,
    /// The sequence number of the latest frame; frames count from 1.
    seq: u64,
    rotation: usize,
    /// A client was closed since the caller last asked: a descriptor is free.
    freed: bool,
    /// Frames that viewers which left had not taken.
    pending_closed: u64,
    scratch: Vec<usize>,
    /// Socket diagnostics, for viewers on this host; None where netlink
    /// is not allowed.
    diag: Option<Diag>,
}

impl Viewers {
    pub fn new(policy: Policy) -> Viewers {
        Viewers {
            policy,
            conns: Slab::new(),
            idle: Vec::new(),
            awaiting: Vec::new(),
            last_live: None,
            census: Census::default(),
            held: Held::default(),
            latest: None,
            seq: 0,
            rotation: 0,
            freed: false,
            pending_closed: 0,
            scratch: Vec::new(),
            diag: Diag::open()
                .inspect_err(|e| {
                    log!(
                        "warning: cannot open socket diagnostics (NETLINK_SOCK_DIAG): {e}; \
                         viewers on this host are paced by their receive window only"
                    )
                })
                .ok(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn streaming(&self) -> usize {
        self.census.streaming
    }

    pub fn extra_headers(&self) -> &str {
        &self.policy.extra_headers
    }

    /// Viewers and waiting snapshots: who would miss the camera.
    pub fn watching(&self) -> usize {
        self.census.streaming + self.awaiting.len()
    }

    /// The latest of the source's own frames.
    pub fn last_live(&self) -> Option<&Rc<Frame>> {
        self.last_live.as_ref()
    }

    /// True once every viewer has sent what it was sending.
    pub fn drained(&self) -> bool {
        self.idle.len() == self.census.streaming
    }

    /// True, once, after a client was closed.
    pub fn take_freed(&mut self) -> bool {
        std::mem::take(&mut self.freed)
    }

    /// True when another client would be one too many. Clients that have
    /// their reply and wait only for the peer's close do not count: a burst
    /// of snapshot requests must not cause 503s.
    pub fn full(&self) -> bool {
        debug_assert!(
            self.census.streaming + self.census.closing <= self.conns.len(),
            "the census counts {} streaming and {} closing of {} clients",
            self.census.streaming,
            self.census.closing,
            self.conns.len()
        );
        // Should the census drift all the same, a subtraction that wrapped
        // would turn every newcomer away with 503; too many admitted is
        // the smaller harm.
        self.conns.len().saturating_sub(self.census.closing) >= self.policy.max_clients
    }

    /// Takes a new connection.
    pub fn insert(
        &mut self,
        mut socket: TcpStream,
        addr: SocketAddr,
        now: Instant,
        registry: &Registry,
    ) {
        // Frames go out the moment they are written, not after Nagle's delay.
        let _ = socket.set_nodelay(true);
        // The kernel takes only this much more than is on the wire, so a
        // slow viewer's queue stays short, and one that reads nothing stops
        // taking data at once: it then skips frames, and --client-timeout
        // sees it stall, instead of the send buffer growing for seconds of
        // stale frames.
        let lowat = self.policy.max_queued_bytes as u32;
        let _ = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(lowat);
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        // Edge-triggered, for life: every handler reads or writes until
        // `WouldBlock`, so there is nothing to re-register.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let peer = socket.local_addr().ok().and_then(|local| sock_diag::Peer::new(local, addr));
        if registry.register(&mut socket, token, interest).is_ok() {
            entry.insert(Conn {
                socket,
                addr,
                peer,
                client: Client::new(now, self.policy.max_queued_bytes),
                idle_at: None,
                retry_at: None,
                held: None,
                unread: false,
            });
        }
    }

    /// Handles readiness of the client at `key`: reads its request (or
    /// discards what it sends during a stream or a closing reply), answers,
    /// writes what it can.
    pub fn ready(
        &mut self,
        key: usize,
        readable: bool,
        now: Instant,
        starting: bool,
        env: &mut Env,
    ) -> Option<Asked> {
        let conn = self.conns.get_mut(key)?;
        if readable {
            match read_in(conn) {
                Peer::Open => {}
                Peer::Ended => conn.client.ended = true,
                Peer::Failed => {
                    self.close(key, env.registry);
                    return None;
                }
            }
            if matches!(conn.client.state, State::Request { .. }) {
                if let Some(asked) = self.respond(key, now, starting, env.deadlines) {
                    return Some(asked);
                }
            }
            // The client's end closes an unfinished request, or a connection
            // with nothing more to send: not a reply, a stream or a waiting
            // snapshot asked for before it. A client that has gone answers
            // the next write with a reset, which a read then reports as the
            // end again, not as the error: ask the socket for it.
            let conn = &self.conns[key];
            let reset = || !matches!(conn.socket.take_error(), Ok(None));
            if conn.client.finished() || (conn.client.ended && reset()) {
                self.close(key, env.registry);
                return None;
            }
        }
        self.pump(key, now, env);
        None
    }

    /// Sends a whole reply the caller built (for [`Asked`]).
    pub fn reply(
        &mut self,
        key: usize,
        head: Vec<u8>,
        connection: Connection,
        now: Instant,
        env: &mut Env,
    ) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.client.reply(head, None, connection, now);
        self.pump(key, now, env);
    }

    /// Routes a complete request; leaves a partial one to wait for more.
    fn respond(
        &mut self,
        key: usize,
        now: Instant,
        starting: bool,
        deadlines: &mut Deadlines,
    ) -> Option<Asked> {
        let conn = &mut self.conns[key];
        if !matches!(conn.client.state, State::Request { .. }) {
            return None;
        }
        let (parsed, message) = http::parse_message(conn.client.input());
        if parsed == http::Parsed::Partial {
            return None;
        }
        let ctx = Ctx {
            credentials: self.policy.credentials.as_deref(),
            extra: &self.policy.extra_headers,
            latest: self.latest.as_ref(),
            starting,
            unix_micros: unix_micros(),
            connection: conn.client.answering(message),
        };
        match router::respond(parsed, &ctx) {
            Reply::Stream { head, framing, frame_interval } => {
                // While the camera starts, the last frame of its previous run
                // may be minutes old: a new viewer waits for the placeholder.
                let latest = self.latest.as_ref();
                let stale = starting && latest.is_some_and(|f| f.live());
                conn.client.stream(head, framing, frame_interval, latest, !stale, now);
                self.census.streaming += 1;
            }
            Reply::Whole { head, jpeg, connection } => {
                conn.client.reply(head, jpeg, connection, now)
            }
            Reply::Figures { format, head_only, connection } => {
                return Some(Asked::Figures { format, head_only, connection })
            }
            Reply::Await { head_only, connection } => {
                let until = now + router::SNAPSHOT_WAIT;
                conn.client.await_frame(head_only, connection);
                conn.retry_at = Some(until);
                deadlines.retry(key, until);
                self.awaiting.push(key);
            }
        }
        None
    }

    /// Answers a waiting snapshot with the latest frame, whatever it is.
    fn answer_awaiting(&mut self, key: usize, now: Instant, env: &mut Env) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Awaiting { head_only, connection } = conn.client.state else { return };
        self.awaiting.retain(|&k| k != key);
        let extra = &self.policy.extra_headers;
        match router::snapshot(self.latest.as_ref(), extra, head_only, connection) {
            Reply::Whole { head, jpeg, connection } => {
                conn.client.reply(head, jpeg, connection, now)
            }
            _ => unreachable!("a snapshot is a whole reply"),
        }
        self.pump(key, now, env);
    }

    /// Writes until the client's socket would block or it has nothing to
    /// send, taking the newest frame whenever it finishes one; then files
    /// the client under what it waits for, and counts the frame it holds.
    fn pump(&mut self, key: usize, now: Instant, env: &mut Env) {
        self.pump_out(key, now, env);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let holding = conn.client.holding();
        if holding != conn.held {
            if let Some(old) = std::mem::replace(&mut conn.held, holding) {
                self.held.release(old);
            }
            if let Some(new) = holding {
                self.held.hold(new);
            }
        }
    }

    fn pump_out(&mut self, key: usize, now: Instant, env: &mut Env) {
        let max_queued = self.policy.max_queued_bytes;
        let Some(conn) = self.conns.get_mut(key) else { return };
        let next = loop {
            match write_out(conn, env.stats) {
                Ok(true) => {}
                Ok(false) => break Next::Write,
                // The peer is gone.
                Err(_) => return self.close(key, env.registry),
            }
            let diag = &mut self.diag;
            let look = || look(&conn.socket, &mut conn.peer, diag, max_queued);
            match conn.client.next(self.latest.as_ref(), now, env.stats, look) {
                Next::Write => continue,
                Next::Shutdown => {
                    self.census.closing += 1;
                    // A client that has ended its side will send nothing
                    // more, so closing at once cannot reset the reply.
                    if conn.socket.shutdown(Shutdown::Write).is_err() || conn.client.finished() {
                        return self.close(key, env.registry);
                    }
                    break Next::Read;
                }
                other => break other,
            }
        };
        match next {
            Next::Idle => {
                conn.retry_at = None;
                self.set_idle(key, true);
            }
            Next::Retry(at) => {
                if conn.retry_at != Some(at) {
                    conn.retry_at = Some(at);
                    env.deadlines.retry(key, at);
                }
                self.set_idle(key, true);
            }
            Next::Write | Next::Shutdown => {
                conn.retry_at = None;
                self.set_idle(key, false);
            }
            // A next request in its input or left in its socket, or its
            // end, comes with no new event (edge-triggered): look this turn.
            // Otherwise the request's bytes will bring an event; reading now
            // would only find the socket empty.
            Next::Request => {
                let client = &conn.client;
                if !client.input().is_empty() || client.ended || conn.unread {
                    conn.retry_at = Some(now);
                    env.deadlines.retry(key, now);
                }
                self.set_idle(key, false);
            }
            // A waiting snapshot keeps its deadline.
            Next::Read => self.set_idle(key, false),
        }
    }

    /// A retry set for the client at `key` came due: a viewer looks at the
    /// newest frame again, a waiting snapshot is answered with what there
    /// is, a kept-alive connection reads its next request.
    pub fn retry(
        &mut self,
        key: usize,
        at: Instant,
        now: Instant,
        starting: bool,
        env: &mut Env,
    ) -> Option<Asked> {
        if self.conns.get(key).is_none_or(|c| c.retry_at != Some(at)) {
            return None;
        }
        self.conns[key].retry_at = None;
        match self.conns[key].client.state {
            State::Awaiting { .. } => self.answer_awaiting(key, now, env),
            State::Request { .. } => return self.ready(key, true, now, starting, env),
            _ => self.pump(key, now, env),
        }
        None
    }

    fn set_idle(&mut self, key: usize, idle: bool) {
        let at = self.conns[key].idle_at;
        match (idle, at) {
            (true, None) => {
                self.conns[key].idle_at = Some(self.idle.len());
                self.idle.push(key);
            }
            (false, Some(i)) => {
                self.idle.swap_remove(i);
                if let Some(&moved) = self.idle.get(i) {
                    self.conns[moved].idle_at = Some(i);
                }
                self.conns[key].idle_at = None;
            }
            _ => {}
        }
    }

    /// Makes `jpeg` the latest frame and writes it to every idle viewer;
    /// waiting snapshots get it too.
    pub fn publish(&mut self, jpeg: Vec<u8>, read_at: Instant, env: &mut Env) {
        self.make_room(jpeg.len(), env);
        self.seq += 1;
        let extra = &self.policy.extra_headers;
        let frame = Rc::new(Frame::new(self.seq, jpeg, read_at, unix_micros(), extra));
        self.last_live = Some(Rc::clone(&frame));
        self.fan_out(frame, env);
        let now = Instant::now();
        for key in std::mem::take(&mut self.awaiting) {
            self.answer_awaiting(key, now, env);
        }
    }

    /// Sends viewers a notice made while the source has no frames
    /// ([`Frame::notice`]): never a latency sample or a fresh snapshot.
    pub fn publish_notice(&mut self, jpeg: Vec<u8>, state: &'static str, env: &mut Env) {
        self.make_room(jpeg.len(), env);
        self.seq += 1;
        let extra = &self.policy.extra_headers;
        let frame = Rc::new(Frame::notice(self.seq, jpeg, unix_micros(), extra, state));
        self.fan_out(frame, env);
    }

    /// Keeps the frames clients hold, with a new one of `len` bytes, within
    /// `--max-held-bytes`: closes the clients holding the oldest frames
    /// first (never the newest frame's), as Redis closes clients past their
    /// output limit. One log line per burst.
    fn make_room(&mut self, len: usize, env: &mut Env) {
        let budget = self.policy.max_held_bytes;
        let newest = self.latest.as_ref().map(|f| f.seq);
        let (mut clients, freed_before) = (0, self.held.bytes);
        while self.held.bytes + len > budget {
            let Some(oldest) = self.held.oldest().filter(|&seq| Some(seq) != newest) else {
                break;
            };
            let mut holders = std::mem::take(&mut self.scratch);
            holders.clear();
            holders.extend(
                self.conns
                    .iter()
                    .filter(|(_, c)| c.held.is_some_and(|(seq, _)| seq == oldest))
                    .map(|(k, _)| k),
            );
            for &key in &holders {
                self.close(key, env.registry);
            }
            clients += holders.len();
            self.scratch = holders;
        }
        if clients > 0 {
            env.stats.clients_evicted += clients as u64;
            log!(
                "warning: closed {clients} clients holding {} KiB of older frames, to keep \
                 what clients hold within --max-held-bytes {budget}",
                (freed_before - self.held.bytes) / 1024
            );
        }
    }

    /// Bytes of distinct frames clients hold while they send them.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes
    }

    fn fan_out(&mut self, frame: Rc<Frame>, env: &mut Env) {
        self.latest = Some(frame);
        let mut order = std::mem::take(&mut self.scratch);
        order.clear();
        order.extend_from_slice(&self.idle);
        let count = order.len();
        self.rotation = self.rotation.wrapping_add(1);
        let now = Instant::now();
        for i in 0..count {
            let key = order[(self.rotation + i) % count];
            self.pump(key, now, env);
        }
        self.scratch = order;
    }

    /// Once a second: per-viewer rates, and closing clients that overstayed.
    pub fn tick(&mut self, now: Instant, env: &mut Env) {
        let p = &self.policy;
        let mut expired = std::mem::take(&mut self.scratch);
        expired.clear();
        for (key, conn) in self.conns.iter_mut() {
            if let State::Streaming(s) = &mut conn.client.state {
                s.fps = s.frames - s.frames_at_tick;
                s.frames_at_tick = s.frames;
            }
            let look = || look(&conn.socket, &mut conn.peer, &mut self.diag, p.max_queued_bytes);
            if conn.client.expired(now, p.request_timeout, p.client_timeout, LINGER, look) {
                expired.push(key);
            }
        }
        for &key in &expired {
            let client = &self.conns[key].client;
            // Neither a lingering close nor an unused kept-alive connection
            // is the client's failure.
            if !matches!(client.state, State::Closing { .. }) && !client.between_requests() {
                env.stats.clients_timed_out += 1;
            }
            self.close(key, env.registry);
        }
        self.scratch = expired;
    }

    /// Closes the client at `key`: the one place a client leaves.
    pub fn close(&mut self, key: usize, registry: &Registry) {
        if !self.conns.contains(key) {
            return;
        }
        self.set_idle(key, false);
        if matches!(self.conns[key].client.state, State::Awaiting { .. }) {
            self.awaiting.retain(|&k| k != key);
        }
        let mut conn = self.conns.remove(key);
        self.census.left(&conn.client.state);
        if let Some(held) = conn.held {
            self.held.release(held);
        }
        // The frames it had not taken are skipped for good now.
        self.pending_closed += conn.client.pending_skips(self.seq);
        let _ = registry.deregister(&mut conn.socket);
        self.freed = true;
    }

    /// Frames live viewers have not taken and never will, plus those of
    /// viewers that left: a walk of every client, for figures shown.
    pub fn skipped_pending(&self) -> u64 {
        let live: u64 = self.conns.iter().map(|(_, c)| c.client.pending_skips(self.seq)).sum();
        live + self.pending_closed
    }

    /// Per-viewer figures for `/stats`, for the first [`MAX_VIEWERS_LISTED`].
    pub fn json(&self, now: Instant) -> String {
        let mut out = String::from("[");
        let viewers = self.conns.iter().filter_map(|(_, c)| match &c.client.state {
            State::Streaming(s) => Some((c, s)),
            _ => None,
        });
        for (i, (c, s)) in viewers.take(MAX_VIEWERS_LISTED).enumerate() {
            let unsent = tcp::unsent_bytes(&c.socket).unwrap_or(0);
            let _ = write!(
                out,
                "{}{{\"addr\":\"{}\",\"age_s\":{:.1},\"fps\":{},\"frames\":{},\"skipped\":{},\
                 \"skipped_reading\":{},\"pending_bytes\":{},\"kernel_unsent_bytes\":{},\
                 \"unread_bytes\":{},\"unread_from\":\"{}\",\"reader_fps\":{:.1},\
                 \"bytes_sent\":{}}}",
                if i == 0 { "" } else { "," },
                c.addr,
                now.duration_since(c.client.accepted).as_secs_f64(),
                s.fps,
                s.frames,
                s.skipped + c.client.pending_skips(self.seq),
                s.skipped_reading,
                c.client.queued_bytes(),
                unsent,
                s.reader.unread,
                if s.reader.here { "socket" } else { "window" },
                s.reader.fps(),
                c.client.bytes_sent,
            );
        }
        out.push(']');
        out
    }
}

/// What reading found of the client's side of the connection.
enum Peer {
    Open,
    /// It ended its side: a close, or a half-close.
    Ended,
    /// An error, such as a reset: the client is gone.
    Failed,
}

/// One look at a viewer's connection: its `TCP_INFO`, and for a viewer on
/// this host what its own socket holds unread, unless ours holds
/// `max_queued` (its frame waits for the path, whatever it has read: the
/// lookup, five times the cost of `TCP_INFO`, would change nothing, and
/// such viewers are looked at every [`crate::client::QUEUE_RETRY`]). A
/// viewer not found here is not asked again.
fn look(
    socket: &TcpStream,
    peer: &mut Option<sock_diag::Peer>,
    diag: &mut Option<Diag>,
    max_queued: usize,
) -> Option<Look> {
    let mut look = tcp::look(socket)?;
    if tcp::backlog(&look, max_queued) == Backlog::Full {
        return Some(look);
    }
    if let (Some(p), Some(diag)) = (peer.as_ref(), diag.as_mut()) {
        match diag.unread(p) {
            Lookup::Unread(n) => look.peer_unread = Some(n),
            Lookup::Elsewhere => *peer = None,
            Lookup::Unknown => {}
        }
    }
    Some(look)
}

/// Writes with `writev` until the output is sent (true) or the socket is
/// full (false).
fn write_out(conn: &mut Conn, stats: &mut Stats) -> io::Result<bool> {
    while !conn.client.idle() {
        let mut iov = [IoSlice::new(&[]); 4];
        let n = conn.client.iovecs(&mut iov);
        match conn.socket.write_vectored(&iov[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                conn.client.wrote(k);
                stats.bytes_out += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.client.would_block();
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads what the client sent, until the socket is empty. What its next
/// request needs is kept, up to the client's input room ([`Client::input_room`]):
/// the rest stays in the socket until the request before it is answered.
/// What it sends during a stream or a closing reply is thrown away, at most
/// [`DRAIN_PER_EVENT`] bytes a call.
fn read_in(conn: &mut Conn) -> Peer {
    let mut chunk = [0; READ_CHUNK];
    let mut drained = 0;
    loop {
        let room = conn.client.input_room();
        let len = match room {
            Some(0) => {
                conn.unread = true;
                return Peer::Open;
            }
            Some(room) => room.min(READ_CHUNK),
            None if drained >= DRAIN_PER_EVENT => return Peer::Open,
            None => READ_CHUNK,
        };
        match conn.socket.read(&mut chunk[..len]) {
            Ok(0) => {
                conn.unread = false;
                return Peer::Ended;
            }
            Ok(n) if room.is_some() => conn.client.received(&chunk[..n]),
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.unread = false;
                return Peer::Open;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Peer::Failed,
        }
    }
}

pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewers(max_clients: usize) -> Viewers {
        Viewers::new(Policy {
            max_clients,
            max_queued_bytes: 0,
            max_held_bytes: 1 << 20,
            request_timeout: Duration::from_secs(1),
            client_timeout: Duration::from_secs(1),
            credentials: None,
            extra_headers: String::new(),
        })
    }

    #[test]
    #[cfg_attr(
        debug_assertions,
        should_panic(expected = "the census counts 0 streaming and 1 closing of 0 clients")
    )]
    fn a_census_that_drifted_past_the_clients_is_caught_and_never_shuts_everyone_out() {
        let mut v = viewers(2);
        v.census.closing = 1;
        assert!(!v.full());
    }

    #[test]
    fn with_no_client_there_is_room() {
        assert!(!viewers(1).full());
        assert!(viewers(0).full());
    }
}
