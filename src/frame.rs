/*!
A frame as it goes out: one shared buffer per frame, never a copy per client.

The part header, the JPEG and the trailer are built once when the frame is
cut; every streaming client holds an `Rc<Frame>` and an offset, and writes
the three pieces with one `writev`.
*/

use crate::http::{push_part_headers, Framing, BOUNDARY};
use std::borrow::Cow;
use std::io::IoSlice;
use std::time::Instant;

pub struct Frame {
    /// Counts frames from 1, so that clients can tell how many they skipped.
    pub seq: u64,
    /// When the `read` that completed this frame returned.
    pub read_at: Instant,
    /// For a notice made while the source had no frames, its
    /// `X-Source-State` (`starting`, `offline`); None for the source's own.
    pub notice: Option<&'static str>,
    /// The part's header block with `Content-Length` ([`Framing::Length`]).
    head: Vec<u8>,
    pub jpeg: Vec<u8>,
    /// `CRLF --B CRLF` then the next part's headers for
    /// [`Framing::AdvanceHeaders`]; [`Framing::Length`] sends only the
    /// delimiter, which is this trailer's first `delimiter_len` bytes.
    tail: Vec<u8>,
    delimiter_len: usize,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Frame {{ seq: {}, {} bytes }}", self.seq, self.jpeg.len())
    }
}

impl Frame {
    /// `extra` is header lines every part carries (CORS, for browsers that
    /// check each part of a cross-origin stream).
    pub fn new(seq: u64, jpeg: Vec<u8>, read_at: Instant, unix_micros: u64, extra: &str) -> Frame {
        Frame::made(seq, jpeg, read_at, unix_micros, extra, None)
    }

    /// A notice made while the source has no frames: its part header says
    /// `X-Source-State: state` (where the framing puts headers before the
    /// JPEG), and it is never a latency sample.
    pub fn notice(
        seq: u64,
        jpeg: Vec<u8>,
        unix_micros: u64,
        extra: &str,
        state: &'static str,
    ) -> Frame {
        Frame::made(seq, jpeg, Instant::now(), unix_micros, extra, Some(state))
    }

    fn made(
        seq: u64,
        jpeg: Vec<u8>,
        read_at: Instant,
        unix_micros: u64,
        extra: &str,
        state: Option<&'static str>,
    ) -> Frame {
        let mut head = String::with_capacity(128);
        let head_extra: Cow<str> = match state {
            Some(state) => format!("{extra}X-Source-State: {state}\r\n").into(),
            None => extra.into(),
        };
        push_part_headers(&mut head, Some(jpeg.len()), unix_micros, &head_extra);
        let mut tail = format!("\r\n--{BOUNDARY}\r\n");
        let delimiter_len = tail.len();
        push_part_headers(&mut tail, None, unix_micros, extra);
        Frame {
            seq,
            read_at,
            notice: state,
            head: head.into_bytes(),
            jpeg,
            tail: tail.into_bytes(),
            delimiter_len,
        }
    }

    /// The source's own frame: a latency sample and a fresh snapshot.
    pub fn live(&self) -> bool {
        self.notice.is_none()
    }

    /// The pieces a client with `framing` sends, in order.
    pub fn pieces(&self, framing: Framing) -> [&[u8]; 3] {
        match framing {
            Framing::Length => [&self.head, &self.jpeg, &self.tail[..self.delimiter_len]],
            Framing::AdvanceHeaders => [&[], &self.jpeg, &self.tail],
        }
    }
}

/// Fills `out` with the parts of `pieces` that come after the first `skip`
/// bytes, and returns how many slices it used.
pub fn io_slices<'a>(pieces: &[&'a [u8]], mut skip: usize, out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for piece in pieces {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        if n == out.len() {
            break;
        }
        out[n] = IoSlice::new(&piece[skip..]);
        skip = 0;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(frame: &Frame, framing: Framing) -> Vec<u8> {
        frame.pieces(framing).concat()
    }

    #[test]
    fn length_framing_is_exact() {
        let frame = Frame::new(1, vec![0xFF, 0xD8, 0xFF, 0xD9], Instant::now(), 2_000_001, "");
        let expected = format!(
            "Content-Type: image/jpeg\r\nContent-Length: 4\r\nX-Timestamp: 2.000001\r\n\r\n\
             \u{1}\r\n--{BOUNDARY}\r\n"
        );
        let mut bytes = concat(&frame, Framing::Length);
        let jpeg_at = bytes.len() - 4 - 4 - BOUNDARY.len() - 2;
        assert_eq!(&bytes[jpeg_at..jpeg_at + 4], &[0xFF, 0xD8, 0xFF, 0xD9]);
        bytes.splice(jpeg_at..jpeg_at + 4, [1]);
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        assert_eq!(concat(&frame, Framing::Length).len(), expected.len() + 3);
    }

    #[test]
    fn advance_framing_ends_with_the_next_parts_headers() {
        let frame = Frame::new(1, vec![0xFF, 0xD8, 0xFF, 0xD9], Instant::now(), 3_000_000, "");
        let bytes = concat(&frame, Framing::AdvanceHeaders);
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xD9]);
        let tail = String::from_utf8(bytes[4..].to_vec()).unwrap();
        assert_eq!(
            tail,
            format!(
                "\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nX-Timestamp: 3.000000\r\n\r\n"
            )
        );
    }

    #[test]
    fn io_slices_skip_what_was_sent() {
        let pieces: [&[u8]; 3] = [b"ab", b"cde", b"f"];
        let mut out = [IoSlice::new(&[]); 3];
        for skip in 0..=6 {
            let n = io_slices(&pieces, skip, &mut out);
            let joined: Vec<u8> = out[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(joined, b"abcdef"[skip..].to_vec(), "skip {skip}");
        }
        assert_eq!(io_slices(&[b"", b"x", b""], 0, &mut out), 1);
    }
}
