/*!
The poll loop: one thread, one `mio::Poll`, and nothing in it ever blocks.

It owns the listener, the source of frames, the signals, the viewer set and
the deadline set. Each turn waits for readiness or the earliest deadline,
hands each event to its owner, then runs whatever came due. The parts do
the work; this file only moves events between them:

- [`Source`] reads where frames come from and yields them;
- [`Viewers`] publishes them and serves every client;
- [`Deadlines`] says how long `poll` may sleep.
*/

use crate::camera;
use crate::cli::Config;
use crate::deadlines::{Deadlines, Timer};
use crate::http::{self, Connection, Status};
use crate::notice::Schedule;
use crate::offline::{self, Renderer};
use crate::router::{self, Format};
use crate::source::{self, Source};
use crate::stats::{self, Figures, Stats};
use crate::systemd::Notifier;
use crate::viewers::{Asked, Env, Policy, Viewers};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The viewer set's [`Env`] from the server's fields, borrowed apart from
/// `viewers` and `source`.
macro_rules! split_env {
    ($server:ident) => {
        &mut Env {
            stats: &mut $server.stats,
            deadlines: &mut $server.deadlines,
            registry: $server.poll.registry(),
        }
    };
}

const LISTENER: Token = Token(usize::MAX - 1);
const SOURCE: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// The camera process's stderr.
const CAMERA_ERRORS: Token = Token(usize::MAX - 4);
/// A notice picture is ready.
const RENDERED: Token = Token(usize::MAX - 5);

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

/// After the source ends, clients get this long to take the frame they are
/// being sent before the server exits.
const DRAIN: Duration = Duration::from_secs(2);

/// The listen backlog: connection storms wait here rather than being refused.
const BACKLOG: i32 = 1024;

pub struct Server {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    source: Source,
    viewers: Viewers,
    stats: Stats,
    deadlines: Deadlines,
    /// Out of descriptors: accepting waits for a client to leave, or for
    /// [`Timer::Accept`].
    accept_paused: bool,
    /// The source ended or a signal came: no new clients, and the loop ends
    /// once viewers have their frame or [`Timer::Drain`] comes, and the
    /// camera, if any, has stopped.
    draining: bool,
    /// Viewers have their frame, or had their time.
    drained: bool,
    /// Makes the notices of a source that can go quiet (a camera, a FIFO).
    renderer: Option<Renderer>,
    /// When viewers are shown a notice instead of frames.
    notices: Schedule,
    /// systemd's notification socket, when run as a `Type=notify` service.
    notifier: Option<Notifier>,
    /// PID 1 of its namespace (a container without an init): every orphan
    /// in it is the server's to reap.
    init: bool,
    /// A descriptor held for when accept runs out of them: closed, it makes
    /// room to take one connection and answer it 503, so that none waits
    /// unanswered.
    spare: Option<File>,
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
    pub fn new(config: Config, listener: TcpListener, source: Source) -> io::Result<Server> {
        let now = Instant::now();
        let policy = Policy {
            max_clients: config.max_clients,
            max_queued_bytes: config.max_queued_bytes as usize,
            max_held_bytes: config.max_held_bytes,
            request_timeout: config.request_timeout,
            client_timeout: config.client_timeout,
            credentials: config.credentials.clone(),
            extra_headers: router::cors_headers(config.allow_origin.as_deref()),
        };
        let mut server = Server {
            poll: Poll::new()?,
            listener,
            source,
            viewers: Viewers::new(policy),
            stats: Stats::new(now),
            deadlines: Deadlines::default(),
            accept_paused: false,
            draining: false,
            drained: false,
            renderer: None,
            notices: Schedule::default(),
            notifier: Notifier::from_env(),
            init: std::process::id() == 1,
            spare: File::open("/dev/null").ok(),
            signals: Signals::new(stop_signals().into_iter().chain([SIGCHLD]))?,
            config,
        };
        let registry = server.poll.registry();
        registry.register(&mut server.listener, LISTENER, Interest::READABLE)?;
        registry.register(&mut server.signals, SIGNALS, Interest::READABLE)?;
        server.source.register(registry, SOURCE)?;
        if server.source.can_go_quiet() {
            let waker = Arc::new(Waker::new(registry, RENDERED)?);
            server.renderer = Some(Renderer::spawn(waker)?);
        }
        server.deadlines.set(Timer::Tick, Some(now + TICK));
        server.deadlines.set(Timer::Stats, server.config.stats_every.map(|every| now + every));
        Ok(server)
    }

    /// Runs until the source ends or a signal asks to stop, and then until
    /// viewers have the frame they are being sent (at most [`DRAIN`]) and
    /// the camera has stopped (at most `--kill-timeout`); a second signal
    /// ends it at once. Errors of single clients never end it; a source
    /// that fails does.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        if let Some(notifier) = &self.notifier {
            notifier.notify("READY=1");
            let now = Instant::now();
            self.deadlines.set(Timer::Watchdog, notifier.watchdog.map(|every| now + every));
        }
        loop {
            let now = Instant::now();
            if self.draining && !self.drained {
                self.drained = self.viewers.drained() || self.deadlines.take_due(Timer::Drain, now);
            }
            if self.drained && self.source.stopped() {
                return Ok(());
            }
            self.deadlines.set(Timer::Source, self.source.deadline(now));
            match self.poll.poll(&mut events, self.deadlines.timeout(now)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    // The listener and the source are taken in `run_due`,
                    // once a turn, so that their caps hold per turn.
                    LISTENER if !self.accept_paused => self.deadlines.set(Timer::Accept, Some(now)),
                    LISTENER => {}
                    SOURCE => self.deadlines.set(Timer::Source, Some(now)),
                    SIGNALS => {
                        if self.signalled(now) {
                            return Ok(());
                        }
                    }
                    CAMERA_ERRORS => self.source.stderr_ready(),
                    RENDERED => self.take_notice(now),
                    Token(key) => self.client_ready(key, event.is_readable(), now),
                }
            }
            self.run_due(Instant::now())?;
        }
    }

    /// Whatever in the deadline set has come due.
    fn run_due(&mut self, now: Instant) -> io::Result<()> {
        if self.deadlines.take_due(Timer::Source, now) {
            self.read_source(now)?;
        }
        self.source.want(self.viewers.watching() > 0, now);
        self.source.supervise(now, self.poll.registry(), CAMERA_ERRORS);
        self.show_notices(now);
        while let Some((key, at)) = self.deadlines.pop_retry(now) {
            let starting = self.source.starting();
            let asked = self.viewers.retry(key, at, now, starting, split_env!(self));
            self.answer(key, asked, now);
        }
        // A client left: a descriptor is free for those in the backlog.
        let freed = self.viewers.take_freed() && self.accept_paused;
        if freed || self.deadlines.take_due(Timer::Accept, now) {
            self.accept_paused = false;
            self.accept(now);
        }
        if self.deadlines.take_due(Timer::Watchdog, now) {
            // From the loop itself: a loop that hangs stops saying it lives.
            if let Some(notifier) = &self.notifier {
                notifier.notify("WATCHDOG=1");
                self.deadlines.set(Timer::Watchdog, notifier.watchdog.map(|every| now + every));
            }
        }
        if self.deadlines.take_due(Timer::Tick, now) {
            self.deadlines.set(Timer::Tick, Some(now + TICK));
            self.stats.tick(now, self.source.counters().frames);
            self.viewers.tick(now, split_env!(self));
        }
        if self.deadlines.take_due(Timer::Stats, now) {
            let every = self.config.stats_every.unwrap_or(TICK);
            self.deadlines.set(Timer::Stats, Some(now + every));
            self.refresh_stats();
            let line = self.stats.line(self.viewers.len(), &self.source.describe(now));
            crate::log!("{line}");
        }
        Ok(())
    }

    /// Asks for a notice picture when the [`Schedule`] says viewers should
    /// see one: as soon as the source's state changes, then as it says.
    fn show_notices(&mut self, now: Instant) {
        let Some(renderer) = &mut self.renderer else { return };
        let changed = self.source.take_changed();
        if !changed && !self.deadlines.take_due(Timer::Offline, now) {
            return;
        }
        let current = self.source.notice(now);
        let (notice, next) = self.notices.turn(now, current, self.source.notice_due());
        self.deadlines.set(Timer::Offline, next);
        if let Some(notice) = notice {
            let size = self.viewers.last_live().and_then(|f| offline::jpeg_size(&f.jpeg));
            let size = size.unwrap_or(offline::DEFAULT_SIZE);
            renderer.request(notice.picture(size, SystemTime::now()));
        }
    }

    /// A notice picture is ready: viewers get it, unless frames came back.
    fn take_notice(&mut self, now: Instant) {
        let Some(renderer) = &mut self.renderer else { return };
        while let Some((kind, jpeg)) = renderer.take() {
            if self.notices.wanted(self.source.notice(now).is_some()) {
                self.viewers.publish_notice(jpeg, kind.state(), split_env!(self));
            }
        }
    }

    /// Brings in the figures the parts keep, before any are shown.
    fn refresh_stats(&mut self) {
        self.stats.refresh(self.source.bytes_in, self.viewers.skipped_pending());
    }

    /// The final word on stderr.
    pub fn report(&mut self) -> String {
        self.refresh_stats();
        let now = Instant::now();
        let mut out = self.stats.summary(now, self.source.counters());
        if self.config.stats_every.is_some() {
            out.push_str("\nlatency from read to write, per client and frame:\n");
            out.push_str(&stats::percentile_distribution(&self.stats.latency));
        }
        out
    }

    /// Accepts until the backlog is empty, [`ACCEPTS_PER_TURN`] times, or
    /// descriptors run out. Called at most once a turn: what is left is
    /// taken after the next `poll`, which then does not wait.
    fn accept(&mut self, now: Instant) {
        if self.draining {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((socket, addr)) => self.admit(socket, addr, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if out_of_resources(&e) && self.refuse_with_spare() => {}
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

    fn admit(&mut self, socket: TcpStream, addr: SocketAddr, now: Instant) {
        // Clients that only wait for the peer's close are no clients to
        // `full`, but they hold a descriptor each.
        if self.viewers.full() || self.viewers.len() >= self.config.max_connections {
            return self.refuse(socket);
        }
        self.stats.clients_total += 1;
        self.viewers.insert(socket, addr, now, self.poll.registry());
    }

    /// Answers 503 and closes.
    fn refuse(&mut self, mut socket: TcpStream) {
        self.stats.clients_refused += 1;
        // Best effort: a fresh socket has room for these few bytes.
        let extra = self.viewers.extra_headers();
        let reply = http::error_response(Status::Unavailable, extra, false, Connection::Close);
        let _ = socket.write(&reply);
        // Take in the request if it is there: closing with it unread
        // would send a reset, which can destroy the answer unread.
        let _ = socket.read(&mut [0; 4096]);
    }

    /// Out of descriptors: answers one waiting connection 503 with the
    /// spare descriptor's room. False if there is no spare, or no room.
    fn refuse_with_spare(&mut self) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        let refused = match self.listener.accept() {
            Ok((socket, _)) => {
                self.refuse(socket);
                true
            }
            Err(_) => false,
        };
        self.spare = File::open("/dev/null").ok();
        refused
    }

    fn client_ready(&mut self, key: usize, readable: bool, now: Instant) {
        let starting = self.source.starting();
        let asked = self.viewers.ready(key, readable, now, starting, split_env!(self));
        self.answer(key, asked, now);
    }

    /// Completes what a client asked for that only the loop can answer.
    fn answer(&mut self, key: usize, asked: Option<Asked>, now: Instant) {
        if let Some(Asked::Figures { format, head_only, connection }) = asked {
            // Only now, for /stats or /metrics, walk the viewers.
            self.refresh_stats();
            let source = self.source.describe(now);
            let figures = Figures {
                now,
                input: self.source.counters(),
                clients: self.viewers.len(),
                viewers: self.viewers.streaming(),
                held_bytes: self.viewers.held_bytes(),
                source: &source,
                log_dropped: crate::log::dropped(),
            };
            let body = match format {
                Format::Json => self.stats.json(&figures, &self.viewers.json(now)),
                Format::Prometheus => self.stats.metrics(&figures),
            };
            let extra = self.viewers.extra_headers();
            let page = router::page(&body, format.content_type(), extra, head_only, connection);
            self.viewers.reply(key, page, connection, now, split_env!(self));
        }
    }

    /// Reads the source's turn, publishing each frame to the viewers.
    fn read_source(&mut self, now: Instant) -> io::Result<()> {
        let registry = self.poll.registry();
        let (viewers, env) = (&mut self.viewers, split_env!(self));
        let status = self.source.read(now, registry, &mut |jpeg, read_at| {
            viewers.publish(jpeg, read_at, env);
        })?;
        if status == source::Status::Ended {
            self.drain(now);
        }
        Ok(())
    }

    /// Takes the pending signals: the first starts draining, like the end
    /// of the source; a second ends the loop at once (returns true), and a
    /// camera still stopping is killed as the source is dropped.
    fn signalled(&mut self, now: Instant) -> bool {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            if signal == SIGCHLD {
                let registry = self.poll.registry();
                let (viewers, env) = (&mut self.viewers, split_env!(self));
                let reaped = self.source.reap(now, registry, &mut |jpeg, read_at| {
                    viewers.publish(jpeg, read_at, env);
                });
                if let Err(e) = reaped {
                    crate::log!("warning: {e}");
                }
                if self.init {
                    camera::reap_orphans(self.source.pid());
                }
                continue;
            }
            if self.draining {
                return true;
            }
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            crate::log!("{name}: finishing the frames in flight, then exiting (again to exit now)");
            self.source.stop(self.poll.registry());
            self.drain(now);
        }
        false
    }

    /// No new clients, no new frames: the loop ends once viewers have the
    /// frame they are being sent, or at [`DRAIN`].
    fn drain(&mut self, now: Instant) {
        if !self.draining {
            self.draining = true;
            if let Some(notifier) = &self.notifier {
                notifier.notify("STOPPING=1");
            }
            let _ = self.poll.registry().deregister(&mut self.listener);
            self.deadlines.set(Timer::Accept, None);
            self.deadlines.set(Timer::Drain, Some(now + DRAIN));
        }
    }
}

/// The signals that end the server, less those it was started with
/// ignored: `nohup` ignores SIGHUP so that logging out leaves the server
/// running, and a handler would undo that.
fn stop_signals() -> Vec<i32> {
    [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&signal| !ignored(signal)).collect()
}

/// True if `signal` is ignored (`SIG_IGN`), as inherited from the parent.
pub fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction with no new action only reads the disposition into
    // `old`, a zeroed sigaction that it may fill.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
