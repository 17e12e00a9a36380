/*!
The relay input: one HTTP connection to another MJPEG server, driven by the
poll loop like every other socket, however many viewers watch here.

Name resolution runs on a short-lived thread (`getaddrinfo` blocks); the
connect is non-blocking, each resolved address tried in turn; the response
is read by [`Response`] and its body handed on for the splitter. Whether to
connect, and when to try again, is the [`Supervisor`]'s call, as for a
camera process.
*/

use crate::source::INPUT_READS;
use crate::supervisor::{Retry, Supervisor, Timing};
use crate::upstream::{Response, Url};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

/// While a name is being resolved, the loop looks for the answer this often.
const RESOLVE_POLL: Duration = Duration::from_millis(10);

/// How this server introduces itself upstream.
const USER_AGENT: &str = concat!("raspivid_mjpeg_server/", env!("CARGO_PKG_VERSION"), " (relay)");

struct Conn {
    socket: TcpStream,
    /// The addresses not tried yet, should this one fail to connect.
    rest: Vec<SocketAddr>,
    addr: SocketAddr,
    connected: bool,
    request: Vec<u8>,
    sent: usize,
    response: Response,
}

pub struct Relay {
    pub url: Url,
    pub supervisor: Supervisor,
    conn: Option<Conn>,
    resolving: Option<Receiver<io::Result<Vec<SocketAddr>>>>,
    /// The failure last logged, until frames come again.
    told: Option<String>,
}

/// A seed for the retries' jitter that differs between relays started
/// together on one machine (the pid) and on several (the clock's nanoseconds).
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    u64::from(std::process::id()) << 32 ^ nanos
}

/// What a turn of the connection did.
pub enum Turn {
    /// Open; `more` if it may hold more than this turn read.
    Open { more: bool },
    /// Closed, and why.
    Failed(String),
}

impl Relay {
    pub fn new(url: Url, timing: Timing, now: Instant) -> Relay {
        let supervisor = Supervisor::new(timing, Retry::Jittered { seed: seed() }, now);
        Relay { url, supervisor, conn: None, resolving: None, told: None }
    }

    /// Logs a failure, unless it is the one logged last: an upstream gone
    /// for a day, tried every second, must not write a line a second.
    pub fn tell(&mut self, failure: &str) {
        if self.told.as_deref() != Some(failure) {
            crate::log!("relay: {failure} (trying every second; said again if it changes)");
            self.told = Some(failure.to_string());
        }
    }

    /// Frames came: the end of the failures is told, once.
    pub fn streaming(&mut self) {
        if self.told.take().is_some() {
            crate::log!("relay: streaming from {} again", self.url.shown());
        }
    }

    /// Starts connecting: at once to an address, after resolving a name.
    pub fn start(&mut self, registry: &Registry, token: Token) -> Result<(), String> {
        self.close(registry);
        if let Ok(ip) = self.url.host.parse() {
            return self.connect(vec![SocketAddr::new(ip, self.url.port)], registry, token);
        }
        let (tx, rx) = mpsc::channel();
        let (host, port) = (self.url.host.clone(), self.url.port);
        thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let _ = tx.send((host.as_str(), port).to_socket_addrs().map(Iterator::collect));
            })
            .map_err(|e| format!("cannot resolve {}: {e}", self.url.host))?;
        self.resolving = Some(rx);
        Ok(())
    }

    /// While resolving: connects once the answer is in.
    pub fn resolved(&mut self, registry: &Registry, token: Token) -> Result<(), String> {
        let Some(rx) = &self.resolving else { return Ok(()) };
        let addrs = match rx.try_recv() {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => Err(io::Error::other("the resolver stopped")),
            Ok(answer) => answer,
        };
        self.resolving = None;
        let addrs = addrs.map_err(|e| format!("cannot resolve {}: {e}", self.url.host))?;
        self.connect(addrs, registry, token)
    }

    fn connect(
        &mut self,
        mut addrs: Vec<SocketAddr>,
        registry: &Registry,
        token: Token,
    ) -> Result<(), String> {
        addrs.reverse();
        let mut last = format!("{} has no address", self.url.host);
        while let Some(addr) = addrs.pop() {
            match TcpStream::connect(addr) {
                Ok(mut socket) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    registry.register(&mut socket, token, interest).map_err(|e| e.to_string())?;
                    self.conn = Some(Conn {
                        socket,
                        rest: addrs,
                        addr,
                        connected: false,
                        request: self.url.request(USER_AGENT),
                        sent: 0,
                        response: Response::default(),
                    });
                    return Ok(());
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// Closes the connection, if any.
    pub fn close(&mut self, registry: &Registry) {
        self.resolving = None;
        if let Some(mut conn) = self.conn.take() {
            let _ = registry.deregister(&mut conn.socket);
        }
    }

    /// When the relay wants a turn without an event: while resolving.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        self.resolving.as_ref().map(|_| now + RESOLVE_POLL)
    }

    /// The connection is ready: finishes connecting, sends the request,
    /// reads the response, handing the body's bytes to `body`.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        buf: &mut [u8],
        body: &mut dyn FnMut(&[u8]),
    ) -> Turn {
        let Some(conn) = &mut self.conn else { return Turn::Open { more: false } };
        if !conn.connected {
            match conn.socket.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.next_address(e, registry, token),
            }
            match conn.socket.peer_addr() {
                Ok(_) => conn.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return Turn::Open { more: false }
                }
                Err(e) => return self.next_address(e, registry, token),
            }
        }
        while conn.sent < conn.request.len() {
            match conn.socket.write(&conn.request[conn.sent..]) {
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Turn::Open { more: false }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = format!("sending the request to {}: {e}", conn.addr);
                    return self.fail(reason, registry);
                }
            }
        }
        for _ in 0..INPUT_READS {
            let n = match conn.socket.read(buf) {
                Ok(0) => {
                    let what = if conn.response.streaming() {
                        "ended the stream"
                    } else {
                        "closed the connection"
                    };
                    return self.fail(format!("the upstream {what}"), registry);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Turn::Open { more: false }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = format!("reading from {}: {e}", conn.addr);
                    return self.fail(reason, registry);
                }
            };
            if let Err(e) = conn.response.feed(&mut buf[..n], body) {
                return self.fail(format!("the upstream's answer: {e}"), registry);
            }
        }
        Turn::Open { more: true }
    }

    /// A connect failed: the next address, or the failure.
    fn next_address(&mut self, e: io::Error, registry: &Registry, token: Token) -> Turn {
        let Some(conn) = self.conn.take() else { return Turn::Open { more: false } };
        let mut socket = conn.socket;
        let _ = registry.deregister(&mut socket);
        let failed = format!("cannot connect to {}: {e}", conn.addr);
        if conn.rest.is_empty() {
            return Turn::Failed(failed);
        }
        match self.connect(conn.rest, registry, token) {
            Ok(()) => Turn::Open { more: false },
            Err(e) => Turn::Failed(e),
        }
    }

    fn fail(&mut self, reason: String, registry: &Registry) -> Turn {
        self.close(registry);
        Turn::Failed(reason)
    }
}
