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
2. **Behind.** The window is closed (under a frame), or shows
   [`BEHIND_FRAMES`] unread, with bytes waiting to be sent or on their
   way (so that acknowledgements keep the window current), time after
   time: its pace is the bytes acknowledged less those its window shows
   unread, over [`LEARN_SPAN`] of that. (A receiver short of memory for
   its buffer drops what comes in rather than close its window: Motion's,
   under a 1500-byte MTU, held 1.2 MB unread with 200 KB of window open.)
   A pace within [`KEEPS_UP`] of the camera's is a reader that keeps up,
   and is not paced.
3. **Draining.** No frame starts until what its buffer holds (about the
   widest window it advertised) is read at that pace.
4. **Paced.** A frame at most every `frame size / (KEEP_UP × pace)`: it
   waits for each frame rather than a queue growing unseen, and a reader
   that falls behind again is learned again.

A viewer on this host is seen exactly instead: its own socket's receive
queue ([`crate::sock_diag`]) is what it has not read, where on loopback
its window stays open over a queue of frames. No frame starts for it while
a whole frame is unread ([`Reader::holds`]), and it is behind whenever
one is; its pace is learned and kept by the same steps, from what it has
read exactly, and its drain is what it holds.

docs/SLOWLINK.md has the measurements behind these rules.
*/

use crate::tcp::Look;
use std::time::{Duration, Instant};

/// The reader's pace is taken from what it read over this long while it
/// stayed behind: what a window shows is within a sixteenth of the buffer
/// (it reopens in such steps), so the span must be long against that for
/// the pace to be within a few percent.
const LEARN_SPAN: Duration = Duration::from_secs(4);

/// Looks behind further apart than this are not one stretch of a reader
/// behind: it caught up in between. A reader of a frame a second showed
/// its reads here only every ten to twenty seconds, in steps of some
/// 190 KB on loopback.
const BEHIND_APART: Duration = Duration::from_secs(30);

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

/// A reader whose window shows this many frames unread is behind, window
/// closed or not: a nearly empty buffer's window moved by some 40 KB here,
/// under two frames of a 640x480 camera.
const BEHIND_FRAMES: f64 = 4.0;

/// ... and never less than this, for cameras of small frames.
const BEHIND_BYTES: f64 = 128.0 * 1024.0;

/// A learned pace of this share of the camera's frame rate or more is a
/// reader that keeps up, as one that stalls now and then does: pacing it
/// would cost it frames it can take.
const KEEPS_UP: f64 = 0.9;

/// A paced reader seen behind again after its drain has its pace eased
/// by this factor, at most once per [`EASE_EVERY`]: a pace learned while
/// its receiver still grew its buffer runs ahead of its reads (a reader
/// of 5 frames a second was learned at 7.2 here).
const EASE: f64 = 0.9;
const EASE_EVERY: Duration = Duration::from_secs(1);

/// A reader's pace, learned while it was behind.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pace {
    /// Bytes a second it read while it had more than it could read.
    rate: f64,
    /// No frame before this: what it had unread drains meanwhile.
    drained_at: Instant,
    /// When the rate was last eased for a reader still behind.
    eased_at: Instant,
}

/// One viewer's reader, as far as the acknowledgements show it.
#[derive(Clone, Debug, Default)]
pub struct Reader {
    /// The widest window the peer has advertised.
    widest: u64,
    /// What it had not read at the last look: on this host, what its
    /// socket held and ours had not sent ([`Look::unread_here`]);
    /// elsewhere, the widest window less the window then, as far as its
    /// window shows (little until it is behind).
    pub unread: u64,
    /// On this host: `unread` was last read from its own socket, exactly.
    pub here: bool,
    /// Looks while the reader is behind, when what it has read had grown,
    /// and those bytes.
    looks: Vec<(Instant, u64)>,
    /// When this stretch behind began, and the camera's frame then: the
    /// camera's rate, to tell a slow reader from one that keeps up.
    stretch: Option<(Instant, u64)>,
    pace: Option<Pace>,
    /// The mean size of the frames it was sent, for its pace in frames.
    frame_bytes: f64,
}

impl Reader {
    /// Takes a look at the connection on the way to frame `seq` of `frame`
    /// bytes: learns the reader's pace while it is behind.
    pub fn observe(&mut self, look: &Look, frame: u64, seq: u64, now: Instant) {
        self.frame_bytes = match self.frame_bytes {
            0.0 => frame as f64,
            mean => mean + (frame as f64 - mean) / 8.0,
        };
        if let Some(window) = look.window {
            self.widest = self.widest.max(window);
        }
        self.here = look.peer_unread.is_some();
        // Behind: what it has read (when), and what it has to read before
        // a frame started now.
        let (sample, ahead) = match (look.unread_here(), look.read_here()) {
            // On this host its own socket says, exactly.
            (Some(unread), Some(read)) => {
                self.unread = unread;
                if !Reader::holds(look, frame) {
                    return;
                }
                ((now, read), unread as f64)
            }
            _ => {
                let Some(window) = look.window else { return };
                self.unread = self.widest - window;
                if !self.shows_behind(window, frame) || look.unsent + look.in_flight == 0 {
                    return;
                }
                // With bytes waiting or on their way (so that its window
                // is current), what it has read is what its kernel took
                // less what its window shows unread; and its full buffer
                // is to be read before a frame started now.
                let at = now.checked_sub(look.since_ack).unwrap_or(now);
                let read = look.acked.saturating_sub(self.unread);
                ((at, read), (self.widest as f64 * FULL_BUFFER - window as f64).max(0.0))
            }
        };
        // Paced, drained, and behind again: the pace was too fast (learned
        // while the receiver still grew its buffer, which inflates it).
        if let Some(pace) = &mut self.pace {
            if now >= pace.drained_at && now >= pace.eased_at + EASE_EVERY {
                pace.rate *= EASE;
                pace.eased_at = now;
            }
        }
        match self.looks.last() {
            Some(&(last, _)) if sample.0.saturating_duration_since(last) > BEHIND_APART => {
                self.looks.clear();
            }
            // Less than a frame more read is the same step: the window
            // moves by hundreds of bytes as frames go into it (it is
            // reckoned in memory, in units of its scale), which a fit
            // would take for reads, making a staircase of a few large
            // steps look unsteady.
            Some(&(_, read)) if (sample.1 as f64) < read as f64 + self.frame_bytes => return,
            _ => {}
        }
        if self.looks.is_empty() {
            self.stretch = Some((now, seq));
        }
        self.looks.push(sample);
        let rate = match steady_rate(&self.looks) {
            Some(Ok(rate)) => rate,
            // Not steady: the older half goes, and the rest is tried again.
            Some(Err(mid)) => {
                self.looks.drain(..mid);
                return;
            }
            None => return,
        };
        self.looks.clear();
        if let Some((since, first)) = self.stretch {
            let camera = seq.saturating_sub(first) as f64
                / now.duration_since(since).as_secs_f64().max(1e-3);
            if rate / self.frame_bytes.max(1.0) >= KEEPS_UP * camera {
                return;
            }
        }
        let drain = Duration::from_secs_f64((ahead / rate).min(MAX_DRAIN.as_secs_f64()));
        self.pace = Some(Pace { rate, drained_at: now + drain, eased_at: now });
    }

    /// Whether it was seen behind lately: it is being learned, and is
    /// looked at on every frame.
    pub fn behind(&self, now: Instant) -> bool {
        self.looks.last().is_some_and(|&(at, _)| now.saturating_duration_since(at) <= BEHIND_APART)
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

    /// How long a reader of one frame a second takes to read a full
    /// buffer, if `look` shows its window behind (closed, or
    /// [`BEHIND_FRAMES`] unread): by then it has shown it reads. A Linux
    /// receiver keeps a closed window shut until a sixteenth of its buffer
    /// and one of our segments are free, reckoned in memory its segments
    /// take (some twice their bytes on loopback); here a reader of one
    /// 18 KB frame a second, out of a 128 KB buffer, showed nothing for
    /// more than ten seconds. Nothing tells it from one that has stopped.
    ///
    /// A viewer on this host that [`Reader::holds`] a frame unread is
    /// given the same: its application may read from its socket a buffer
    /// at a time (64 KB, several frames) and then take a frame from it
    /// every so often, reading nothing from its socket meanwhile.
    pub fn full_buffer_time(&self, look: &Look) -> Option<Duration> {
        let frame = self.frame_bytes;
        let behind = match look.peer_unread {
            Some(_) => Reader::holds(look, frame as u64),
            None => self.shows_behind(look.window?, frame as u64),
        };
        (frame > 0.0 && behind)
            .then(|| Duration::from_secs_f64(FULL_BUFFER * self.widest as f64 / frame))
    }

    /// Whether a viewer on this host has a frame of `frame` bytes or more
    /// still to read ([`Look::unread_here`]): the next frame waits for its
    /// reads, so that what it reads next is the newest frame, not a queue.
    pub fn holds(look: &Look, frame: u64) -> bool {
        look.unread_here().is_some_and(|unread| unread >= frame)
    }

    /// Whether `window` shows the reader behind on the way to a frame of
    /// `frame` bytes, not the window's own jitter: closed under the frame,
    /// or [`BEHIND_FRAMES`] unread.
    fn shows_behind(&self, window: u64, frame: u64) -> bool {
        let unread = self.widest.saturating_sub(window);
        window < frame || unread as f64 >= (BEHIND_FRAMES * self.frame_bytes).max(BEHIND_BYTES)
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

/// The bytes a second read over `looks` (taken while the reader was
/// behind), fitted by least squares once they span [`LEARN_SPAN`] in
/// [`MIN_STEPS`] steps at least, if the fit of their first half agrees
/// with their second's within [`STEADY`]: while the receiver grows its
/// buffer, what it seems to read grows faster than its reads. A fit, not
/// the two ends, because a buffer reopens in steps of 64 KB or more. None
/// while the span is short; the index of the middle look when the halves
/// differ.
fn steady_rate(looks: &[(Instant, u64)]) -> Option<Result<f64, usize>> {
    let (&(first_at, _), &(last_at, _)) = (looks.first()?, looks.last()?);
    let span = last_at.saturating_duration_since(first_at);
    if span < LEARN_SPAN || looks.len() < MIN_STEPS {
        return None;
    }
    let half = first_at + span / 2;
    let middle = looks.iter().position(|&(at, _)| at >= half)?.max(2);
    let (early, late, overall) =
        (slope(&looks[..middle]), slope(&looks[middle - 1..]), slope(looks));
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
        .map(|&(t, b)| (t.saturating_duration_since(t0).as_secs_f64(), b.saturating_sub(b0) as f64))
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

    /// A look at a reader that has read `read` bytes, its window `window`
    /// open of the `widest` it showed, with bytes waiting: its kernel has
    /// taken what it read and what it holds unread.
    fn reading(read: u64, widest: u64, window: u64) -> Look {
        look(read + (widest - window), window, 16_000)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A reader first seen at `t` with its window `widest` open, on the
    /// way to frames of `frame` bytes.
    fn opened(widest: u64, frame: u64, t: Instant) -> Reader {
        let mut r = Reader::default();
        r.observe(&look(0, widest, 0), frame, 0, t);
        r
    }

    /// A full buffer that reopens by 200 000 bytes every second (a reader
    /// of 200 000 bytes a second), looked at every 100 ms from `from`, for
    /// the seconds `seconds` counted from there.
    fn behind(r: &mut Reader, from: Instant, seconds: std::ops::Range<u64>) {
        for tick in seconds.start * 10..seconds.end * 10 {
            let at = from + ms(tick * 100);
            let acked = 2_000_000 + tick / 10 * 200_000;
            let window = if tick % 10 == 0 { 190_000 } else { 0 };
            r.observe(&look(acked, window, 16_000), 20_000, tick * 3, at);
        }
    }

    #[test]
    fn a_window_behind_is_given_the_time_a_full_buffer_takes_at_a_frame_a_second() {
        let t = Instant::now();
        // A 128 KB window, 18 KB frames: a full buffer holds twice that
        // window, 14.2 frames.
        let r = opened(128_000, 18_000, t);
        let full = Duration::from_secs_f64(2.0 * 128_000.0 / 18_000.0);
        assert_eq!(r.full_buffer_time(&look(0, 0, 18_000)), Some(full));
        // Open under a frame is closed; and it shows behind at 128 KB
        // unread (here more than four frames).
        assert_eq!(r.full_buffer_time(&look(0, 17_999, 0)), Some(full));
        assert_eq!(r.full_buffer_time(&look(0, 18_000, 0)), None);
        let r = opened(400_000, 18_000, t);
        assert!(r.full_buffer_time(&look(0, 400_000 - 128 * 1024, 0)).is_some());
        assert_eq!(r.full_buffer_time(&look(0, 400_000 - 128 * 1024 + 1, 0)), None);
        // A window wider than any it had shown (not yet looked at) is
        // open.
        assert_eq!(r.full_buffer_time(&look(0, 500_000, 0)), None);
        // Nothing known of its frames, or of its window: no answer.
        assert_eq!(Reader::default().full_buffer_time(&look(0, 0, 18_000)), None);
        let blind = Look { window: None, ..look(0, 0, 18_000) };
        assert_eq!(opened(128_000, 18_000, t).full_buffer_time(&blind), None);
    }

    /// A look at a viewer on this host that was sent `sent` bytes and has
    /// `unread` of them in its socket.
    fn here(sent: u64, unread: u64) -> Look {
        Look { peer_unread: Some(unread), ..look(sent, 100_000, 0) }
    }

    #[test]
    fn a_viewer_on_this_host_is_held_by_a_whole_frame_unread_in_either_socket() {
        let frame = 20_000;
        assert!(Reader::holds(&here(50_000, 20_000), frame));
        assert!(!Reader::holds(&here(50_000, 19_999), frame));
        assert!(Reader::holds(&Look { unsent: 1, ..here(50_000, 19_999) }, frame));
        // Elsewhere, only its window can tell.
        assert!(!Reader::holds(&look(50_000, 0, 50_000), frame));
    }

    #[test]
    fn a_reader_on_this_host_is_learned_from_its_own_socket() {
        // Ten frames of 20 000 bytes a second from a 30 fps camera, looked
        // at on every frame: one frame waits in its socket between reads,
        // for two looks in three. Its window (100 KB, open) shows nothing.
        let t = Instant::now();
        let mut r = Reader::default();
        let mut learned = None;
        for tick in 0..300u64 {
            let read = tick / 3 * 20_000;
            let unread = if tick % 3 == 0 { 0 } else { 20_000 };
            let at = t + ms(tick * 33);
            r.observe(&here(read + unread, unread), 20_000, tick, at);
            if r.paced() {
                learned = Some(at - t);
                break;
            }
        }
        // Over LEARN_SPAN, from the first look behind.
        let learned = learned.expect("learned");
        assert!(learned >= LEARN_SPAN && learned < LEARN_SPAN + ms(500), "{learned:?}");
        assert!((r.fps() - 10.0).abs() < 0.3, "{}", r.fps());
        assert_eq!(r.unread, 20_000, "its socket's count, not its window's");
        // What it has unread, one frame, drains at its pace: 0.1 s.
        let drained = r.next_start(t).unwrap() - (t + learned);
        assert!((drained.as_secs_f64() - 0.1).abs() < 0.01, "{drained:?}");
    }

    #[test]
    fn a_reader_on_this_host_that_keeps_up_is_never_behind() {
        let t = Instant::now();
        let mut r = Reader::default();
        for tick in 0..300u64 {
            // What it was sent is read before the next frame; a part of
            // the last one at times.
            let unread = if tick % 5 == 0 { 19_999 } else { 0 };
            r.observe(&here(tick * 20_000 + unread, unread), 20_000, tick, t + ms(tick * 33));
        }
        assert!(!r.paced() && !r.behind(t + ms(10_000)));
    }

    #[test]
    fn a_reader_that_keeps_up_is_never_paced() {
        let t = Instant::now();
        let mut r = Reader::default();
        for i in 0..100 {
            r.observe(&look(i * 20_000, 500_000, 0), 20_000, i, t + ms(i * 33));
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
            r.observe(&blind, 20_000, i * 3, t + ms(i * 100));
        }
        assert!(!r.paced());
    }

    #[test]
    fn a_reader_behind_is_learned_between_closings_then_drains_then_is_paced() {
        let t = Instant::now();
        let mut r = opened(1_000_000, 20_000, t);
        behind(&mut r, t + ms(1000), 0..5);
        assert!(!r.paced(), "five steps, 1.0 to 5.0 s, say too little");
        assert!(r.behind(t + ms(5900)));
        behind(&mut r, t + ms(1000), 5..6);
        // Steps from 1.0 s to 6.0 s, 200 000 bytes apart: the looks with the
        // window reopened by 190 000 count too, as 810 000 still unread.
        assert!((r.rate() - 200_000.0).abs() < 1.0, "{}", r.rate());
        let learned = t + ms(6900);
        // Its buffer (2 x the widest window, less the 190 000 open) drains
        // at that pace from the look at 6.0 s that taught it.
        let drained = t + ms(6000) + Duration::from_secs_f64(1_810_000.0 / 200_000.0);
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
            r.observe(&look(2_000_000, 0, 16_000), 20_000, i * 3, t + ms(i * 100));
        }
        assert!(!r.paced());
    }

    /// A reader of `fps` frames of 18 000 bytes whose buffer reopens once
    /// every `every`, as a Linux receiver's did here: then four frames go
    /// into the reopened 80 000 bytes, and each look shows a few hundred
    /// bytes more read, which is the window's accounting, not reads.
    /// Returns when it was learned, if within `cycles`.
    fn staircase(fps: f64, every: Duration, cycles: u32) -> (Reader, Option<Instant>) {
        let t = Instant::now();
        let mut r = opened(224_000, 18_000, t);
        for cycle in 0..cycles {
            let at = t + every * cycle;
            let read = (fps * 18_000.0 * (every * cycle).as_secs_f64()) as u64;
            for frame in 0..4 {
                let now = at + ms(33 * frame);
                let acked = 1_000_000 + read + frame * 18_000;
                let window = 80_000 - frame * 17_500;
                let seq = (now - t).as_millis() as u64 * 30 / 1000;
                r.observe(&look(acked, window, 16_000), 18_000, seq, now);
                if r.paced() {
                    return (r, Some(now));
                }
            }
        }
        (r, None)
    }

    #[test]
    fn a_staircase_of_few_large_steps_is_learned_by_its_steps() {
        // Two frames a second, a step every 5.5 s: the sixth step, 27.5 s
        // on (the looks within a step, taken for steps, made it unsteady
        // for ever).
        let (r, learned) = staircase(2.0, ms(5_500), 20);
        assert_eq!(learned.map(|at| at - r.stretch.unwrap().0), Some(ms(27_500)));
        assert!((r.fps() - 2.0).abs() < 0.01, "{}", r.fps());
        // One frame a second, a step every 11 s: its steps are still one
        // stretch behind.
        let (r, learned) = staircase(1.0, ms(11_000), 20);
        assert!(learned.is_some());
        assert!((r.fps() - 1.0).abs() < 0.01, "{}", r.fps());
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
            r.observe(&look(acked, 0, 16_000), 20_000, tick * 3, t + ms(tick * 100));
        }
        assert!(!r.paced(), "{}", r.rate());
        // Then steady: learned at its own pace.
        for tick in 40..80 {
            acked += 30_000;
            r.observe(&look(acked, 0, 16_000), 20_000, tick * 3, t + ms(tick * 100));
            if r.paced() {
                break;
            }
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

    #[test]
    fn a_reader_whose_kernel_drops_rather_than_closes_is_learned_with_its_window_open() {
        // Motion's case: 1.3 MB unread of a widest 1.5 MB, 200 KB of window
        // open, and 450 000 bytes a second read (10 frames of 45 000).
        let t = Instant::now();
        let mut r = opened(1_500_000, 45_000, t);
        for tick in 1..=60u64 {
            let window = 200_000 + (tick % 3) * 10_000;
            let l = reading(tick * 45_000, 1_500_000, window);
            r.observe(&l, 45_000, tick * 3, t + ms(tick * 100));
        }
        assert!((r.rate() - 450_000.0).abs() < 10_000.0, "{}", r.rate());
        assert!(r.fps() > 9.5 && r.fps() < 10.5, "{}", r.fps());
    }

    #[test]
    fn a_reader_a_frame_or_two_behind_is_not_behind() {
        let t = Instant::now();
        let mut r = opened(400_000, 26_000, t);
        for tick in 1..200u64 {
            // The window moves by up to 60 KB as it reads: noise, not a queue.
            let window = 340_000 + (tick % 7) * 10_000;
            r.observe(&reading(tick * 26_000, 400_000, window), 26_000, tick, t + ms(tick * 40));
        }
        assert!(!r.paced() && !r.behind(t + ms(8000)));
    }

    #[test]
    fn a_reader_that_keeps_up_with_the_camera_between_stalls_is_not_paced() {
        // Behind at every look by 8 frames, but reading 30 of the camera's
        // 30 frames a second: a reader that stalled once and keeps up.
        let t = Instant::now();
        let mut r = opened(1_000_000, 20_000, t);
        for tick in 1..=100u64 {
            let l = reading(tick * 60_000, 1_000_000, 1_000_000 - 160_000);
            r.observe(&l, 20_000, tick * 3, t + ms(tick * 100));
        }
        assert!(!r.paced(), "{}", r.fps());
        // One that reads 20 of 30 is.
        let mut slow = opened(1_000_000, 20_000, t);
        for tick in 1..=100u64 {
            let l = reading(tick * 40_000, 1_000_000, 1_000_000 - 160_000);
            slow.observe(&l, 20_000, tick * 3, t + ms(tick * 100));
        }
        assert!((slow.fps() - 20.0).abs() < 0.5, "{}", slow.fps());
    }

    #[test]
    fn a_reader_behind_while_frames_are_held_for_the_path_is_still_learned() {
        // Nothing unsent (the path's queue holds frames back), but bytes in
        // flight, so acknowledgements keep its window current.
        let t = Instant::now();
        let mut r = opened(1_500_000, 45_000, t);
        for tick in 1..=60u64 {
            let acked = tick * 45_000 + 1_300_000;
            let l = Look { in_flight: 30_000, ..look(acked, 200_000, 0) };
            r.observe(&l, 45_000, tick * 3, t + ms(tick * 100));
        }
        assert!((r.fps() - 10.0).abs() < 0.5, "{}", r.fps());
        // With nothing sent nor on its way, its window may be stale: no look counts.
        let mut idle = opened(1_500_000, 45_000, t);
        for tick in 1..=60u64 {
            let acked = tick * 45_000 + 1_300_000;
            idle.observe(&look(acked, 200_000, 0), 45_000, tick * 3, t + ms(tick * 100));
        }
        assert!(!idle.paced() && !idle.behind(t + ms(6000)));
    }

    #[test]
    fn a_pace_learned_too_fast_is_eased_while_the_reader_stays_behind() {
        let t = Instant::now();
        let mut r = opened(1_000_000, 20_000, t);
        // Learned at 10 frames a second (200 000 bytes), drained by 10 s.
        behind(&mut r, t, 0..6);
        assert!((r.fps() - 10.0).abs() < 0.1, "{}", r.fps());
        let drained = r.next_start(t).unwrap();
        // Behind again after its drain, as a reader of 7 frames a second
        // given 8 is: eased once a second, to under 7.
        let mut acked = 10_000_000;
        let mut at = drained;
        let mut eased = Vec::new();
        while r.fps() > 7.0 && eased.len() < 20 {
            at += ms(250);
            acked += 35_000;
            r.observe(&look(acked, 500_000, 16_000), 20_000, 0, at);
            eased.push(r.fps());
        }
        assert!(r.fps() <= 7.0, "{eased:?}");
        assert_eq!(eased.len(), 13, "a second apart, from 9 to 6.6: {eased:?}");
        // Caught up: left as it is.
        let before = r.fps();
        r.observe(&look(acked, 1_000_000, 16_000), 20_000, 0, at + ms(2000));
        assert_eq!(r.fps(), before);
    }
}
