/*!
The frame splitter: cuts a byte stream of concatenated JPEGs into frames.

It is pure code, fed whatever each `read` returned, and it hands a frame on
the moment the frame's EOI byte has been fed, never waiting for the next SOI.

It walks JPEG markers instead of searching for `FF D9`, because `FF D9` also
ends the thumbnail that an EXIF APP1 segment may carry:

```text
  Seek ──FF D8──▶ Marker ──(length-prefixed segment)──▶ Length ─▶ Skip ─▶ Marker
                    │  ▲                                                   │
                    │  └────── any marker after the scan (DHT, SOS, …) ◀── │
                    │                                                      ▼
                    └─FF DA (SOS)─▶ Length ─▶ Skip ─▶ Entropy ──FF D9──▶ frame out
```

In the entropy-coded data `FF 00` (stuffing), `FF D0..D7` (restart markers)
and `FF FF` (fill) continue the scan; any other marker ends it, so the
several scans of a progressive JPEG work. A broken frame (a byte that cannot
be there) is dropped and the splitter resynchronises on the next SOI; a new
SOI inside a frame drops the broken part and starts the new frame. Nothing is
ever emitted that does not start with `FF D8` and end with `FF D9`.
*/

use memchr::memchr;

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const TEM: u8 = 0x01;

/// Where the splitter is in the stream. Variants after `Seek` are inside a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Outside a frame, looking for `FF`.
    Seek,
    /// Outside a frame, the last byte was `FF`: is this an SOI?
    SeekFf,
    /// Inside the header part of a frame, expecting the `FF` of a marker.
    Marker,
    /// Read `FF`, expecting the marker code (or more `FF` fill).
    MarkerCode,
    /// Expecting the high byte of a segment length.
    LengthHi { sos: bool },
    /// Expecting the low byte of a segment length.
    LengthLo { sos: bool, hi: u8 },
    /// Skipping `left` bytes of a segment body, then into the scan if `sos`.
    Skip { left: usize, sos: bool },
    /// In entropy-coded data, looking for `FF`.
    Entropy,
    /// In entropy-coded data, the last byte was `FF`.
    EntropyFf,
}

/// What the splitter threw away, for `/stats` and warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed on.
    pub frames: u64,
    /// Bytes outside any frame (headers of the camera program, garbage).
    pub garbage_bytes: u64,
    /// Frames dropped because their structure was broken or a new SOI cut them short.
    pub broken_frames: u64,
    /// Frames dropped because they were larger than the size cap.
    pub oversize_frames: u64,
}

/// What one call of [`Splitter::feed`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// How many bytes of the input were consumed; feed the rest again.
    pub consumed: usize,
    /// A complete frame, `FF D8 … FF D9`, if its EOI was among the consumed bytes.
    pub frame: Option<Vec<u8>>,
}

pub struct Splitter {
    state: State,
    /// The frame being assembled; it always starts with `FF D8` when not empty.
    buf: Vec<u8>,
    /// Set when the frame outgrew `max_frame`: parse on, but keep no bytes.
    discarding: bool,
    max_frame: usize,
    /// Capacity to give the next frame buffer, so that frames of a steady
    /// size are read without reallocation.
    last_len: usize,
    pub counters: Counters,
}

impl Splitter {
    /// A splitter that drops frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Splitter {
        Splitter {
            state: State::Seek,
            buf: Vec::new(),
            discarding: false,
            max_frame: max_frame.max(4),
            last_len: 0,
            counters: Counters::default(),
        }
    }

    /// True while a frame has started but its EOI has not arrived.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Seek | State::SeekFf)
    }

    /// Drops a frame cut short by the end of the input. Returns true if there was one.
    pub fn finish(&mut self) -> bool {
        let cut = self.in_frame();
        if cut {
            self.drop_frame(&[]);
        }
        self.state = State::Seek;
        cut
    }

    /// Consumes input up to and including the end of the first frame that
    /// completes in it, or all of it.
    pub fn feed(&mut self, input: &[u8]) -> Fed {
        // Bytes of `input` from `start` on belong to the current frame and are
        // appended in one piece when the frame ends or the input does.
        let mut start = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Seek => match memchr(0xFF, &input[i..]) {
                    Some(at) => {
                        self.counters.garbage_bytes += at as u64;
                        i += at + 1;
                        self.state = State::SeekFf;
                    }
                    None => {
                        self.counters.garbage_bytes += (input.len() - i) as u64;
                        i = input.len();
                    }
                },
                State::SeekFf => {
                    i += 1;
                    match b {
                        SOI => {
                            self.begin_frame(i, &mut start);
                            self.state = State::Marker;
                        }
                        0xFF => self.counters.garbage_bytes += 1,
                        _ => {
                            self.counters.garbage_bytes += 2;
                            self.state = State::Seek;
                        }
                    }
                }
                State::Marker => {
                    if b == 0xFF {
                        i += 1;
                        self.state = State::MarkerCode;
                    } else {
                        // Not a marker where one must be: the frame is broken.
                        self.drop_frame(&input[start..i]);
                        self.state = State::Seek;
                    }
                }
                State::MarkerCode | State::EntropyFf => {
                    let in_scan = self.state == State::EntropyFf;
                    i += 1;
                    match b {
                        0xFF => {}
                        0x00 | 0xD0..=0xD7 if in_scan => self.state = State::Entropy,
                        EOI => {
                            if let Some(frame) = self.end_frame(&input[start..i]) {
                                return Fed { consumed: i, frame: Some(frame) };
                            }
                            start = i;
                        }
                        SOI => {
                            // A new frame starts inside a broken one: keep the
                            // new one. The old one ends before the `D8`, so that
                            // its size is the same however the reads fell.
                            self.drop_frame(&input[start..i - 1]);
                            self.begin_frame(i, &mut start);
                            self.state = State::Marker;
                        }
                        TEM | 0xD0..=0xD7 => self.state = State::Marker,
                        0x00 => {
                            self.drop_frame(&input[start..i]);
                            self.state = State::Seek;
                        }
                        code => self.state = State::LengthHi { sos: code == SOS },
                    }
                }
                State::LengthHi { sos } => {
                    i += 1;
                    self.state = State::LengthLo { sos, hi: b };
                }
                State::LengthLo { sos, hi } => {
                    i += 1;
                    let length = usize::from(u16::from_be_bytes([hi, b]));
                    if length < 2 {
                        self.drop_frame(&input[start..i]);
                        self.state = State::Seek;
                    } else {
                        self.state = State::Skip { left: length - 2, sos };
                    }
                }
                State::Skip { left, sos } => {
                    let n = left.min(input.len() - i);
                    i += n;
                    self.state = match (left - n, sos) {
                        (0, true) => State::Entropy,
                        (0, false) => State::Marker,
                        (left, sos) => State::Skip { left, sos },
                    };
                }
                State::Entropy => match memchr(0xFF, &input[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.state = State::EntropyFf;
                    }
                    None => i = input.len(),
                },
            }
        }
        if self.in_frame() {
            self.append(&input[start..]);
        }
        Fed { consumed: input.len(), frame: None }
    }

    /// Starts a frame whose `D8` is the byte before `input[at]`.
    fn begin_frame(&mut self, at: usize, start: &mut usize) {
        self.buf = Vec::with_capacity(self.last_len.min(self.max_frame) + 4096);
        self.discarding = false;
        if at >= 2 {
            *start = at - 2;
        } else {
            // The FF arrived with the previous read.
            self.buf.push(0xFF);
            *start = at - 1;
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_frame {
            // Parse on to the frame's own EOI, so that the next frame is found
            // by structure and not by a stray FF D8 inside this one.
            self.discarding = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_frame(&mut self, tail: &[u8]) -> Option<Vec<u8>> {
        self.append(tail);
        self.state = State::Seek;
        if std::mem::take(&mut self.discarding) {
            self.counters.oversize_frames += 1;
            return None;
        }
        let frame = std::mem::take(&mut self.buf);
        self.last_len = frame.len();
        self.counters.frames += 1;
        Some(frame)
    }

    /// Drops the frame; `pending` are its bytes of the current read, which
    /// count toward its size: whether it was too big must not depend on
    /// where the reads fell.
    fn drop_frame(&mut self, pending: &[u8]) {
        self.append(pending);
        if self.discarding {
            self.counters.oversize_frames += 1;
        } else {
            self.counters.broken_frames += 1;
        }
        self.discarding = false;
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A baseline JPEG's structure: SOI, APP0, DQT, SOF0, DHT, SOS, entropy data, EOI.
    fn jpeg(entropy: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x07, b'J', b'F', b'I', b'F', 0]);
        v.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x04, 0xFF, 0xD9]); // table bytes that look like EOI
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x03, 0x08]);
        v.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x02]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend_from_slice(entropy);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn entropy(seed: u8) -> Vec<u8> {
        vec![seed, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0x00, seed]
    }

    fn split_all(s: &mut Splitter, mut input: &[u8], out: &mut Vec<Vec<u8>>) {
        while !input.is_empty() {
            let fed = s.feed(input);
            assert!(fed.consumed > 0 || fed.frame.is_some());
            out.extend(fed.frame);
            input = &input[fed.consumed..];
        }
    }

    fn split_pieces(pieces: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Counters) {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for piece in pieces {
            split_all(&mut s, piece, &mut out);
        }
        (out, s.counters)
    }

    fn split(input: &[u8]) -> Vec<Vec<u8>> {
        split_pieces(&[input], 1 << 20).0
    }

    /// The same stream in one piece, in every two-piece split and byte by
    /// byte must give the same frames and counters.
    fn assert_split_invariant(stream: &[u8], max: usize) -> (Vec<Vec<u8>>, Counters) {
        let whole = split_pieces(&[stream], max);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(split_pieces(&[a, b], max), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split_pieces(&bytes, max), whole, "byte by byte");
        for frame in &whole.0 {
            assert_eq!(&frame[..2], &[0xFF, 0xD8]);
            assert_eq!(&frame[frame.len() - 2..], &[0xFF, 0xD9]);
        }
        whole
    }

    #[test]
    fn two_frames_back_to_back() {
        let (a, b) = (jpeg(&entropy(1)), jpeg(&entropy(2)));
        let stream = [a.clone(), b.clone()].concat();
        let (frames, counters) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames, vec![a, b]);
        assert_eq!(counters.frames, 2);
        assert_eq!(counters.garbage_bytes, 0);
    }

    #[test]
    fn frame_is_handed_on_at_its_eoi_byte() {
        let a = jpeg(&entropy(1));
        let mut s = Splitter::new(1 << 20);
        assert_eq!(s.feed(&a[..a.len() - 1]).frame, None);
        let fed = s.feed(&a[a.len() - 1..]);
        assert_eq!(fed.frame, Some(a));
        assert!(!s.in_frame());
    }

    #[test]
    fn feed_stops_after_each_frame() {
        let (a, b) = (jpeg(&entropy(1)), jpeg(&entropy(2)));
        let stream = [a.clone(), b.clone()].concat();
        let mut s = Splitter::new(1 << 20);
        let fed = s.feed(&stream);
        assert_eq!(fed.consumed, a.len());
        assert_eq!(fed.frame, Some(a));
    }

    #[test]
    fn exif_thumbnail_does_not_end_the_frame() {
        let thumb = jpeg(&entropy(9));
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((thumb.len() + 8) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&thumb);
        let mut frame = vec![0xFF, 0xD8];
        frame.extend_from_slice(&app1);
        frame.extend_from_slice(&jpeg(&entropy(3))[2..]);
        let (frames, _) = assert_split_invariant(&frame, 1 << 20);
        assert_eq!(frames, vec![frame]);
    }

    #[test]
    fn progressive_scans_continue_the_frame() {
        let mut frame = jpeg(&entropy(1));
        frame.truncate(frame.len() - 2);
        frame.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x03, 0x00]);
        frame.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x02]);
        frame.extend_from_slice(&entropy(2));
        frame.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02]);
        frame.extend_from_slice(&entropy(3));
        frame.extend_from_slice(&[0xFF, 0xD9]);
        let (frames, _) = assert_split_invariant(&frame, 1 << 20);
        assert_eq!(frames, vec![frame]);
    }

    #[test]
    fn garbage_lone_ff_and_stray_eoi_are_skipped_and_counted() {
        let a = jpeg(&entropy(1));
        let b = jpeg(&entropy(2));
        let garbage: &[u8] = &[0x00, 0xFF, 0x12, 0xFF, 0xD9, 0xFF, 0xFF];
        let stream = [garbage, &a, garbage, &b, garbage].concat();
        let (frames, counters) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames, vec![a, b]);
        // The trailing FF is still pending as a possible SOI start.
        assert_eq!(counters.garbage_bytes, 3 * garbage.len() as u64 - 1);
        assert_eq!(counters.broken_frames, 0);
    }

    #[test]
    fn truncated_frame_followed_by_a_whole_one() {
        let a = jpeg(&entropy(1));
        let b = jpeg(&entropy(2));
        let stream = [&a[..a.len() - 5], &b[..]].concat();
        let (frames, counters) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames, vec![b]);
        assert_eq!(counters.broken_frames, 1);
    }

    #[test]
    fn truncated_in_the_header_followed_by_a_whole_one() {
        let a = jpeg(&entropy(1));
        let b = jpeg(&entropy(2));
        // Cut inside the APP0 segment: its length swallows part of `b`, then
        // the structure breaks and the splitter finds `b`'s successor only.
        let stream = [&a[..6], &b[..], &b[..]].concat();
        let (frames, _) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames.last(), Some(&b));
        assert!(frames.iter().all(|f| f == &b));
    }

    #[test]
    fn broken_marker_resyncs() {
        let a = jpeg(&entropy(1));
        let mut broken = a.clone();
        broken[2] = 0x00; // where APP0's FF should be
        let stream = [broken, a.clone()].concat();
        let (frames, counters) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames, vec![a]);
        assert_eq!(counters.broken_frames, 1);
    }

    #[test]
    fn frames_over_the_cap_are_dropped_and_the_next_one_passes() {
        let small = jpeg(&entropy(1));
        let big = jpeg(&[0x55; 200]);
        let stream = [&small[..], &big[..], &small[..]].concat();
        let (frames, counters) = assert_split_invariant(&stream, 100);
        assert_eq!(frames, vec![small.clone(), small]);
        assert_eq!(counters.oversize_frames, 1);
    }

    #[test]
    fn a_broken_frame_is_counted_the_same_however_the_reads_fell() {
        // APP0 with a length of 1: broken, and over a cap of 4 bytes.
        let (_, counters) =
            assert_split_invariant(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0xFF, 0xD9], 4);
        assert_eq!(counters.oversize_frames + counters.broken_frames, 1);
    }

    #[test]
    fn finish_drops_a_frame_in_flight() {
        let a = jpeg(&entropy(1));
        let mut s = Splitter::new(1 << 20);
        assert_eq!(s.feed(&a[..10]).frame, None);
        assert!(s.finish());
        assert_eq!(s.counters.broken_frames, 1);
        assert_eq!(split(&a), vec![a]);
    }

    #[test]
    fn split_invariant_on_a_rich_stream() {
        let a = jpeg(&entropy(1));
        // A frame cut inside its entropy data, then a new SOI.
        let stream = [&[0x01, 0xFF][..], &a, &a[..35], &[0xFF, 0xD8][..], &a[2..], &a].concat();
        let (frames, counters) = assert_split_invariant(&stream, 1 << 20);
        assert_eq!(frames, vec![a.clone(), a.clone(), a]);
        assert_eq!(counters.broken_frames, 1);
        assert_eq!(counters.garbage_bytes, 2);
    }
}
