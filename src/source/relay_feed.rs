/*!
The relay as a feed: a [`Relay`] connection run as its [`Supervisor`] says
(for a relay, "spawn" is a connect and "stop" a close), its body fed to
the splitter.
*/

use super::{read_buf, Feed, Sink, Supervised, Turn};
use crate::relay::{self, Relay};
use crate::supervisor::{Cause, Phase, Supervisor, Timing};
use crate::upstream::Url;
use mio::{Registry, Token};
use std::io;
use std::time::Instant;

pub struct RelayFeed {
    relay: Relay,
    /// The token its connection's events come with.
    token: Token,
    buf: Box<[u8]>,
}

impl RelayFeed {
    pub fn new(url: Url, timing: Timing, now: Instant) -> RelayFeed {
        RelayFeed { relay: Relay::new(url, timing, now), token: Token(0), buf: read_buf() }
    }

    /// The connection is gone, for `reason`: logged (once while it lasts)
    /// and a failure for the supervisor.
    fn lost(&mut self, reason: &str, now: Instant) {
        self.relay.tell(reason);
        self.relay.supervisor.exited(reason, now);
    }
}

impl Feed for RelayFeed {
    fn start(&mut self, _registry: &Registry, token: Token, _what: &str) -> io::Result<()> {
        self.token = token;
        Ok(())
    }

    fn stop(&mut self, registry: &Registry) {
        self.relay.close(registry);
    }

    fn deadline(&self, now: Instant) -> Option<Instant> {
        self.relay.supervisor.deadline().into_iter().chain(self.relay.deadline(now)).min()
    }

    /// Reads the connection: its body goes to the splitter.
    fn read(&mut self, now: Instant, registry: &Registry, sink: &mut Sink) -> io::Result<Turn> {
        let turn = self.relay.ready(registry, self.token, &mut self.buf, &mut |body| {
            sink.took(body.len());
            sink.feed(body, Instant::now());
        });
        match turn {
            relay::Turn::Open { more } => Ok(Turn::Open { more }),
            relay::Turn::Failed(reason) => {
                sink.cut_short("the upstream");
                self.lost(&reason, now);
                sink.changed = true;
                Ok(Turn::Open { more: false })
            }
        }
    }
}

impl Supervised for RelayFeed {
    fn supervisor(&self) -> &Supervisor {
        &self.relay.supervisor
    }

    fn supervisor_mut(&mut self) -> &mut Supervisor {
        &mut self.relay.supervisor
    }

    fn frame(&mut self, at: Instant) {
        self.relay.supervisor.frame(at);
        self.relay.streaming();
    }

    /// Connects once the name lookup is in; true if that failed. No bytes
    /// came since the start, so no frame is cut short.
    fn tend(&mut self, registry: &Registry, now: Instant) -> bool {
        match self.relay.resolved(registry, self.token) {
            Ok(()) => false,
            Err(reason) => {
                self.lost(&reason, now);
                true
            }
        }
    }

    fn start_run(&mut self, registry: &Registry, _errors: Token, now: Instant) -> bool {
        match self.relay.start(registry, self.token) {
            Ok(()) => true,
            Err(reason) => {
                self.relay.tell(&reason);
                self.relay.supervisor.spawn_failed(&reason, now);
                false
            }
        }
    }

    /// A connection stops at once: closed is as good as exited.
    fn stop_run(&mut self, registry: &Registry, now: Instant, _quiet: bool) {
        let supervisor = &self.relay.supervisor;
        let stalled = supervisor.phase == Phase::Stopping { cause: Cause::Stall };
        let reason = supervisor.reason.clone();
        self.relay.close(registry);
        self.relay.supervisor.exited(&reason, now);
        // An upstream that answers and sends nothing stalls again every
        // few seconds: a failure like the others.
        if stalled {
            self.relay.tell(&format!("{reason}; disconnected"));
        } else {
            crate::log!("relay: {reason}; disconnected");
        }
    }
}
