/*!
`mjpeg-probe watch`: many clients of one stream on one thread, measuring how
long each tagged frame took from the source's write to the client's read.

Every client is a non-blocking socket on one edge-triggered mio poll, so
each wake-up reads until `WouldBlock`. The time of a frame's arrival is
taken right after the `read` that returned its last byte, before any
parsing, so the probe's own work is not counted as server latency.

Stalled clients send their request and never read again: they stand for
viewers on a dead link, whom a server must not let slow everyone else down.

Without a reconnect policy a client whose connection fails or ends tries
again 100 ms after its previous attempt, for as long as the run lasts. With
one ([`Reconnect`], from `--reconnect`) it behaves like a viewer behind a load balancer: when
a stream that had given frames ends, fails or breaks, the client tries
again after `first` ms, doubling the wait after each failed try up to `max`
ms, and gives up after `tries` tries in a row without a frame. Each such
loss is timed until the client's next frame (the next tagged frame, for a
client that has seen tagged ones: a relay's "NO SIGNAL" notices are not the
source's), and [`Recovery`] sums these up.
*/

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::clock::now_ns;
use crate::multipart::{self, Multipart};
use crate::report::{self, Latency, Report};
use crate::{jpeg, Fatal};
use raspivid_mjpeg_server::upstream::Url;
use raspivid_mjpeg_server::upstream::{self as http, Dechunker};

/// A part larger than this is an error that closes the client: camera
/// frames are far smaller, and the cap bounds the memory of 1000 clients.
const MAX_PART: usize = 16 << 20;

/// Shared by all clients, since one thread reads one socket at a time; a few
/// reads hold a large frame, and the buffer still fits in L2 cache.
const READ_BUF: usize = 256 * 1024;

/// A client that failed or was closed waits this long after its previous
/// attempt, so that a refusing server is not hammered in a tight loop.
const RETRY_NS: u64 = 100_000_000;

/// The poll loop wakes at least this often to start retries and to notice
/// the end of the run.
const TICK: Duration = Duration::from_millis(100);

/// How long the start-up check waits for the server to listen: a server
/// started in the same pipeline as the probe needs a moment.
const SETUP_WAIT_NS: u64 = 3_000_000_000;

/// Latencies above this (an hour, in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// File descriptors beyond the clients: stdio, the poll, the timeline.
const SPARE_FDS: u64 = 16;

/// How a client comes back after its stream is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Tries in a row without a frame before the client gives up.
    pub tries: u32,
    /// Wait before the first try after a loss.
    pub first_ms: u64,
    /// The wait doubles after each failed try, up to this.
    pub max_ms: u64,
}

impl Reconnect {
    /// `TRIES[,FIRST_MS[,MAX_MS]]`; the waits default to 100 and 2000 ms.
    pub fn parse(spec: &str) -> Result<Reconnect, String> {
        let bad = || format!("reconnect: {spec:?} is not TRIES[,FIRST_MS[,MAX_MS]]");
        let mut fields = spec.split(',').map(|f| f.trim().parse::<u64>().map_err(|_| bad()));
        let tries = fields.next().ok_or_else(bad)??;
        let first_ms = fields.next().transpose()?.unwrap_or(100);
        let max_ms = fields.next().transpose()?.unwrap_or(2000.max(first_ms));
        if fields.next().is_some() || tries == 0 || tries > 1_000_000 || max_ms < first_ms {
            return Err(bad());
        }
        if max_ms > 3_600_000 {
            return Err(format!("reconnect: waits of more than an hour ({max_ms} ms)"));
        }
        Ok(Reconnect { tries: tries as u32, first_ms, max_ms })
    }

    /// The wait before try `failed + 1` after a loss, in ns.
    fn delay_ns(&self, failed: u32) -> u64 {
        let ms = self.first_ms.saturating_mul(1 << failed.min(32)).min(self.max_ms);
        ms * 1_000_000
    }
}

/// What the clients' reconnections came to, over the whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub policy: Option<Reconnect>,
    /// Streams that had given frames and then ended, failed or broke.
    pub losses: u64,
    /// Losses followed by a frame on a new connection.
    pub reconnects: u64,
    /// Connection attempts made after a loss.
    pub attempts: u64,
    /// Clients that used up their tries.
    pub gave_up: u64,
    /// Losses still without a frame at the end of the run (those that gave
    /// up among them).
    pub unrecovered: u64,
    /// Loss to next frame, of each reconnect, in ms, ascending.
    pub recover_ms: Vec<f64>,
}

impl Recovery {
    fn quantile(&self, q: f64) -> Option<f64> {
        report::quantile(&self.recover_ms, q)
    }

    /// Loss to next frame, ms: min, p50, p90, max (None before any).
    fn recovery(&self) -> [Option<f64>; 4] {
        [
            self.recover_ms.first().copied(),
            self.quantile(0.5),
            self.quantile(0.9),
            self.recover_ms.last().copied(),
        ]
    }

    /// The figures as JSON members, without braces, for a report's object.
    pub fn json_members(&self) -> String {
        let [min, p50, p90, max] =
            self.recovery().map(|v| v.map_or("null".to_owned(), |v| format!("{v:.1}")));
        let p = self.policy.unwrap_or(Reconnect { tries: 0, first_ms: 0, max_ms: 0 });
        format!(
            "\"reconnect_tries\":{},\"reconnect_first_ms\":{},\"reconnect_max_ms\":{},\
             \"losses\":{},\"reconnects\":{},\"reconnect_attempts\":{},\"gave_up\":{},\
             \"unrecovered\":{},\"recover_ms_min\":{min},\"recover_ms_p50\":{p50},\
             \"recover_ms_p90\":{p90},\"recover_ms_max\":{max}",
            p.tries,
            p.first_ms,
            p.max_ms,
            self.losses,
            self.reconnects,
            self.attempts,
            self.gave_up,
            self.unrecovered,
        )
    }

    /// `json` (a report's object) with these figures added at its end.
    pub fn merge_into(&self, json: &str) -> String {
        match json.strip_suffix('}') {
            Some(head) => format!("{head},{}}}", self.json_members()),
            None => json.to_owned(),
        }
    }

    /// One line for people.
    pub fn human(&self) -> String {
        let [min, p50, p90, max] =
            self.recovery().map(|v| v.map_or("-".to_owned(), |v| format!("{v:.0}")));
        format!(
            "reconnect    {} lost, {} back ({} attempts), {} gave up, {} still lost; \
             loss to next frame ms min {min} p50 {p50} p90 {p90} max {max}\n",
            self.losses, self.reconnects, self.attempts, self.gave_up, self.unrecovered,
        )
    }
}

pub struct Options {
    pub url: Url,
    pub clients: usize,
    pub stalled: usize,
    pub seconds: f64,
    pub warmup: f64,
    pub timeline: Option<std::path::PathBuf>,
}

enum Phase {
    Connecting,
    Sending {
        sent: usize,
    },
    Head(Vec<u8>),
    Body(Body),
    /// A stalled client that has sent its request.
    Holding,
}

struct Body {
    parts: Multipart,
    dechunk: Option<Dechunker>,
}

struct Client {
    stalled: bool,
    conn: Option<(TcpStream, Phase)>,
    /// When the next connection attempt may start.
    next_try_ns: u64,
    seen: Seen,
    ever_connected: bool,
    /// With a reconnect policy: tries in a row that brought no frame.
    failed_tries: u32,
    /// With a reconnect policy: out of tries, no longer trying.
    gave_up: bool,
}

/// What a reading client has received.
#[derive(Default)]
struct Seen {
    /// The sequence number of the last frame of this connection.
    last_seq: Option<u64>,
    /// Frames in the measured window, over all connections.
    frames: u64,
    /// A well-formed frame came on this connection.
    streaming: bool,
    /// A tagged frame came on some connection: only tagged ones end a loss.
    tagged: bool,
    /// When the stream was lost, until the next frame.
    lost_ns: Option<u64>,
}

/// How a connection ended.
enum End {
    /// It never got a stream: refused, reset, not 200, not multipart.
    Failed(String),
    /// The server ended a stream.
    Closed,
    /// The stream broke (bad framing, oversize part); counted as corrupt.
    Corrupt(String),
}

struct Totals {
    failed: u64,
    closed: u64,
    frames: u64,
    skipped: u64,
    backwards: u64,
    corrupt: u64,
    untagged: u64,
    bytes: u64,
    latency_us: Histogram<u64>,
    last_failure: Option<String>,
    last_corrupt: Option<String>,
    timeline: Option<BufWriter<File>>,
    timeline_error: Option<io::Error>,
    recovery: Recovery,
}

impl Totals {
    fn new(timeline: Option<BufWriter<File>>) -> Totals {
        Totals {
            failed: 0,
            closed: 0,
            frames: 0,
            skipped: 0,
            backwards: 0,
            corrupt: 0,
            untagged: 0,
            bytes: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            last_failure: None,
            last_corrupt: None,
            timeline,
            timeline_error: None,
            recovery: Recovery::default(),
        }
    }
}

/// What does not change during a run.
struct Setup {
    addr: SocketAddr,
    request: Vec<u8>,
    start_ns: u64,
    warm_ns: u64,
    /// Stalled clients come first among the tokens; the timeline numbers
    /// reading clients from 0.
    stalled: usize,
    reconnect: Option<Reconnect>,
}

/// Raises the soft limit on open files to the hard limit, for many clients.
/// Returns the soft limit in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit to write to and read from.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Finds an address of the URL's host that accepts connections, waiting a
/// little for a server that is still starting.
pub(crate) fn find_server(url: &Url) -> Result<SocketAddr, Fatal> {
    let addrs = crate::resolve(url).map_err(|e| Fatal::usage(format!("{}: {e}", url.host)))?;
    let give_up = now_ns() + SETUP_WAIT_NS;
    loop {
        let mut why = format!("{}: no address", url.host);
        for &addr in &addrs {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => return Ok(addr),
                Err(e) => why = format!("cannot connect to {addr}: {e}"),
            }
        }
        if now_ns() >= give_up {
            return Err(Fatal::usage(why));
        }
        std::thread::sleep(Duration::from_nanos(RETRY_NS));
    }
}

/// A run with the given reconnect policy (none: retry every 100 ms).
pub fn run_with(
    options: &Options,
    reconnect: Option<Reconnect>,
) -> Result<(Report, Recovery), Fatal> {
    let wanted = (options.clients + options.stalled) as u64 + SPARE_FDS;
    let limit = raise_fd_limit();
    if wanted > limit {
        return Err(Fatal::usage(format!(
            "{wanted} file descriptors needed, RLIMIT_NOFILE allows {limit}"
        )));
    }
    let timeline = match &options.timeline {
        None => None,
        Some(path) => {
            let file =
                File::create(path).map_err(|e| Fatal::usage(format!("{}: {e}", path.display())))?;
            let mut file = BufWriter::new(file);
            let _ = file.write_all(b"t_s,latency_ms,client\n");
            Some(file)
        }
    };
    let addr = find_server(&options.url)?;
    let mut poll = Poll::new().map_err(|e| Fatal::usage(format!("poll: {e}")))?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0; READ_BUF];

    let start_ns = now_ns();
    let setup = Setup {
        addr,
        request: options.url.request("mjpeg-probe"),
        start_ns,
        warm_ns: start_ns + (options.warmup * 1e9) as u64,
        stalled: options.stalled,
        reconnect,
    };
    let end_ns = start_ns + (options.seconds * 1e9) as u64;
    let mut totals = Totals::new(timeline);
    // Stalled clients come first, so that they are in place before any
    // reading client starts to measure.
    let mut clients: Vec<Client> = (0..options.stalled + options.clients)
        .map(|i| Client {
            stalled: i < options.stalled,
            conn: None,
            next_try_ns: 0,
            seen: Seen::default(),
            ever_connected: false,
            failed_tries: 0,
            gave_up: false,
        })
        .collect();
    // When the next client is due to try again.
    let mut next_due = 0;
    loop {
        let now = now_ns();
        if now >= end_ns {
            break;
        }
        if now >= next_due {
            next_due = now + RETRY_NS / 2;
            for (i, client) in clients.iter_mut().enumerate() {
                if client.conn.is_none() && !client.gave_up && now >= client.next_try_ns {
                    connect(client, i, &poll, &setup, &mut totals, now);
                }
                if client.conn.is_none() && !client.gave_up {
                    next_due = next_due.min(client.next_try_ns);
                }
            }
        }
        let timeout = Duration::from_nanos(end_ns.min(next_due).saturating_sub(now)).min(TICK);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(Fatal::runtime(format!("poll: {e}")));
        }
        for event in &events {
            let i = event.token().0;
            if let Err(end) = drive(&mut clients[i], i, &poll, &setup, &mut buf, &mut totals) {
                close(&mut clients[i], &poll, &setup, &mut totals, end);
                next_due = next_due.min(clients[i].next_try_ns);
            }
        }
    }
    if let Some(e) = totals.timeline_error.take() {
        return Err(Fatal::runtime(format!("timeline: {e}")));
    }
    if let Some(mut timeline) = totals.timeline.take() {
        timeline.flush().map_err(|e| Fatal::runtime(format!("timeline: {e}")))?;
    }
    let report = report(options, &clients, &totals);
    let mut recovery = std::mem::take(&mut totals.recovery);
    recovery.policy = reconnect;
    recovery.unrecovered = clients.iter().filter(|c| c.seen.lost_ns.is_some()).count() as u64;
    recovery.recover_ms.sort_by(f64::total_cmp);
    Ok((report, recovery))
}

fn report(options: &Options, clients: &[Client], totals: &Totals) -> Report {
    let window = options.seconds - options.warmup;
    let readers = || clients.iter().filter(|c| !c.stalled);
    let h = &totals.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = (!h.is_empty()).then(|| Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        samples: h.len(),
    });
    let holding = |c: &&Client| matches!(c.conn, Some((_, Phase::Holding)));
    Report {
        clients: options.clients,
        stalled: options.stalled,
        stalled_open: clients.iter().filter(holding).count(),
        connected: readers().filter(|c| c.ever_connected).count(),
        failed: totals.failed,
        closed: totals.closed,
        frames: totals.frames,
        fps: readers().map(|c| c.seen.frames as f64 / window).collect(),
        skipped: totals.skipped,
        backwards: totals.backwards,
        corrupt: totals.corrupt,
        untagged: totals.untagged,
        bytes: totals.bytes,
        latency,
        seconds: window,
        warmup: options.warmup,
        last_failure: totals.last_failure.clone(),
        last_corrupt: totals.last_corrupt.clone(),
    }
}

fn connect(
    client: &mut Client,
    token: usize,
    poll: &Poll,
    setup: &Setup,
    totals: &mut Totals,
    now: u64,
) {
    client.next_try_ns = now + RETRY_NS;
    if client.seen.lost_ns.is_some() {
        totals.recovery.attempts += 1;
    }
    let registered = TcpStream::connect(setup.addr).and_then(|mut stream| {
        poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    });
    match registered {
        Ok(stream) => client.conn = Some((stream, Phase::Connecting)),
        Err(e) => {
            count_end(totals, End::Failed(format!("connect: {e}")));
            schedule(client, setup, totals, now);
        }
    }
}

fn close(client: &mut Client, poll: &Poll, setup: &Setup, totals: &mut Totals, end: End) {
    if let Some((mut stream, _)) = client.conn.take() {
        let _ = poll.registry().deregister(&mut stream);
    }
    count_end(totals, end);
    schedule(client, setup, totals, now_ns());
    client.seen.last_seq = None;
    client.seen.streaming = false;
}

/// With a reconnect policy, after a connection ended or failed at `now`:
/// counts a lost stream, or a failed try, and sets when to try next.
/// Without one, the next try stays 100 ms after the last attempt.
fn schedule(client: &mut Client, setup: &Setup, totals: &mut Totals, now: u64) {
    let Some(policy) = setup.reconnect else { return };
    if client.seen.streaming && client.seen.lost_ns.is_none() {
        client.seen.lost_ns = Some(now);
        client.failed_tries = 0;
        totals.recovery.losses += 1;
    } else {
        client.failed_tries += 1;
        if client.failed_tries >= policy.tries {
            client.gave_up = true;
            totals.recovery.gave_up += 1;
            return;
        }
    }
    client.next_try_ns = now + policy.delay_ns(client.failed_tries);
}

fn count_end(totals: &mut Totals, end: End) {
    match end {
        End::Failed(why) => {
            totals.failed += 1;
            totals.last_failure = Some(why);
        }
        End::Closed => totals.closed += 1,
        End::Corrupt(why) => {
            totals.corrupt += 1;
            totals.last_corrupt = Some(why);
        }
    }
}

/// Takes a client as far as its socket allows: edge-triggered readiness is
/// reported once, so every step runs until it would block.
fn drive(
    client: &mut Client,
    token: usize,
    poll: &Poll,
    setup: &Setup,
    buf: &mut [u8],
    totals: &mut Totals,
) -> Result<(), End> {
    let Some((stream, phase)) = client.conn.as_mut() else {
        return Ok(()); // An event for a connection closed earlier in the batch.
    };
    if let Phase::Connecting = phase {
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(End::Failed(format!("connect: {e}"))),
        }
        match stream.peer_addr() {
            Ok(_) => *phase = Phase::Sending { sent: 0 },
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(End::Failed(format!("connect: {e}"))),
        }
    }
    if let Phase::Sending { sent } = phase {
        while *sent < setup.request.len() {
            match stream.write(&setup.request[*sent..]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(End::Failed(format!("request: {e}"))),
            }
        }
        if client.stalled {
            // Never read again; the socket stays open, unwatched.
            let _ = poll.registry().deregister(stream);
            *phase = Phase::Holding;
            return Ok(());
        }
        *phase = Phase::Head(Vec::new());
    }
    loop {
        let n = match stream.read(buf) {
            Ok(0) if matches!(phase, Phase::Head(_)) => {
                return Err(End::Failed("closed before a response".into()))
            }
            Ok(0) => return Err(End::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(phase, Phase::Head(_)) => {
                return Err(End::Failed(format!("read: {e}")))
            }
            Err(_) => return Err(End::Closed),
        };
        let now = now_ns();
        totals.bytes += n as u64;
        let mut data = &mut buf[..n];
        // What followed the head in its last read: the start of the body.
        let mut rest;
        if let Phase::Head(head) = phase {
            head.extend_from_slice(data);
            let Some((parsed, len)) =
                http::parse_head(head).map_err(|e| End::Failed(e.to_string()))?
            else {
                continue;
            };
            let boundary = multipart::boundary(&head[..len]);
            let Some(parts) = boundary.and_then(|b| Multipart::new(&b, MAX_PART)) else {
                return Err(End::Failed("Content-Type has no usable boundary parameter".into()));
            };
            rest = head.split_off(len);
            data = &mut rest;
            client.ever_connected = true;
            let dechunk = parsed.chunked.then(Dechunker::default);
            *phase = Phase::Body(Body { parts, dechunk });
        }
        let Phase::Body(body) = phase else { unreachable!("the head was read above") };
        if let Some(dechunk) = &mut body.dechunk {
            let len = dechunk.decode(data).map_err(|e| End::Corrupt(e.to_string()))?;
            data = &mut data[..len];
        }
        let mut data = &*data;
        while !data.is_empty() {
            let fed = body.parts.feed(data).map_err(|e| End::Corrupt(e.to_string()))?;
            data = &data[fed.consumed..];
            if fed.part && frame(body.parts.part(), now, token, &mut client.seen, setup, totals) {
                client.failed_tries = 0;
            }
        }
        if body.parts.finished() || body.dechunk.as_ref().is_some_and(Dechunker::finished) {
            return Err(End::Closed);
        }
    }
}

/// Accounts for one part that arrived at `now`; true if it was a
/// well-formed frame.
fn frame(
    part: &[u8],
    now: u64,
    token: usize,
    seen: &mut Seen,
    setup: &Setup,
    totals: &mut Totals,
) -> bool {
    let measured = now >= setup.warm_ns;
    let tag = jpeg::read_tag(part);
    // Even a corrupt frame was sent, not skipped, if its tag can be read.
    if let Some(tag) = tag {
        match seen.last_seq.replace(tag.seq) {
            Some(last) if measured && tag.seq <= last => totals.backwards += 1,
            Some(last) if measured => totals.skipped += tag.seq - last - 1,
            _ => {}
        }
    }
    if let Err(e) = jpeg::check(part) {
        totals.corrupt += 1;
        totals.last_corrupt = Some(format!("frame {e}"));
        return false;
    }
    seen.streaming = true;
    seen.tagged |= tag.is_some();
    if let Some(lost) = seen.lost_ns {
        if tag.is_some() || !seen.tagged {
            seen.lost_ns = None;
            totals.recovery.reconnects += 1;
            totals.recovery.recover_ms.push(now.saturating_sub(lost) as f64 / 1e6);
        }
    }
    if !measured {
        return true;
    }
    seen.frames += 1;
    totals.frames += 1;
    let Some(tag) = tag else {
        totals.untagged += 1;
        return true;
    };
    let latency_ns = now.saturating_sub(tag.sent_ns);
    totals.latency_us.saturating_record((latency_ns / 1000).max(1));
    if let (Some(timeline), None) = (&mut totals.timeline, &totals.timeline_error) {
        let t = (now - setup.start_ns) as f64 / 1e9;
        let client = token - setup.stalled;
        if let Err(e) = writeln!(timeline, "{t:.6},{:.3},{client}", latency_ns as f64 / 1e6) {
            totals.timeline_error = Some(e);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::tests::sample;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn tagged(seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut frame = jpeg::with_tag(&sample());
        jpeg::stamp(&mut frame, seq, sent_ns);
        frame
    }

    #[test]
    fn frames_are_counted_after_the_warm_up() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let setup = Setup {
            addr,
            request: Vec::new(),
            start_ns: 0,
            warm_ns: 1_000,
            stalled: 0,
            reconnect: None,
        };
        let mut totals = Totals::new(None);
        let mut seen = Seen::default();
        // In the warm-up: only the sequence number is kept.
        frame(&tagged(5, 0), 500, 0, &mut seen, &setup, &mut totals);
        assert_eq!((seen.frames, totals.frames, totals.latency_us.len()), (0, 0, 0));
        frame(&tagged(6, 1_000), 2_001_000, 0, &mut seen, &setup, &mut totals);
        frame(&tagged(9, 2_000_000), 2_500_000, 0, &mut seen, &setup, &mut totals);
        frame(&tagged(3, 3_000_000), 2_500_000, 0, &mut seen, &setup, &mut totals);
        frame(&sample(), 2_600_000, 0, &mut seen, &setup, &mut totals);
        let mut broken = tagged(4, 0);
        broken.pop();
        frame(&broken, 2_700_000, 0, &mut seen, &setup, &mut totals);
        frame(&tagged(6, 0), 2_800_000, 0, &mut seen, &setup, &mut totals);
        assert_eq!(seen.frames, 5);
        assert_eq!(seen.last_seq, Some(6));
        assert_eq!(
            (totals.frames, totals.skipped, totals.backwards, totals.untagged, totals.corrupt),
            (5, 2 + 1, 1, 1, 1)
        );
        let h = &totals.latency_us;
        // 2000 µs, 500 µs, 1 µs (sent after it arrived: clamped), 2800 µs.
        assert_eq!((h.len(), h.min(), h.max()), (4, 1, 2801));
    }

    /// A server that sends each connection `frames` tagged frames in a
    /// chunked multipart body, then closes it.
    fn serve(listener: TcpListener, frames: u64, stop: &AtomicBool) {
        serve_streams(listener, frames, u64::MAX, stop);
    }

    /// As [`serve`], for at most `streams` streams; then the listener closes.
    fn serve_streams(listener: TcpListener, frames: u64, streams: u64, stop: &AtomicBool) {
        listener.set_nonblocking(true).unwrap();
        let mut served = 0;
        while served < streams && !stop.load(Ordering::Relaxed) {
            let Ok((mut socket, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            socket.set_nonblocking(false).unwrap();
            let mut request = [0; 1024];
            if !matches!(socket.read(&mut request), Ok(n) if n > 0) {
                continue; // The start-up check connects and hangs up.
            }
            served += 1;
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                        Content-Type: multipart/x-mixed-replace; boundary=\"--b\"\r\n\r\n";
            let _ = socket.write_all(head.as_bytes());
            for seq in 0..frames {
                let jpeg = tagged(seq, now_ns());
                let part = [
                    format!("----b\r\nContent-Length: {}\r\n\r\n", jpeg.len()).as_bytes(),
                    &jpeg,
                    b"\r\n",
                ]
                .concat();
                let _ = socket.write_all(format!("{:x}\r\n", part.len()).as_bytes());
                let _ = socket.write_all(&part);
                let _ = socket.write_all(b"\r\n");
            }
            let _ = socket.write_all(b"0\r\n\r\n");
        }
    }

    #[test]
    fn a_run_against_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let server = std::thread::spawn({
            let stop = stop.clone();
            move || serve(listener, 10, &stop)
        });
        let options = Options {
            url: Url::parse(&format!("http://127.0.0.1:{port}/video.mjpg")).unwrap(),
            clients: 2,
            stalled: 1,
            seconds: 0.35,
            warmup: 0.0,
            timeline: None,
        };
        let (report, _) = run_with(&options, None).unwrap();
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        assert_eq!((report.clients, report.stalled, report.connected), (2, 1, 2));
        assert_eq!((report.corrupt, report.skipped, report.untagged), (0, 0, 0));
        // Each stream ends after 10 frames; the client comes back 100 ms
        // after it last connected, so each gets 3 or 4 streams, of which
        // the last may be cut short by the end of the run.
        assert!(report.closed >= 6, "{report:?}");
        assert!(
            (report.closed * 10..=(report.closed + 2) * 10).contains(&report.frames),
            "{report:?}"
        );
        assert_eq!(report.latency.unwrap().samples, report.frames);
    }

    #[test]
    fn reconnect_policies_parse_and_back_off() {
        let p = Reconnect::parse("5").unwrap();
        assert_eq!(p, Reconnect { tries: 5, first_ms: 100, max_ms: 2000 });
        assert_eq!(Reconnect::parse("3, 50,400").unwrap().max_ms, 400);
        assert_eq!(Reconnect::parse("3,5000").unwrap().max_ms, 5000);
        for bad in ["", "0", "x", "3,100,50", "1,2,3,4", "-1"] {
            assert!(Reconnect::parse(bad).is_err(), "{bad:?}");
        }
        let p = Reconnect::parse("9,100,1000").unwrap();
        let waits: Vec<u64> = (0..6).map(|k| p.delay_ns(k) / 1_000_000).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay_ns(u32::MAX), 1_000_000_000);
    }

    #[test]
    fn recovery_figures_merge_into_the_report() {
        let recovery = Recovery {
            policy: Some(Reconnect { tries: 4, first_ms: 10, max_ms: 80 }),
            losses: 3,
            reconnects: 2,
            attempts: 5,
            gave_up: 1,
            unrecovered: 1,
            recover_ms: vec![12.0, 30.5],
        };
        let json = recovery.merge_into("{\"clients\":2}");
        assert_eq!(
            json,
            "{\"clients\":2,\"reconnect_tries\":4,\"reconnect_first_ms\":10,\"reconnect_max_ms\":80,\
             \"losses\":3,\"reconnects\":2,\"reconnect_attempts\":5,\"gave_up\":1,\"unrecovered\":1,\
             \"recover_ms_min\":12.0,\"recover_ms_p50\":12.0,\"recover_ms_p90\":30.5,\
             \"recover_ms_max\":30.5}"
        );
        assert!(Recovery::default().json_members().contains("\"recover_ms_p50\":null"));
        assert!(recovery.human().contains("3 lost, 2 back (5 attempts), 1 gave up"));
    }

    fn local_server(frames: u64) -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let server = std::thread::spawn({
            let stop = stop.clone();
            move || serve(listener, frames, &stop)
        });
        (port, stop, server)
    }

    fn options(port: u16, clients: usize, seconds: f64) -> Options {
        Options {
            url: Url::parse(&format!("http://127.0.0.1:{port}/video.mjpg")).unwrap(),
            clients,
            stalled: 0,
            seconds,
            warmup: 0.0,
            timeline: None,
        }
    }

    #[test]
    fn streams_that_end_are_lost_and_timed_until_the_next_frame() {
        let (port, stop, server) = local_server(10);
        let policy = Reconnect { tries: 3, first_ms: 40, max_ms: 40 };
        let (report, recovery) = run_with(&options(port, 2, 0.5), Some(policy)).unwrap();
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        // Each stream ends after 10 frames sent at once; each client comes
        // back 40 ms later, and its first frame ends the loss.
        assert_eq!(report.corrupt, 0);
        assert!(recovery.losses >= 4, "{recovery:?}");
        assert!(recovery.losses <= recovery.reconnects + 2, "{recovery:?}");
        assert_eq!(recovery.reconnects, recovery.recover_ms.len() as u64);
        // No try failed: each attempt brought a frame, but for losses at
        // the very end.
        assert!(recovery.reconnects <= recovery.attempts, "{recovery:?}");
        assert!(recovery.attempts <= recovery.reconnects + recovery.unrecovered, "{recovery:?}");
        assert_eq!(recovery.gave_up, 0);
        assert!(recovery.recover_ms.iter().all(|&ms| (40.0..200.0).contains(&ms)), "{recovery:?}");
    }

    #[test]
    fn a_client_gives_up_after_its_tries() {
        // One stream for each client, then the server is gone: every try fails.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = AtomicBool::new(false);
        let server = std::thread::spawn(move || serve_streams(listener, 3, 2, &stop));
        let policy = Reconnect { tries: 3, first_ms: 20, max_ms: 40 };
        let (report, recovery) = run_with(&options(port, 2, 0.8), Some(policy)).unwrap();
        server.join().unwrap();
        assert_eq!(report.connected, 2);
        // Each client lost its stream once, then failed 3 tries (after 20,
        // 40 and 40 ms) and stopped trying.
        assert_eq!(
            (recovery.losses, recovery.gave_up, recovery.unrecovered),
            (2, 2, 2),
            "{recovery:?}"
        );
        assert_eq!(recovery.attempts, 6, "{recovery:?}");
        assert_eq!(recovery.reconnects, 0);
    }
}
