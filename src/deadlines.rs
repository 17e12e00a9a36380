/*!
Every time the loop must wake for, in one place: the poll timeout is the
`min` over it.

A handful of named timers, each set or not, and a heap of per-viewer
retries (a viewer holding off a frame looks again at its time). Retries are
never removed early: a viewer that no longer wants one simply ignores it
when it comes due, which keeps scheduling O(log n) and the heap bounded by
the retries set in the last few frame intervals.
*/

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Timeouts and rates, once a second.
    Tick,
    /// The `--stats` line.
    Stats,
    /// The source: a paced file's next frame, more to read now, or the
    /// camera's or relay's next step (start, stop, a check for a stall).
    Source,
    /// Accepting: now, when the listener has connections or a turn left
    /// some waiting, or after an out-of-descriptors rest.
    Accept,
    /// The end of draining: exit even if viewers have not taken their frame.
    Drain,
    /// A notice to send, or to check for, while the source has no frames.
    Offline,
    /// Telling systemd's watchdog the loop is alive.
    Watchdog,
}

/// When each timer is due, a field each rather than an array sized by hand:
/// a timer added to [`Timer`] does not compile until [`Deadlines::slot`]
/// gives it a field here, and [`Deadlines::next`], which names every field,
/// counts it.
#[derive(Default)]
struct Timers {
    tick: Option<Instant>,
    stats: Option<Instant>,
    source: Option<Instant>,
    accept: Option<Instant>,
    drain: Option<Instant>,
    offline: Option<Instant>,
    watchdog: Option<Instant>,
}

#[derive(Default)]
pub struct Deadlines {
    timers: Timers,
    retries: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Deadlines {
    fn slot(&mut self, timer: Timer) -> &mut Option<Instant> {
        let t = &mut self.timers;
        match timer {
            Timer::Tick => &mut t.tick,
            Timer::Stats => &mut t.stats,
            Timer::Source => &mut t.source,
            Timer::Accept => &mut t.accept,
            Timer::Drain => &mut t.drain,
            Timer::Offline => &mut t.offline,
            Timer::Watchdog => &mut t.watchdog,
        }
    }

    pub fn set(&mut self, timer: Timer, at: Option<Instant>) {
        *self.slot(timer) = at;
    }

    pub fn get(&self, timer: Timer) -> Option<Instant> {
        let t = &self.timers;
        match timer {
            Timer::Tick => t.tick,
            Timer::Stats => t.stats,
            Timer::Source => t.source,
            Timer::Accept => t.accept,
            Timer::Drain => t.drain,
            Timer::Offline => t.offline,
            Timer::Watchdog => t.watchdog,
        }
    }

    /// True, and the timer cleared, if it is set and due at `now`.
    pub fn take_due(&mut self, timer: Timer, now: Instant) -> bool {
        let due = self.get(timer).is_some_and(|at| at <= now);
        if due {
            self.set(timer, None);
        }
        due
    }

    /// Wakes the loop at `at` for the viewer at `key`.
    pub fn retry(&mut self, key: usize, at: Instant) {
        self.retries.push(Reverse((at, key)));
    }

    /// The next retry due at `now`, with the time it was set for.
    pub fn pop_retry(&mut self, now: Instant) -> Option<(usize, Instant)> {
        match self.retries.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                self.retries.pop().map(|Reverse((at, key))| (key, at))
            }
            _ => None,
        }
    }

    pub fn next(&self) -> Option<Instant> {
        let retry = self.retries.peek().map(|Reverse((at, _))| *at);
        // No `..`: a field left out here would be a timer never woken for.
        let Timers { tick, stats, source, accept, drain, offline, watchdog } = self.timers;
        [tick, stats, source, accept, drain, offline, watchdog, retry].into_iter().flatten().min()
    }

    /// How long `poll` may sleep from `now`.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.next().map(|at| at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Timer; 7] = [
        Timer::Tick,
        Timer::Stats,
        Timer::Source,
        Timer::Accept,
        Timer::Drain,
        Timer::Offline,
        Timer::Watchdog,
    ];

    #[test]
    fn every_timer_has_its_own_slot_and_wakes_the_loop() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        for (n, &timer) in ALL.iter().enumerate() {
            d.set(timer, Some(t + ms(100 + n as u64)));
        }
        for (n, &timer) in ALL.iter().enumerate() {
            assert_eq!(d.get(timer), Some(t + ms(100 + n as u64)), "{timer:?}");
            assert_eq!(d.timeout(t), Some(ms(100 + n as u64)), "{timer:?} is the earliest");
            d.set(timer, None);
        }
        assert_eq!(d.timeout(t), None);
    }

    #[test]
    fn the_timeout_is_the_earliest_of_timers_and_retries() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        assert_eq!(d.timeout(t), None);
        d.set(Timer::Tick, Some(t + ms(1000)));
        d.set(Timer::Source, Some(t + ms(30)));
        assert_eq!(d.timeout(t), Some(ms(30)));
        d.retry(7, t + ms(10));
        d.retry(8, t + ms(20));
        assert_eq!(d.timeout(t), Some(ms(10)));
        assert_eq!(d.pop_retry(t + ms(5)), None);
        assert_eq!(d.pop_retry(t + ms(25)), Some((7, t + ms(10))));
        assert_eq!(d.pop_retry(t + ms(25)), Some((8, t + ms(20))));
        assert_eq!(d.pop_retry(t + ms(25)), None);
        assert!(!d.take_due(Timer::Source, t + ms(29)));
        assert!(d.take_due(Timer::Source, t + ms(30)));
        assert_eq!(d.get(Timer::Source), None);
        assert_eq!(d.timeout(t + ms(2000)), Some(Duration::ZERO), "overdue is now");
    }
}
