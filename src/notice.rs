/*!
When viewers are shown a notice picture instead of frames, and which one:
the whole policy, with no I/O.

- [`Notice`]: what a notice says ("starting camera…", "NO SIGNAL" and why).
  A supervised source (camera, relay) names its own from its phase
  ([`crate::supervisor::Supervisor::notice`]); for every source, a
  silence longer than [`Pace::offline_after`] is one.
- [`Pace`]: how long a silence is before it is an outage, from the
  source's own gaps between frames, so that a 0.2 fps camera is not
  "down" between its frames.
- [`Schedule`]: when a picture is asked for (at a change, then every
  [`NOTICE_EVERY`]) and whether a finished one is still wanted.

The loop asks the [`Schedule`] and hands its answer to the renderer.
*/

use crate::offline::{Kind, Request};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source that may go quiet shows viewers a notice after this long
/// without a frame, or after [`GAPS_BEFORE_NOTICE`] of its own gaps
/// between frames if those are longer, and never later than
/// `--source-timeout` (nor sooner, if that is shorter): clients with read
/// timeouts must get bytes, and a person wants to know, but a time-lapse
/// or low-light camera at 0.2 fps is not down between its frames.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(2);

/// A silence this many times the last gap between frames is the source
/// being down, not its pace.
pub const GAPS_BEFORE_NOTICE: u32 = 2;

/// While the source has no frames, viewers get a fresh notice this often:
/// its clock moves, and clients with read timeouts keep their connection.
pub const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// What viewers see while there are no frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Starting,
    Offline(String),
}

impl Notice {
    /// "no frame for N s", once a live source has been silent since its
    /// `last_frame` for `after` or more.
    pub fn silence(last_frame: Instant, now: Instant, after: Duration) -> Option<Notice> {
        let silent = now.duration_since(last_frame);
        (silent >= after).then(|| Notice::Offline(format!("no frame for {} s", silent.as_secs())))
    }

    /// The picture to render for this notice, of `size`, stamped with the
    /// wall-clock time `at` so that a viewer sees it is current.
    pub fn picture(self, size: (u16, u16), at: SystemTime) -> Request {
        let (kind, title, mut lines) = match self {
            Notice::Starting => (Kind::Starting, "starting camera…", vec![]),
            Notice::Offline(reason) => (Kind::Offline, "NO SIGNAL", vec![reason]),
        };
        lines.push(clock(at));
        Request { kind, size, title: title.into(), lines }
    }
}

/// The time of day of `at`, UTC: "HH:MM:SS UTC".
fn clock(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// A source's pace: its frames' times, and from them how long a silence
/// must be to count as an outage.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    last_frame: Option<Instant>,
    /// The time between the last two frames; zero after an outage.
    last_gap: Duration,
    /// `--source-timeout`: no silence longer than this goes without a notice.
    source_timeout: Duration,
}

impl Pace {
    pub fn new(source_timeout: Duration) -> Pace {
        Pace { last_frame: None, last_gap: Duration::ZERO, source_timeout }
    }

    pub fn last_frame(&self) -> Option<Instant> {
        self.last_frame
    }

    /// A frame came `at`. True if it ends a silence viewers were being
    /// shown (or is the first): the source's state changed.
    pub fn frame(&mut self, at: Instant) -> bool {
        let ends_notice = self.last_frame.is_none_or(|t| at >= t + self.offline_after());
        // A silence as long as --source-timeout is an outage, not the
        // source's pace.
        let gap = self.last_frame.map(|last| at.saturating_duration_since(last));
        self.last_gap = gap.filter(|&g| g < self.source_timeout).unwrap_or_default();
        self.last_frame = Some(at);
        ends_notice
    }

    /// How long a silence is before viewers are shown a notice: see
    /// [`OFFLINE_AFTER`].
    pub fn offline_after(&self) -> Duration {
        let pace = self.last_gap * GAPS_BEFORE_NOTICE;
        OFFLINE_AFTER.max(pace).min(self.source_timeout)
    }

    /// "no frame for N s" once the silence since the last frame is an outage.
    pub fn silence(&self, now: Instant) -> Option<Notice> {
        Notice::silence(self.last_frame?, now, self.offline_after())
    }

    /// When a notice would begin, if no frame comes before.
    pub fn notice_due(&self) -> Option<Instant> {
        Some(self.last_frame? + self.offline_after())
    }
}

/// When the loop asks for a notice picture, and whether one that finished
/// rendering is still to be shown.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Viewers are being shown notices instead of frames.
    showing: bool,
}

impl Schedule {
    /// A turn at which the source `changed` or the last answer's deadline
    /// came: `current` is the notice the source calls for now (None while
    /// frames flow) and `due` when one would begin if frames stopped now.
    /// Returns the notice to render, if any, and when to ask again.
    pub fn turn(
        &mut self,
        now: Instant,
        current: Option<Notice>,
        due: Option<Instant>,
    ) -> (Option<Notice>, Option<Instant>) {
        self.showing = current.is_some();
        match current {
            Some(notice) => (Some(notice), Some(now + NOTICE_EVERY)),
            None => (None, due),
        }
    }

    /// A picture finished rendering: true if viewers are to get it, which
    /// they are only while the source still calls for a notice (`current`).
    pub fn wanted(&self, current: bool) -> bool {
        self.showing && current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_silence_is_an_outage_after_two_seconds_at_a_normal_pace() {
        let t = Instant::now();
        let mut pace = Pace::new(secs(30));
        assert!(pace.frame(t), "the first frame is a change");
        assert!(!pace.frame(t + Duration::from_millis(33)));
        assert_eq!(pace.offline_after(), OFFLINE_AFTER);
        assert_eq!(pace.silence(t + Duration::from_millis(2032)), None);
        let notice = pace.silence(t + Duration::from_millis(2033));
        assert_eq!(notice, Some(Notice::Offline("no frame for 2 s".into())));
        assert_eq!(pace.notice_due(), Some(t + Duration::from_millis(2033)));
    }

    #[test]
    fn a_slow_camera_is_not_down_between_its_frames() {
        // 0.2 fps: a frame every 5 s, with --source-timeout 30.
        let t = Instant::now();
        let mut pace = Pace::new(secs(30));
        pace.frame(t);
        // Until a gap is known, 2 s of silence was an outage.
        assert!(pace.frame(t + secs(5)), "the second frame ends the first notice");
        assert_eq!(pace.offline_after(), secs(10));
        assert_eq!(pace.silence(t + secs(14)), None);
        assert!(!pace.frame(t + secs(10)), "the next frame on time ends no notice");
        assert!(pace.silence(t + secs(20)).is_some());
    }

    #[test]
    fn the_pace_never_waits_past_the_source_timeout_nor_learns_from_an_outage() {
        let t = Instant::now();
        let mut pace = Pace::new(secs(8));
        pace.frame(t);
        pace.frame(t + secs(6));
        assert_eq!(pace.offline_after(), secs(8), "2 x 6 s is capped at --source-timeout");
        // A gap as long as the timeout was an outage: back to the default.
        assert!(pace.frame(t + secs(20)), "a frame after an outage is a change");
        assert_eq!(pace.offline_after(), OFFLINE_AFTER);
        // A timeout shorter than the default wins.
        let mut short = Pace::new(secs(1));
        short.frame(t);
        assert_eq!(short.offline_after(), secs(1));
    }

    #[test]
    fn a_source_with_no_frame_yet_is_not_silent() {
        let pace = Pace::new(secs(5));
        assert_eq!((pace.silence(Instant::now()), pace.notice_due()), (None, None));
    }

    #[test]
    fn a_notice_is_asked_for_every_second_while_it_lasts_and_then_at_its_due_time() {
        let t = Instant::now();
        let mut schedule = Schedule::default();
        let due = Some(t + secs(2));
        assert_eq!(schedule.turn(t, None, due), (None, due));
        assert!(!schedule.wanted(true), "not showing: a late picture is dropped");
        let (notice, next) = schedule.turn(t, Some(Notice::Starting), None);
        assert_eq!((notice, next), (Some(Notice::Starting), Some(t + NOTICE_EVERY)));
        assert!(schedule.wanted(true));
        assert!(!schedule.wanted(false), "frames came back while it rendered");
        assert_eq!(schedule.turn(t + secs(1), None, due), (None, due));
        assert!(!schedule.wanted(true));
    }

    #[test]
    fn a_picture_carries_its_title_reason_and_time_of_day() {
        let at = UNIX_EPOCH + secs(86400 + 13 * 3600 + 5 * 60 + 9);
        let r = Notice::Offline("camera exited with status 255".into()).picture((320, 240), at);
        assert_eq!(
            (r.kind.state(), r.size, r.title.as_str()),
            ("offline", (320, 240), "NO SIGNAL")
        );
        assert_eq!(r.lines, ["camera exited with status 255", "13:05:09 UTC"]);
        let r = Notice::Starting.picture((640, 480), UNIX_EPOCH);
        assert_eq!((r.kind.state(), r.title.as_str()), ("starting", "starting camera…"));
        assert_eq!(r.lines, ["00:00:00 UTC"]);
    }
}
