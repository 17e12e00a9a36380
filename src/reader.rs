/*!
How far behind a viewer's application reads, from what its kernel tells
ours, and so whether it can take a new frame now: pure code, no socket.

A client that reads slower than the camera writes (an OpenCV loop, an NVR,
Motion at 10 fps) would otherwise take every frame the network can carry,
and its own receive buffer, which the kernel grows to megabytes, becomes a
queue of seconds. So a frame waits while the client's window says it has
more than [`Reader::judge`]'s `room` unread, and it is then the newest.

The peer advertises a window: the room left in its receive buffer, capped
at a threshold of its own (`rcv_ssthresh`). What it took off the wire and
has not read narrows the window, so `widest - window` (the widest window it
advertised, less the window now) estimates the unread share. Linux receivers
limit what that estimate is worth (docs/SLOWLINK.md has the measurements):

- While more than half the window is open, reads reopen it without saying
  so (`tcp_cleanup_rbuf` sends a window update only when a read at least
  doubles the window), and the window moves with the receiver's own
  accounting (its threshold, its measured overhead per byte) as much as
  with what is unread. There the estimate is not trusted and the frame goes.
- Below half, each read that frees room sends an update at once: the
  estimate is trusted, and a frame waits for the reader.
- A window that is never reported (kernels before 5.4) leaves every frame
  to go, as it would without this pacing.
*/

use crate::tcp::Look;
use std::time::{Duration, Instant};

/// While the window is trusted, a held frame is looked at again this soon:
/// a read that frees room is reported at once, and a camera's next frame
/// may be far off.
pub const TRUSTED_RETRY: Duration = Duration::from_millis(10);

/// A window not updated for this long is looked behind: the frame goes,
/// and its acknowledgement brings a fresh window. The receiver's own
/// accounting can narrow a window with nothing unread, and then no read
/// would ever update it.
const STALE: Duration = Duration::from_secs(1);

/// What [`Reader::judge`] says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// The client has room: start the newest frame.
    Go,
    /// Hold the frame; look again at this time (or at the next frame).
    Wait(Instant),
}

/// One viewer's reader, as far as the acknowledgements show it.
#[derive(Clone, Debug, Default)]
pub struct Reader {
    /// The widest window the peer has advertised.
    widest: u64,
    /// Unread bytes in the peer's buffer at the last look, where the
    /// window could tell; 0 where it could not.
    pub unread: u64,
}

impl Reader {
    /// Takes a look at the connection and says whether a frame can start:
    /// yes unless the window is trusted and the bytes ahead of the frame
    /// (unsent, in flight, unread) are `room` or more.
    pub fn judge(&mut self, look: &Look, room: u64, now: Instant) -> Verdict {
        let Some(window) = look.window else {
            self.unread = 0;
            return Verdict::Go;
        };
        self.widest = self.widest.max(window);
        let trusted = window.saturating_mul(2) <= self.widest;
        self.unread = if trusted { self.widest - window } else { 0 };
        let ahead = self.unread + look.in_flight + look.unsent;
        if !trusted || ahead < room || look.since_ack >= STALE {
            return Verdict::Go;
        }
        Verdict::Wait(now + TRUSTED_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(acked: u64, window: u64, since_ack_ms: u64) -> Look {
        Look {
            acked,
            window: Some(window),
            since_ack: Duration::from_millis(since_ack_ms),
            ..Look::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_reader_with_an_open_window_takes_the_frame() {
        let t = Instant::now();
        let mut r = Reader::default();
        assert_eq!(r.judge(&look(0, 100_000, 0), 20_000, t), Verdict::Go);
        assert_eq!(r.unread, 0);
    }

    #[test]
    fn a_kernel_without_the_window_leaves_every_frame_to_go() {
        let t = Instant::now();
        let mut r = Reader::default();
        let blind = Look { window: None, unsent: 0, ..look(0, 0, 0) };
        assert_eq!(r.judge(&blind, 1, t), Verdict::Go);
    }

    #[test]
    fn a_window_below_half_is_trusted_and_retried_soon() {
        let t = Instant::now();
        let mut r = Reader::default();
        r.judge(&look(0, 100_000, 0), 20_000, t);
        // 70 000 unread, window under half: hold, look again soon.
        assert_eq!(
            r.judge(&look(70_000, 30_000, 0), 20_000, t + ms(50)),
            Verdict::Wait(t + ms(60))
        );
        assert_eq!(r.unread, 70_000);
        // The reader drains: an update says so, and the frame goes.
        assert_eq!(r.judge(&look(70_000, 95_000, 0), 20_000, t + ms(90)), Verdict::Go);
        assert_eq!(r.unread, 0);
    }

    #[test]
    fn a_window_above_half_is_not_trusted() {
        let t = Instant::now();
        let mut r = Reader::default();
        r.judge(&look(0, 100_000, 0), 20_000, t);
        assert_eq!(r.judge(&look(40_000, 60_000, 0), 20_000, t + ms(10)), Verdict::Go);
        assert_eq!(r.unread, 0);
    }

    #[test]
    fn a_trusted_window_holds_only_what_reaches_the_room() {
        let t = Instant::now();
        let mut r = Reader::default();
        r.judge(&look(0, 100_000, 0), 60_000, t);
        assert_eq!(r.judge(&look(55_000, 45_000, 0), 60_000, t), Verdict::Go);
        let busy = Look { in_flight: 5_000, ..look(55_000, 45_000, 0) };
        assert_eq!(r.judge(&busy, 60_000, t), Verdict::Wait(t + TRUSTED_RETRY));
    }

    #[test]
    fn a_window_not_updated_for_a_second_lets_the_frame_go() {
        let t = Instant::now();
        let mut r = Reader::default();
        r.judge(&look(0, 100_000, 0), 20_000, t);
        assert!(matches!(r.judge(&look(90_000, 10_000, 999), 20_000, t), Verdict::Wait(_)));
        assert_eq!(r.judge(&look(90_000, 10_000, 1000), 20_000, t), Verdict::Go);
    }
}
