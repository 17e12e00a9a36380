/*!
How fast a viewer's application reads, from what its kernel tells ours,
and so how often it can take a frame: pure code, no socket.

A client that reads slower than the camera writes (an OpenCV loop, an NVR,
Motion at 10 fps) would otherwise take every frame the network can carry,
and its own receive buffer, which the kernel grows to megabytes, becomes a
queue of seconds.

The peer's kernel advertises a window, the room left in its receive
buffer, but a Linux receiver tells of its application's reads only when a
read at least doubles that window (`tcp_cleanup_rbuf`), and opens a closed
window only once a sixteenth of its buffer is free (`__tcp_select_window`):
reads are seen only as a full buffer reopening, in steps of 64 KB or more.
Whenever the window is closed the buffer is full, so the bytes
acknowledged between two such moments are what the application read
meanwhile. So a reader is learned once it has filled its
buffer:

1. **Filling.** Frames go as the link takes them (and `--max-queued-bytes`
   allows); the reader is not seen.
2. **Behind.** The window is closed (under a frame) with bytes waiting to
   be sent, time after time: its pace is the bytes acknowledged over
   [`LEARN_SPAN`] of that.
3. **Draining.** No frame starts until what its buffer holds (about the
   widest window it advertised) is read at that pace.
4. **Paced.** A frame at most every `frame size / (KEEP_UP × pace)`: it
   waits for each frame rather than a queue growing unseen, and a reader
   that falls behind again is learned again.

docs/SLOWLINK.md has the measurements behind these rules.
*/

use crate::tcp::Look;
use std::time::{Duration, Instant};

/// The reader's pace is taken from the bytes acknowledged over this long
/// while its buffer stayed full: at any look with the window closed the
/// buffer is within a sixteenth of full, so the span must be long against
/// that for the pace to be within a few percent.
const LEARN_SPAN: Duration = Duration::from_secs(4);

/// Closed windows further apart than this are not one stretch of a reader
/// behind: it caught up in between. A reader of a frame a second reopens
/// its buffer only every few seconds (64 KB at a time on loopback).
const CLOSINGS_APART: Duration = Duration::from_secs(10);

/// The share of its measured pace a learned reader is given: a little
/// less than it can take, so that it waits for each frame instead of a
/// queue growing where the window cannot show it.
const KEEP_UP: f64 = 0.8;

/// What a full buffer holds, as a multiple of the widest window the
/// reader advertised: the window is capped below the buffer's room
/// (`rcv_ssthresh`); measured here, a full buffer held 1.1 to 1.7 times
/// it. A drain cut short leaves a queue that only the margin of
/// [`KEEP_UP`] drains, slowly; one too long costs a pause, once.
const FULL_BUFFER: f64 = 2.0;

/// A reader's pace, learned while it was behind.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pace {
    /// Bytes a second it read while it had more than it could read.
    rate: f64,
    /// No frame before this: what it had unread drains meanwhile.
    drained_at: Instant,
}

/// One viewer's reader, as far as the acknowledgements show it.
#[derive(Clone, Debug, Default)]
pub struct Reader {
    /// The widest window the peer has advertised.
    widest: u64,
    /// The widest window less the window at the last look: what it has
    /// not read, as far as its window shows (little until it is behind).
    pub unread: u64,
    /// Looks with the window closed, when the bytes acknowledged had
    /// grown, and those bytes, while the reader is behind.
    closed: Vec<(Instant, u64)>,
    pace: Option<Pace>,
    /// The mean size of the frames it was sent, for its pace in frames.
    frame_bytes: f64,
}

impl Reader {
    /// Takes a look at the connection on the way to a frame of `frame`
    /// bytes: learns the reader's pace while it is behind.
    pub fn observe(&mut self, look: &Look, frame: u64, now: Instant) {
        self.frame_bytes = match self.frame_bytes {
            0.0 => frame as f64,
            mean => mean + (frame as f64 - mean) / 8.0,
        };
        let Some(window) = look.window else { return };
        self.widest = self.widest.max(window);
        self.unread = self.widest - window;
        if window >= frame || look.unsent == 0 {
            return;
        }
        // Closed, with bytes waiting: its buffer is full.
        let sample = (now.checked_sub(look.since_ack).unwrap_or(now), look.acked);
        match self.closed.last() {
            Some(&(at, _)) if sample.0.saturating_duration_since(at) > CLOSINGS_APART => {
                self.closed.clear();
            }
            Some(&(_, acked)) if sample.1 <= acked => return,
            _ => {}
        }
        self.closed.push(sample);
        let rate = match steady_rate(&self.closed) {
            Some(Ok(rate)) => rate,
            // Not steady: the older half goes, and the rest is tried again.
            Some(Err(mid)) => {
                self.closed.drain(..mid);
                return;
            }
            None => return,
        };
        let drain = self.widest as f64 * FULL_BUFFER / rate;
        let drained_at = now + Duration::from_secs_f64(drain.min(MAX_DRAIN.as_secs_f64()));
        self.pace = Some(Pace { rate, drained_at });
        self.closed.clear();
    }

    /// Whether its buffer was full lately: it is being learned, and is
    /// looked at on every frame.
    pub fn behind(&self, now: Instant) -> bool {
        self.closed
            .last()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) <= CLOSINGS_APART)
    }

    /// Whether its pace has been learned: it is, or was, behind.
    pub fn paced(&self) -> bool {
        self.pace.is_some()
    }

    /// Its pace in bytes a second, 0 while not learned.
    pub fn rate(&self) -> f64 {
        self.pace.map_or(0.0, |p| p.rate)
    }

    /// Its pace in frames a second, 0 while not learned.
    pub fn fps(&self) -> f64 {
        self.rate() / self.frame_bytes.max(1.0)
    }

    /// The earliest a frame may start for this reader, if its pace says
    /// wait: until what it had unread has drained, then one frame every
    /// `frame size / (KEEP_UP × pace)` after `last_start`.
    pub fn next_start(&self, last_start: Instant) -> Option<Instant> {
        let pace = self.pace?;
        let fps = pace.rate * KEEP_UP / self.frame_bytes.max(1.0);
        let interval = Duration::from_secs_f64((1.0 / fps.max(1e-3)).min(86_400.0));
        Some(pace.drained_at.max(last_start + interval))
    }
}

/// The bytes a second acknowledged over `closed` (looks with the buffer
/// full), fitted by least squares once they span [`LEARN_SPAN`] in
/// [`MIN_STEPS`] steps at least, if the fit of their first half agrees
/// with their second's within [`STEADY`]: while the receiver grows its
/// buffer, the bytes acknowledged grow faster than its reads. A fit, not
/// the two ends, because a buffer reopens in steps of 64 KB or more. None
/// while the span is short; the index of the middle look when the halves
/// differ.
fn steady_rate(closed: &[(Instant, u64)]) -> Option<Result<f64, usize>> {
    let (&(first_at, _), &(last_at, _)) = (closed.first()?, closed.last()?);
    let span = last_at.saturating_duration_since(first_at);
    if span < LEARN_SPAN || closed.len() < MIN_STEPS {
        return None;
    }
    let half = first_at + span / 2;
    let middle = closed.iter().position(|&(at, _)| at >= half)?.max(2);
    let (early, late, overall) =
        (slope(&closed[..middle]), slope(&closed[middle - 1..]), slope(closed));
    match (early, late, overall) {
        (Some(early), Some(late), Some(overall))
            if (early - late).abs() <= STEADY * early.max(late) && overall > 0.0 =>
        {
            Some(Ok(overall))
        }
        _ => Some(Err(middle)),
    }
}

/// The least-squares slope of bytes over seconds.
fn slope(points: &[(Instant, u64)]) -> Option<f64> {
    let (&(t0, b0), n) = (points.first()?, points.len() as f64);
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|&(t, b)| (t.saturating_duration_since(t0).as_secs_f64(), (b - b0) as f64))
        .collect();
    let (mx, my) = xy.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = xy
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx).powi(2)));
    (sxx > 0.0).then(|| sxy / sxx)
}

/// A slow reader's buffer reopens in few, large steps: fewer than this
/// many in a span say too little of its pace.
const MIN_STEPS: usize = 6;

/// How far the two halves of a span may differ in rate for it to be the
/// reader's own pace.
const STEADY: f64 = 0.35;

/// The longest drain: a reader with a huge buffer and a trickle of a pace
/// still gets a frame this often.
const MAX_DRAIN: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn look(acked: u64, window: u64, unsent: u64) -> Look {
        Look { acked, window: Some(window), unsent, ..Look::default() }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A full buffer that reopens by 200 000 bytes every second (a reader
    /// of 200 000 bytes a second), looked at every 100 ms from `from`, for
    /// the seconds `seconds` counted from there.
    fn behind(r: &mut Reader, from: Instant, seconds: std::ops::Range<u64>) {
        for tick in seconds.start * 10..seconds.end * 10 {
            let at = from + ms(tick * 100);
            let acked = 2_000_000 + tick / 10 * 200_000;
            let window = if tick % 10 == 0 { 190_000 } else { 0 };
            r.observe(&look(acked, window, 16_000), 20_000, at);
        }
    }

    #[test]
    fn a_reader_that_keeps_up_is_never_paced() {
        let t = Instant::now();
        let mut r = Reader::default();
        for i in 0..100 {
            r.observe(&look(i * 20_000, 500_000, 0), 20_000, t + ms(i * 33));
        }
        assert!(!r.paced());
        assert_eq!(r.next_start(t), None);
    }

    #[test]
    fn a_kernel_without_the_window_is_never_paced() {
        let t = Instant::now();
        let mut r = Reader::default();
        let blind = Look { window: None, unsent: 16_000, ..Look::default() };
        for i in 0..10 {
            r.observe(&blind, 20_000, t + ms(i * 100));
        }
        assert!(!r.paced());
    }

    #[test]
    fn a_reader_behind_is_learned_between_closings_then_drains_then_is_paced() {
        let t = Instant::now();
        let mut r = Reader::default();
        r.observe(&look(0, 1_000_000, 0), 20_000, t);
        behind(&mut r, t + ms(1000), 0..5);
        assert!(!r.paced(), "five steps, 1.1 to 5.1 s, say too little");
        assert!(r.behind(t + ms(5900)));
        behind(&mut r, t + ms(1000), 5..6);
        // Six steps from 1.1 s to 6.1 s, 200 000 bytes apart.
        assert!((r.rate() - 200_000.0).abs() < 1.0, "{}", r.rate());
        let learned = t + ms(6900);
        // Its buffer (2 x the widest window) drains in 10 s from the look
        // that taught it.
        let drained = t + ms(6100) + Duration::from_secs_f64(2_000_000.0 / 200_000.0);
        assert_eq!(r.next_start(learned), Some(drained));
        // Then 8 frames a second, 0.8 of its 10.
        let later = drained + ms(500);
        let gap = r.next_start(later).unwrap() - later;
        assert!((gap.as_secs_f64() - 1.0 / 8.0).abs() < 1e-6, "{gap:?}");
    }

    #[test]
    fn a_window_closed_with_nothing_read_teaches_nothing() {
        let t = Instant::now();
        let mut r = Reader::default();
        for i in 0..50 {
            r.observe(&look(2_000_000, 0, 16_000), 20_000, t + ms(i * 100));
        }
        assert!(!r.paced());
    }

    #[test]
    fn a_buffer_that_grows_while_it_fills_is_not_a_pace() {
        let t = Instant::now();
        let mut r = Reader::default();
        // Acknowledged bytes grow 100 000 a second, then 300 000: the
        // receiver grew its buffer.
        let mut acked = 1_000_000;
        for tick in 0..40 {
            acked += if tick < 20 { 10_000 } else { 30_000 };
            r.observe(&look(acked, 0, 16_000), 20_000, t + ms(tick * 100));
        }
        assert!(!r.paced(), "{}", r.rate());
        // Then steady: learned at its own pace.
        for tick in 40..80 {
            acked += 30_000;
            r.observe(&look(acked, 0, 16_000), 20_000, t + ms(tick * 100));
        }
        assert!((r.rate() - 300_000.0).abs() < 1.0, "{}", r.rate());
    }

    #[test]
    fn closings_far_apart_start_over() {
        let t = Instant::now();
        let mut r = Reader::default();
        behind(&mut r, t, 0..2);
        behind(&mut r, t + ms(11_000), 2..4);
        assert!(!r.paced());
    }
}
