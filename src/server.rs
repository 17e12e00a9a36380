/*!
The poll loop: one thread, one `mio::Poll`, and nothing in it ever blocks.

It owns the listener, the input driver, a signal source, the viewer set and
the deadline set. Each turn waits for readiness or the earliest deadline,
hands each event to its owner, then runs whatever came due. The parts do
the work; this file only moves events between them:

- [`InputDriver`](crate::source::InputDriver) reads the input and yields frames;
- [`Viewers`] publishes them and serves every client;
- [`Deadlines`] says how long `poll` may sleep.
*/

use crate::cli::Config;
use crate::deadlines::{Deadlines, Timer};
use crate::http::{self, Status};
use crate::router;
use crate::source::{self, InputDriver};
use crate::stats::{self, Stats};
use crate::viewers::{Asked, Policy, Viewers};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const INPUT: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Events taken per wake-up; more simply wait for the next `poll`.
const EVENTS: usize = 1024;

/// Connections accepted per turn (Redis's `MAX_ACCEPTS_PER_CALL`): a
/// connection storm must not hold up the frames of those already watching.
/// The rest wait in the backlog for the next turn, which comes at once.
const ACCEPTS_PER_TURN: usize = 1000;

/// How often timeouts are checked and rates updated.
const TICK: Duration = Duration::from_secs(1);

/// Out of file descriptors, the listener rests this long before accepting
/// again: the waiting connections stay in the kernel's backlog, and the
/// loop does not spin on an accept that cannot succeed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After the input ends, clients get this long to take the frame they are
/// being sent before the server exits.
const DRAIN: Duration = Duration::from_secs(2);

/// The listen backlog: connection storms wait here rather than being refused.
const BACKLOG: i32 = 1024;

pub struct Server {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    input: InputDriver,
    viewers: Viewers,
    stats: Stats,
    deadlines: Deadlines,
    /// Out of descriptors: accepting waits for a client to leave, or for
    /// [`Timer::Accept`].
    accept_paused: bool,
    /// The input ended or a signal came: no new clients, and the loop ends
    /// once viewers have their frame or [`Timer::Drain`] comes.
    draining: bool,
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
    pub fn new(config: Config, listener: TcpListener, input: InputDriver) -> io::Result<Server> {
        let now = Instant::now();
        let policy = Policy {
            max_clients: config.max_clients,
            max_queued_bytes: config.max_queued_bytes as usize,
            request_timeout: config.request_timeout,
            client_timeout: config.client_timeout,
            credentials: config.credentials.clone(),
            extra_headers: router::cors_headers(config.allow_origin.as_deref()),
        };
        let mut server = Server {
            poll: Poll::new()?,
            listener,
            signals: Signals::new([SIGINT, SIGTERM, SIGHUP])?,
            input,
            viewers: Viewers::new(policy),
            stats: Stats::new(now),
            deadlines: Deadlines::default(),
            accept_paused: false,
            draining: false,
            config,
        };
        let registry = server.poll.registry();
        registry.register(&mut server.listener, LISTENER, Interest::READABLE)?;
        registry.register(&mut server.signals, SIGNALS, Interest::READABLE)?;
        server.input.register(registry, INPUT)?;
        server.deadlines.set(Timer::Tick, Some(now + TICK));
        server.deadlines.set(Timer::Stats, server.config.stats_every.map(|every| now + every));
        Ok(server)
    }

    /// Runs until the input ends or a signal asks to stop, and then until
    /// viewers have the frame they are being sent (at most [`DRAIN`]); a
    /// second signal ends it at once. Errors of single clients never end it;
    /// an input that fails does.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            if self.draining
                && (self.viewers.drained() || self.deadlines.take_due(Timer::Drain, now))
            {
                return Ok(());
            }
            self.deadlines.set(Timer::Input, self.input.deadline(now));
            match self.poll.poll(&mut events, self.deadlines.timeout(now)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    INPUT => self.read_input(now)?,
                    SIGNALS => {
                        if self.signalled(now) {
                            return Ok(());
                        }
                    }
                    Token(key) => self.client_ready(key, event.is_readable(), now),
                }
            }
            self.run_due(Instant::now())?;
        }
    }

    /// Whatever in the deadline set has come due.
    fn run_due(&mut self, now: Instant) -> io::Result<()> {
        if self.deadlines.take_due(Timer::Input, now) {
            self.read_input(now)?;
        }
        let registry = self.poll.registry();
        while let Some((key, at)) = self.deadlines.pop_retry(now) {
            self.viewers.retry(key, at, now, &mut self.stats, &mut self.deadlines, registry);
        }
        // A client left: a descriptor is free for those in the backlog.
        let freed = self.viewers.take_freed() && self.accept_paused;
        if freed || self.deadlines.take_due(Timer::Accept, now) {
            self.accept_paused = false;
            self.accept(now);
        }
        if self.deadlines.take_due(Timer::Tick, now) {
            self.deadlines.set(Timer::Tick, Some(now + TICK));
            self.stats.tick(now, self.input.counters().frames);
            self.viewers.tick(now, &mut self.stats, self.poll.registry());
        }
        if self.deadlines.take_due(Timer::Stats, now) {
            let every = self.config.stats_every.unwrap_or(TICK);
            self.deadlines.set(Timer::Stats, Some(now + every));
            self.refresh_stats();
            crate::log!("{}", self.stats.line(self.viewers.len()));
        }
        Ok(())
    }

    /// Brings in the figures the parts keep, before any are shown.
    fn refresh_stats(&mut self) {
        self.stats.refresh(self.input.bytes_in, self.viewers.skipped_pending());
    }

    /// The final word on stderr.
    pub fn report(&mut self) -> String {
        self.refresh_stats();
        let now = Instant::now();
        let mut out = self.stats.summary(now, self.input.counters());
        if self.config.stats_every.is_some() {
            out.push_str("\nlatency from read to write, per client and frame:\n");
            out.push_str(&stats::percentile_distribution(&self.stats.latency));
        }
        out
    }

    /// Accepts until the backlog is empty, [`ACCEPTS_PER_TURN`] times, or
    /// descriptors run out.
    fn accept(&mut self, now: Instant) {
        if self.accept_paused || self.draining {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((socket, addr)) => self.admit(socket, addr, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if out_of_resources(&e) => {
                    if self.stats.accept_pauses == 0 {
                        crate::log!(
                            "warning: cannot accept connections: {e}; waiting for clients to leave"
                        );
                    }
                    self.stats.accept_pauses += 1;
                    self.accept_paused = true;
                    self.deadlines.set(Timer::Accept, Some(now + ACCEPT_BACKOFF));
                    return;
                }
                // The peer gave up before we got to it, or a passing fault:
                // the next connection is unaffected.
                Err(_) => {}
            }
        }
        // Edge-triggered: no new event comes for those still waiting.
        self.deadlines.set(Timer::Accept, Some(now));
    }

    fn admit(&mut self, mut socket: TcpStream, addr: SocketAddr, now: Instant) {
        if self.viewers.full() {
            self.stats.clients_refused += 1;
            // Best effort: a fresh socket has room for these few bytes.
            let extra = self.viewers.extra_headers();
            let _ = socket.write(&http::error_response(Status::Unavailable, extra, false));
            // Take in the request if it is there: closing with it unread
            // would send a reset, which can destroy the answer unread.
            let _ = socket.read(&mut [0; 4096]);
            return;
        }
        self.stats.clients_total += 1;
        self.viewers.insert(socket, addr, now, self.poll.registry());
    }

    fn client_ready(&mut self, key: usize, readable: bool, now: Instant) {
        let registry = self.poll.registry();
        let asked =
            self.viewers.ready(key, readable, now, &mut self.stats, &mut self.deadlines, registry);
        if let Some(Asked::Stats { head_only }) = asked {
            // Only now, for /stats, walk the viewers.
            self.stats.refresh(self.input.bytes_in, self.viewers.skipped_pending());
            let json = self.stats.json(
                now,
                self.input.counters(),
                self.viewers.len(),
                &self.viewers.json(now),
            );
            let extra = self.viewers.extra_headers();
            let page = router::page(&json, "application/json", extra, head_only);
            self.viewers.reply(key, page, now, &mut self.stats, &mut self.deadlines, registry);
        }
    }

    /// Reads the input's turn, publishing each frame to the viewers.
    fn read_input(&mut self, now: Instant) -> io::Result<()> {
        let registry = self.poll.registry();
        let (viewers, stats, deadlines) = (&mut self.viewers, &mut self.stats, &mut self.deadlines);
        let status = self.input.read(now, registry, &mut |jpeg, read_at| {
            viewers.publish(jpeg, read_at, stats, deadlines, registry);
        })?;
        if status == source::Status::Ended {
            self.drain(now);
        }
        Ok(())
    }

    /// Takes the pending signals: the first starts draining, like the end
    /// of the input; a second ends the loop at once (returns true).
    fn signalled(&mut self, now: Instant) -> bool {
        for signal in self.signals.pending() {
            if self.draining {
                return true;
            }
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            crate::log!("{name}: finishing the frames in flight, then exiting (again to exit now)");
            self.input.stop(self.poll.registry());
            self.drain(now);
        }
        false
    }

    /// No new clients, no new frames: the loop ends once viewers have the
    /// frame they are being sent, or at [`DRAIN`].
    fn drain(&mut self, now: Instant) {
        if !self.draining {
            self.draining = true;
            let _ = self.poll.registry().deregister(&mut self.listener);
            self.deadlines.set(Timer::Accept, None);
            self.deadlines.set(Timer::Drain, Some(now + DRAIN));
        }
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
