/*!
When to start, stop and restart the camera process, and what viewers are
told meanwhile: pure code, no processes. [`crate::camera`] does what
[`Supervisor::poll`] asks and reports back what happened.

```text
          wanted                     first frame
  Idle ─────────▶ Waiting ──Spawn──▶ Starting ─────────▶ Online
   ▲               ▲  ▲                │  │                 │  │
   │ exited,       │  │ exited:        │  └── no frame for ─┘  │ exited
   │ unwanted      │  │ backoff        │      --source-timeout │ (a failure)
   │               │  └────────────────┼───────────┐  Stop    │
   └─────────── Stopping ◀─────────────┴───────────┴──────────┘
                                                 (or --linger after the last viewer)
```

Stopping is asking: the camera's [guard](crate::guard) SIGTERMs its group
and SIGKILLs it after `--kill-timeout`, and the supervisor waits for the
exit; a relay's connection closes at once.

When the server ends, [`Supervisor::shutdown`] stops the camera for good,
the same way, and no start follows.

A start that fails, an exit and a stall each count as a failure. What
follows depends on the source ([`Retry`]): a camera waits longer as its
failures run on (1 s five times, then 5 s five times, then 30 s), and a
run of good frames resets it; a relay tries again every second or so, for
a refused connect costs nothing and its upstream may be back any moment.
Either is retried for ever, never in a busy loop.
*/

use crate::notice::Notice;
use std::time::{Duration, Instant};

/// A start that failed for want of what the server shares with its
/// clients (descriptors) is tried again this much later, without counting
/// as the camera's failure: clients leaving is what makes room.
const SHORT_OF_RESOURCES: Duration = Duration::from_secs(1);

/// A camera that has sent frames this long is healthy again: the next
/// failure is retried at once.
const GOOD_RUN: Duration = Duration::from_secs(10);

/// A relay tries again this long after a failure, give or take
/// [`RELAY_JITTER`]: back within two seconds of its upstream, however long
/// that was gone.
const RELAY_RETRY: Duration = Duration::from_secs(1);

/// The spread of a relay's retries, as a fraction of [`RELAY_RETRY`]: a tree
/// of relays whose upstream comes back must not reconnect in lockstep.
const RELAY_JITTER: f64 = 0.2;

/// How a source is started again after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A camera: [`backoff`]. A camera that keeps failing is likely broken
    /// or gone, and each start may cost a driver's reset.
    Backoff,
    /// A relay: [`RELAY_RETRY`] with jitter, drawn from a generator seeded
    /// with `seed` (any number; tests give their own).
    Jittered { seed: u64 },
}

/// The wait before start number `failures + 1` of a camera after that many
/// failures in a row: quick for a glitch, patient for a camera that is gone.
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0..=5 => Duration::from_secs(1),
        6..=10 => Duration::from_secs(5),
        _ => Duration::from_secs(30),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// On demand and nobody watching: no camera.
    Idle,
    /// Down, to be started at `at`.
    Waiting { at: Instant },
    /// Started at `since`, no frame yet.
    Starting { since: Instant },
    /// Frames are coming.
    Online,
    /// Asked to stop, for `cause`; waiting for the exit.
    Stopping { cause: Cause },
}

/// Why the camera is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No frame for too long: a failure; restarted after the backoff.
    Stall,
    /// Nobody watched for `--linger`.
    Unwatched,
    /// The server is ending: stopped for good.
    Shutdown,
}

/// What the caller must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Stop the camera (its guard sees to the kill), close the relay.
    Stop,
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub source_timeout: Duration,
    /// The guard's, between SIGTERM and SIGKILL.
    pub kill_timeout: Duration,
    /// `--on-demand`: stop this long after the last viewer leaves.
    pub linger: Option<Duration>,
}

pub struct Supervisor {
    timing: Timing,
    retry: Retry,
    /// The jitter's xorshift state (never 0).
    jitter: u64,
    pub phase: Phase,
    wanted: bool,
    /// The server is ending: nothing starts again.
    ending: bool,
    unwatched_since: Option<Instant>,
    /// Failures in a row.
    failures: u32,
    pub starts: u64,
    pub last_frame: Option<Instant>,
    /// The first frame of the current run.
    run_began: Option<Instant>,
    /// Why the camera is down, for viewers and `/stats`.
    pub reason: String,
}

impl Supervisor {
    pub fn new(timing: Timing, retry: Retry, now: Instant) -> Supervisor {
        let on_demand = timing.linger.is_some();
        let seed = match retry {
            Retry::Jittered { seed } => seed,
            Retry::Backoff => 0,
        };
        Supervisor {
            timing,
            retry,
            // xorshift stays at 0 for ever: any other number will do.
            jitter: seed | 1,
            phase: if on_demand { Phase::Idle } else { Phase::Waiting { at: now } },
            wanted: !on_demand,
            ending: false,
            unwatched_since: None,
            failures: 0,
            starts: 0,
            last_frame: None,
            run_began: None,
            reason: if on_demand { "nobody watching".into() } else { "starting".into() },
        }
    }

    /// Restarts after the first start.
    pub fn restarts(&self) -> u64 {
        self.starts.saturating_sub(1)
    }

    /// Whether somebody watches (always, without `--on-demand`).
    pub fn want(&mut self, wanted: bool, now: Instant) {
        if self.timing.linger.is_none() || wanted == self.wanted || self.ending {
            return;
        }
        self.wanted = wanted;
        self.unwatched_since = (!wanted).then_some(now);
        if wanted && self.phase == Phase::Idle {
            self.phase = Phase::Waiting { at: now };
        }
    }

    /// The camera was started.
    pub fn spawned(&mut self, now: Instant) {
        self.starts += 1;
        self.phase = Phase::Starting { since: now };
        self.run_began = None;
        // After a failure the reason stays: viewers see why, not "starting".
        if self.failures == 0 {
            self.reason = "starting camera".into();
        }
    }

    /// The source could not be started, for `reason`.
    pub fn spawn_failed(&mut self, reason: &str, now: Instant) {
        self.starts += 1;
        self.fail(reason.to_string(), now);
    }

    /// The source could not be started for want of descriptors, for
    /// `reason`: no fault of its own, so no failure; tried again soon.
    pub fn spawn_deferred(&mut self, reason: &str, now: Instant) {
        self.reason = reason.to_string();
        self.phase = Phase::Waiting { at: now + SHORT_OF_RESOURCES };
    }

    /// A frame came.
    pub fn frame(&mut self, now: Instant) {
        self.last_frame = Some(now);
        match self.phase {
            Phase::Starting { .. } => {
                self.phase = Phase::Online;
                self.run_began = Some(now);
            }
            Phase::Online if self.run_began.is_some_and(|t| now >= t + GOOD_RUN) => {
                self.failures = 0;
            }
            _ => {}
        }
    }

    /// The server is ending: the camera is stopped and never started again.
    pub fn shutdown(&mut self) {
        self.ending = true;
        self.wanted = false;
        self.reason = "the server is ending".into();
        match self.phase {
            Phase::Idle | Phase::Waiting { .. } => self.phase = Phase::Idle,
            // Already asked to stop: it ends as it would have.
            Phase::Stopping { .. } => self.phase = Phase::Stopping { cause: Cause::Shutdown },
            // Asked to stop at the next poll.
            Phase::Starting { .. } | Phase::Online => {}
        }
    }

    /// True once the server is ending and the camera is down for good.
    pub fn finished(&self) -> bool {
        self.ending && self.phase == Phase::Idle
    }

    /// The source ended (the camera exited, the upstream closed), for `reason`.
    pub fn exited(&mut self, reason: &str, now: Instant) {
        match self.phase {
            _ if self.ending => self.phase = Phase::Idle,
            Phase::Stopping { cause: Cause::Unwatched } if !self.wanted => {
                self.phase = Phase::Idle;
                self.reason = "nobody watching".into();
            }
            // Stopped for want of viewers, but one came back meanwhile.
            Phase::Stopping { cause: Cause::Unwatched } => {
                self.phase = Phase::Waiting { at: now };
            }
            // The stall was counted when it was found.
            Phase::Stopping { cause: Cause::Stall } => {
                self.phase = Phase::Waiting { at: now + self.retry_after() };
            }
            _ => self.fail(reason.to_string(), now),
        }
    }

    fn fail(&mut self, reason: String, now: Instant) {
        self.failures += 1;
        self.reason = reason;
        self.phase = Phase::Waiting { at: now + self.retry_after() };
    }

    /// The wait before the next start, after the failures so far.
    fn retry_after(&mut self) -> Duration {
        match self.retry {
            Retry::Backoff => backoff(self.failures),
            Retry::Jittered { .. } => {
                // xorshift64 (Marsaglia): enough to spread retries.
                self.jitter ^= self.jitter << 13;
                self.jitter ^= self.jitter >> 7;
                self.jitter ^= self.jitter << 17;
                // 53 random bits as a fraction in [0, 1), then [-1, 1).
                let unit = (self.jitter >> 11) as f64 / (1u64 << 53) as f64;
                RELAY_RETRY.mul_f64(1.0 + RELAY_JITTER * (2.0 * unit - 1.0))
            }
        }
    }

    /// What to do now, if anything.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        let timeout = self.timing.source_timeout;
        let unwatched = self.linger_end().is_some_and(|end| now >= end);
        let cause = match self.phase {
            Phase::Waiting { at } if now >= at && self.wanted => return Some(Action::Spawn),
            Phase::Starting { .. } | Phase::Online if self.ending => Cause::Shutdown,
            Phase::Starting { .. } | Phase::Online if unwatched => {
                self.reason = "nobody watching".into();
                Cause::Unwatched
            }
            Phase::Starting { since } if now >= since + timeout => {
                self.stall(format!("no frame within {} s of the start", timeout.as_secs()))
            }
            Phase::Online if self.last_frame.is_some_and(|t| now >= t + timeout) => {
                self.stall(format!("no frame for {} s", timeout.as_secs()))
            }
            _ => return None,
        };
        self.phase = Phase::Stopping { cause };
        Some(Action::Stop)
    }

    fn stall(&mut self, reason: String) -> Cause {
        self.failures += 1;
        self.reason = reason;
        Cause::Stall
    }

    /// When `--linger` without viewers ends, while nobody watches.
    fn linger_end(&self) -> Option<Instant> {
        Some(self.unwatched_since? + self.timing.linger?)
    }

    /// When [`Supervisor::poll`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let linger = self.linger_end();
        let timeout = self.timing.source_timeout;
        let due = match self.phase {
            Phase::Idle => None,
            Phase::Waiting { at } => self.wanted.then_some(at),
            Phase::Starting { since } => Some(since + timeout),
            Phase::Online => self.last_frame.map(|t| t + timeout),
            Phase::Stopping { .. } => None,
        };
        let linger =
            linger.filter(|_| matches!(self.phase, Phase::Starting { .. } | Phase::Online));
        due.into_iter().chain(linger).min()
    }

    /// True while the camera is starting or about to, not after a failure:
    /// what a snapshot should wait for rather than be given a notice.
    pub fn awaiting_first_frame(&self) -> bool {
        match self.phase {
            Phase::Idle => !self.ending,
            Phase::Starting { .. } | Phase::Waiting { .. } => self.failures == 0,
            Phase::Stopping { cause } => cause == Cause::Unwatched,
            Phase::Online => false,
        }
    }

    /// `starting`, `online`, `offline` or `stopped`.
    pub fn state(&self) -> &'static str {
        match self.phase {
            Phase::Idle | Phase::Stopping { cause: Cause::Unwatched | Cause::Shutdown } => {
                "stopped"
            }
            Phase::Starting { .. } if self.failures == 0 => "starting",
            Phase::Online => "online",
            _ => "offline",
        }
    }

    /// What viewers should be shown instead of frames, if anything: the
    /// start's placeholder, or the reason the camera is down (and when it
    /// starts again). A live camera that has sent nothing for
    /// `offline_after` is shown as down before the stall is acted on, so
    /// that viewers never wait long for bytes.
    pub fn notice(&self, now: Instant, offline_after: Duration) -> Option<Notice> {
        match self.phase {
            Phase::Idle => None,
            Phase::Starting { .. } if self.failures > 0 => {
                Some(Notice::Offline(format!("{}; restarting", self.reason)))
            }
            Phase::Starting { .. } => Some(Notice::Starting),
            Phase::Online => Notice::silence(self.last_frame?, now, offline_after),
            Phase::Stopping { cause: Cause::Unwatched | Cause::Shutdown } => None,
            Phase::Stopping { cause: Cause::Stall } => {
                Some(Notice::Offline(format!("{}; restarting", self.reason)))
            }
            Phase::Waiting { at } => {
                let wait = at.saturating_duration_since(now);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Some(Notice::Offline(format!("{}; restarting in {secs} s", self.reason)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn timing(linger: Option<u64>) -> Timing {
        Timing { source_timeout: secs(5), kill_timeout: secs(3), linger: linger.map(secs) }
    }

    #[test]
    fn it_starts_at_once_and_goes_online_with_the_first_frame() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        assert_eq!(s.poll(t), Some(Action::Spawn));
        s.spawned(t);
        assert_eq!((s.state(), s.notice(t, secs(2))), ("starting", Some(Notice::Starting)));
        assert_eq!(s.deadline(), Some(t + secs(5)));
        s.frame(t + secs(1));
        assert_eq!(s.state(), "online");
        assert_eq!(s.notice(t + secs(2), secs(2)), None);
        assert_eq!(s.poll(t + secs(2)), None);
        assert_eq!(s.deadline(), Some(t + secs(6)));
    }

    #[test]
    fn an_exit_is_retried_within_a_second_and_repeated_failures_slow_down() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        let mut now = t;
        let mut gaps = Vec::new();
        for _ in 0..12 {
            assert_eq!(s.poll(now), Some(Action::Spawn));
            s.spawned(now);
            s.exited("camera exited with status 1", now);
            assert_eq!(s.state(), "offline");
            let Phase::Waiting { at } = s.phase else { panic!("{:?}", s.phase) };
            gaps.push((at - now).as_secs());
            assert_eq!(s.poll(at - Duration::from_millis(1)), None, "no start before its time");
            now = at;
        }
        assert_eq!(gaps, [1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 30, 30]);
        assert_eq!(s.restarts(), 11);
        let notice = s.notice(now - secs(29), secs(2));
        assert_eq!(
            notice,
            Some(Notice::Offline("camera exited with status 1; restarting in 29 s".into()))
        );
    }

    /// The waits before each of `n` starts of a source that always fails.
    fn waits(retry: Retry, n: usize) -> Vec<Duration> {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), retry, t);
        let mut now = t;
        (0..n)
            .map(|_| {
                assert_eq!(s.poll(now), Some(Action::Spawn));
                s.spawn_failed("cannot connect to 127.0.0.1:8554: Connection refused", now);
                let Phase::Waiting { at } = s.phase else { panic!("{:?}", s.phase) };
                let wait = at - now;
                now = at;
                wait
            })
            .collect()
    }

    #[test]
    fn a_camera_backs_off_and_a_relay_retries_every_second_or_so_for_ever() {
        let camera = waits(Retry::Backoff, 12);
        assert_eq!(camera, [1, 1, 1, 1, 1, 5, 5, 5, 5, 5, 30, 30].map(secs));
        // However long the upstream is gone, the next try is within 1.2 s.
        let relay = waits(Retry::Jittered { seed: 7 }, 1000);
        let (least, most) = (relay.iter().min().unwrap(), relay.iter().max().unwrap());
        assert!(*least >= Duration::from_millis(800) && *most <= Duration::from_millis(1200));
        // Spread over the whole window, not a few values.
        assert!(*least < Duration::from_millis(820) && *most > Duration::from_millis(1180));
        // The same seed, the same waits; another seed, others: two relays
        // that lost the same upstream do not retry in lockstep.
        assert_eq!(waits(Retry::Jittered { seed: 7 }, 1000), relay);
        let other = waits(Retry::Jittered { seed: 8 }, 5);
        assert_ne!(other, relay[..5]);
    }

    #[test]
    fn a_restart_after_a_failure_shows_the_failure_not_a_start() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        s.poll(t);
        s.spawned(t);
        s.exited("camera exited with status 1", t);
        s.spawned(t + secs(1));
        assert_eq!(s.state(), "offline");
        assert!(!s.awaiting_first_frame(), "a snapshot gets the notice, not a wait");
        let notice = s.notice(t + secs(1), secs(2));
        let reason = "camera exited with status 1; restarting";
        assert_eq!(notice, Some(Notice::Offline(reason.into())));
        s.frame(t + secs(2));
        assert_eq!((s.state(), s.notice(t + secs(2), secs(2))), ("online", None));
    }

    #[test]
    fn a_run_of_good_frames_makes_the_next_restart_quick_again() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        for i in 0..8 {
            s.poll(t);
            s.spawned(t);
            s.exited("camera exited with status 1", t + secs(i));
        }
        assert_eq!(backoff(s.failures), secs(5));
        let start = t + secs(100);
        s.spawned(start);
        for i in 0..=10 {
            s.frame(start + secs(i));
        }
        s.exited("exited with status 0", start + secs(11));
        assert_eq!(s.phase, Phase::Waiting { at: start + secs(12) });
    }

    #[test]
    fn a_stall_is_shown_early_then_stopped_and_restarted() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        s.poll(t);
        s.spawned(t);
        s.frame(t);
        let notice = s.notice(t + secs(2), secs(2));
        assert_eq!(notice, Some(Notice::Offline("no frame for 2 s".into())));
        assert_eq!(s.poll(t + secs(4)), None);
        assert_eq!(s.poll(t + secs(5)), Some(Action::Stop));
        assert_eq!(s.state(), "offline");
        // The guard kills it if need be; the supervisor waits for the exit.
        assert_eq!((s.deadline(), s.poll(t + secs(9))), (None, None));
        s.exited("was killed by signal 9", t + secs(9));
        assert_eq!(s.phase, Phase::Waiting { at: t + secs(10) });
        let notice = s.notice(t + secs(9), secs(2));
        assert_eq!(notice, Some(Notice::Offline("no frame for 5 s; restarting in 1 s".into())));
    }

    #[test]
    fn at_shutdown_the_camera_is_stopped_and_never_started_again() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        s.poll(t);
        s.spawned(t);
        s.frame(t);
        s.shutdown();
        assert!(!s.finished(), "the camera still runs");
        assert_eq!(s.poll(t + secs(1)), Some(Action::Stop));
        assert_eq!((s.state(), s.deadline()), ("stopped", None));
        s.exited("camera was killed by signal 9", t + secs(4));
        assert!(s.finished());
        assert_eq!((s.poll(t + secs(100)), s.deadline()), (None, None));
        // Down or idle when the server ends: finished at once, and a viewer
        // arriving meanwhile starts nothing.
        let mut s = Supervisor::new(timing(Some(10)), Retry::Backoff, t);
        s.shutdown();
        assert!(s.finished());
        s.want(true, t);
        assert_eq!(s.poll(t), None);
    }

    #[test]
    fn a_camera_that_never_sends_a_frame_is_a_stall() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        s.poll(t);
        s.spawned(t);
        assert_eq!(s.poll(t + secs(5)), Some(Action::Stop));
        assert!(s.reason.contains("no frame within 5 s"), "{}", s.reason);
    }

    #[test]
    fn a_start_that_fails_waits_like_an_exit() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        s.poll(t);
        s.spawn_failed("cannot start the camera: No such file", t);
        assert_eq!(s.phase, Phase::Waiting { at: t + secs(1) });
        assert!(s.reason.starts_with("cannot start the camera"));
    }

    #[test]
    fn a_start_short_of_descriptors_is_retried_soon_and_is_no_failure() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(None), Retry::Backoff, t);
        for i in 0..20 {
            assert_eq!(s.poll(t + secs(i)), Some(Action::Spawn));
            s.spawn_deferred("cannot start the camera: Too many open files", t + secs(i));
            assert_eq!(s.phase, Phase::Waiting { at: t + secs(i + 1) });
        }
        assert_eq!((s.failures, s.restarts()), (0, 0));
        // The first real failure after them waits as a first one does.
        s.poll(t + secs(20));
        s.spawned(t + secs(20));
        s.exited("camera exited with status 1", t + secs(20));
        assert_eq!(s.phase, Phase::Waiting { at: t + secs(21) });
    }

    #[test]
    fn on_demand_it_runs_only_while_watched_and_lingers() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(Some(10)), Retry::Backoff, t);
        assert_eq!((s.state(), s.poll(t), s.deadline()), ("stopped", None, None));
        assert_eq!(s.notice(t, secs(2)), None);
        s.want(true, t + secs(1));
        assert_eq!(s.poll(t + secs(1)), Some(Action::Spawn));
        s.spawned(t + secs(1));
        s.frame(t + secs(2));
        s.want(false, t + secs(3));
        // Frames go on while it lingers; the linger is what ends it.
        for i in 4..13 {
            s.frame(t + secs(i));
            assert_eq!(s.poll(t + secs(i)), None);
        }
        assert_eq!(s.deadline(), Some(t + secs(13)));
        assert_eq!(s.poll(t + secs(13)), Some(Action::Stop));
        assert_eq!((s.state(), s.notice(t + secs(13), secs(2))), ("stopped", None));
        s.exited("was killed by signal 15", t + secs(14));
        assert_eq!((s.phase, s.failures), (Phase::Idle, 0));
        // The next viewer starts it again at once.
        s.want(true, t + secs(20));
        assert_eq!(s.poll(t + secs(20)), Some(Action::Spawn));
    }

    #[test]
    fn a_viewer_back_within_the_linger_keeps_the_camera() {
        let t = Instant::now();
        let mut s = Supervisor::new(timing(Some(10)), Retry::Backoff, t);
        s.want(true, t);
        s.poll(t);
        s.spawned(t);
        s.frame(t);
        s.want(false, t + secs(1));
        s.want(true, t + secs(5));
        s.frame(t + secs(11));
        assert_eq!(s.poll(t + secs(11)), None);
        assert_eq!(s.state(), "online");
    }
}
