/*!
JPEG structure and the probe tag: pure code, no I/O.

[`frame_len`] walks the markers of one JPEG the way a decoder does:
length-prefixed segments are skipped by their length, and in entropy-coded
data `FF 00` (stuffing), `FF D0..D7` (restart markers) and `FF FF` (fill)
continue the scan while any other marker ends it, so the several scans of a
progressive JPEG work and an `FF D9` inside an EXIF thumbnail is not taken for
the end of the frame.

The tag is a COM segment right after SOI:

```text
FF FE | 00 1D | "mjpeg-probe" | seq: u64 BE | sent: u64 BE (CLOCK_MONOTONIC ns)
```

A COM segment is ignored by every decoder, so a tagged frame stays a valid
JPEG that any server can carry unchanged.
*/

use std::fmt;

use memchr::memchr;

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const COM: u8 = 0xFE;
const TEM: u8 = 0x01;

/// Identifies our COM segment among any others an encoder wrote.
pub const MAGIC: &[u8; 11] = b"mjpeg-probe";

/// Magic, sequence number and timestamp.
const PAYLOAD_LEN: usize = MAGIC.len() + 8 + 8;

/// The whole COM segment: marker, length field, payload.
pub const TAG_LEN: usize = 2 + 2 + PAYLOAD_LEN;

/// Where the sequence number and timestamp sit in a tagged frame.
const SEQ_AT: usize = 2 + 4 + MAGIC.len();
const SENT_AT: usize = SEQ_AT + 8;

/// Why a byte string is not one well-formed JPEG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// It does not start with `FF D8`.
    NoSoi,
    /// It ended inside a segment or a scan.
    Truncated,
    /// A marker was due at this offset, but the byte is not `FF`.
    NotAMarker { at: usize },
    /// A marker that cannot appear here (a second SOI, a reserved code, a
    /// restart marker outside a scan).
    BadMarker { at: usize, code: u8 },
    /// A segment length below 2, which would not even cover the length field.
    BadLength { at: usize },
    /// EOI before any scan: there is no image.
    NoScan,
    /// Bytes follow the EOI.
    Trailing { len: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Error::NoSoi => write!(f, "does not start with FF D8"),
            Error::Truncated => write!(f, "ends before its EOI"),
            Error::NotAMarker { at } => write!(f, "byte {at}: expected a marker"),
            Error::BadMarker { at, code } => {
                write!(f, "byte {at}: marker FF {code:02X} cannot be here")
            }
            Error::BadLength { at } => write!(f, "byte {at}: segment length below 2"),
            Error::NoScan => write!(f, "EOI before any scan"),
            Error::Trailing { len } => write!(f, "bytes after the EOI at byte {}", len - 2),
        }
    }
}

/// Reads the marker whose `FF` is due at `at`, skipping `FF` fill bytes.
/// Returns the marker code and the offset just past it.
fn marker(data: &[u8], at: usize) -> Result<(u8, usize), Error> {
    match data.get(at) {
        None => return Err(Error::Truncated),
        Some(&0xFF) => {}
        Some(_) => return Err(Error::NotAMarker { at }),
    }
    let mut i = at + 1;
    loop {
        match data.get(i) {
            None => return Err(Error::Truncated),
            Some(&0xFF) => i += 1,
            Some(&code) => return Ok((code, i + 1)),
        }
    }
}

/// The length field of the segment whose marker ends just before `at`.
fn segment_len(data: &[u8], at: usize) -> Result<usize, Error> {
    let Some(&[hi, lo]) = data.get(at..at + 2) else {
        return Err(Error::Truncated);
    };
    match usize::from(u16::from_be_bytes([hi, lo])) {
        len if len < 2 => Err(Error::BadLength { at }),
        len => Ok(len),
    }
}

/// Scans entropy-coded data from `at` to the marker that ends it. Returns
/// that marker's code and the offset just past it.
fn scan(data: &[u8], mut at: usize) -> Result<(u8, usize), Error> {
    loop {
        let ff = at + memchr(0xFF, &data[at..]).ok_or(Error::Truncated)?;
        let (code, next) = marker(data, ff)?;
        match code {
            0x00 | 0xD0..=0xD7 => at = next,
            _ => return Ok((code, next)),
        }
    }
}

/// Walks one JPEG at the start of `data` and returns its length, up to and
/// including its EOI. Whatever follows the EOI is not looked at.
pub fn frame_len(data: &[u8]) -> Result<usize, Error> {
    if !data.starts_with(&[0xFF, SOI]) {
        return Err(Error::NoSoi);
    }
    let mut scanned = false;
    let mut at = 2;
    let (mut code, mut next) = marker(data, at)?;
    loop {
        match code {
            EOI if scanned => return Ok(next),
            EOI => return Err(Error::NoScan),
            TEM => {}
            SOI | 0x02..=0xBF | 0xD0..=0xD7 => return Err(Error::BadMarker { at, code }),
            _ => {
                let len = segment_len(data, next)?;
                let end = next.checked_add(len).filter(|&end| end <= data.len());
                next = end.ok_or(Error::Truncated)?;
                if code == SOS {
                    scanned = true;
                    (code, next) = scan(data, next)?;
                    // The marker that ended the scan starts two bytes back,
                    // fill bytes aside, which only matters for error offsets.
                    at = next - 2;
                    continue;
                }
            }
        }
        at = next;
        (code, next) = marker(data, at)?;
    }
}

/// Checks that `frame` is exactly one well-formed JPEG: SOI, segments, at
/// least one scan, EOI, nothing after.
pub fn check(frame: &[u8]) -> Result<(), Error> {
    let len = frame_len(frame)?;
    if len == frame.len() {
        Ok(())
    } else {
        Err(Error::Trailing { len })
    }
}

/// A copy of `frame` with a zeroed tag right after its SOI, for [`stamp`].
/// `frame` must start with SOI.
pub fn with_tag(frame: &[u8]) -> Vec<u8> {
    debug_assert!(frame.starts_with(&[0xFF, SOI]));
    let mut out = Vec::with_capacity(frame.len() + TAG_LEN);
    out.extend_from_slice(&frame[..2]);
    out.extend_from_slice(&[0xFF, COM]);
    out.extend_from_slice(&(2 + PAYLOAD_LEN as u16).to_be_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&frame[2..]);
    out
}

/// Writes the sequence number and send time into a frame made by [`with_tag`].
pub fn stamp(tagged: &mut [u8], seq: u64, sent_ns: u64) {
    tagged[SEQ_AT..SENT_AT].copy_from_slice(&seq.to_be_bytes());
    tagged[SENT_AT..SENT_AT + 8].copy_from_slice(&sent_ns.to_be_bytes());
}

/// What the source wrote into a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds just before the frame was written.
    pub sent_ns: u64,
}

/// Finds the probe tag among the segments before the first scan. A server
/// may have rewritten the headers, so the tag is looked for, not assumed
/// to be right after SOI.
pub fn read_tag(frame: &[u8]) -> Option<Tag> {
    if !frame.starts_with(&[0xFF, SOI]) {
        return None;
    }
    let mut at = 2;
    loop {
        let (code, next) = marker(frame, at).ok()?;
        match code {
            TEM | 0xD0..=0xD7 => at = next,
            SOI | EOI | SOS => return None,
            _ => {
                let len = segment_len(frame, next).ok()?;
                let body = frame.get(next + 2..next + len)?;
                if code == COM && body.len() == PAYLOAD_LEN && body.starts_with(MAGIC) {
                    let number =
                        |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().unwrap());
                    return Some(Tag {
                        seq: number(MAGIC.len()),
                        sent_ns: number(MAGIC.len() + 8),
                    });
                }
                at = next + len;
            }
        }
    }
}

/// Where the first scan's SOS marker starts, found by walking the segments
/// before it; `None` if the walk fails.
pub fn scan_start(frame: &[u8]) -> Option<usize> {
    if !frame.starts_with(&[0xFF, SOI]) {
        return None;
    }
    let mut at = 2;
    loop {
        let (code, next) = marker(frame, at).ok()?;
        match code {
            SOS => return Some(at),
            TEM | 0xD0..=0xD7 => at = next,
            SOI | EOI => return None,
            _ => at = next + segment_len(frame, next).ok()?,
        }
    }
}

/// A 64-bit key of a frame's picture, to match the same frame at two points
/// of its way (`mjpeg-probe tee` in front of a server, `glass` behind it):
/// FNV-1a over everything from the first SOS on, so a server that rewrites
/// or adds header segments still yields the same key.
pub fn content_key(frame: &[u8]) -> u64 {
    let from = scan_start(frame).unwrap_or(0);
    frame[from..].iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A small JPEG with the segments a camera writes: APP0, DQT, SOF0,
    /// DHT, SOS, entropy data with stuffing, a restart marker and fill
    /// bytes, EOI. Decoders would reject its tables; the walk does not care.
    pub fn sample() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F']);
        v.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x04, 0x00, 0x01]);
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x05, 0x08, 0x00, 0x10]);
        v.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x03, 0x00]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0x00, 0x78]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    #[test]
    fn the_content_key_ignores_header_segments_but_not_the_picture() {
        let jpeg = sample();
        let sos = scan_start(&jpeg).unwrap();
        assert_eq!(&jpeg[sos..sos + 2], &[0xFF, 0xDA]);
        let key = content_key(&jpeg);
        // A comment or a tag added in front: the same key.
        assert_eq!(content_key(&with_tag(&jpeg)), key);
        let mut other = jpeg.clone();
        other[sos + 5] ^= 1;
        assert_ne!(content_key(&other), key);
        assert_eq!(scan_start(b"not a jpeg"), None);
    }

    #[test]
    fn a_well_formed_frame_passes() {
        let jpeg = sample();
        assert_eq!(frame_len(&jpeg), Ok(jpeg.len()));
        assert_eq!(check(&jpeg), Ok(()));
    }

    #[test]
    fn ff_d9_inside_a_segment_does_not_end_the_frame() {
        let mut jpeg = sample();
        // An APP1 segment whose body holds a thumbnail's SOI and EOI.
        jpeg.splice(2..2, [0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD8, 0xFF, 0xD9]);
        assert_eq!(check(&jpeg), Ok(()));
    }

    #[test]
    fn progressive_scans_continue_after_a_marker() {
        let mut jpeg = sample();
        let eoi = jpeg.len() - 2;
        jpeg.splice(eoi..eoi, [0xFF, 0xC4, 0x00, 0x03, 0x00, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x9A]);
        assert_eq!(check(&jpeg), Ok(()));
    }

    #[test]
    fn frames_back_to_back_are_walked_one_at_a_time() {
        let mut two = sample();
        two.extend_from_slice(&sample());
        assert_eq!(frame_len(&two), Ok(sample().len()));
        assert_eq!(check(&two), Err(Error::Trailing { len: sample().len() }));
    }

    #[test]
    fn broken_frames_are_named() {
        let jpeg = sample();
        assert_eq!(check(&jpeg[1..]), Err(Error::NoSoi));
        for cut in 2..jpeg.len() {
            assert_eq!(check(&jpeg[..cut]), Err(Error::Truncated), "cut at {cut}");
        }
        let mut soi_in_scan = jpeg.clone();
        let at = soi_in_scan.len() - 3;
        soi_in_scan[at] = 0xFF;
        soi_in_scan.insert(at + 1, 0xD8);
        assert_eq!(check(&soi_in_scan), Err(Error::BadMarker { at, code: 0xD8 }));
        let mut reserved_in_scan = jpeg.clone();
        reserved_in_scan[at] = 0xFF;
        reserved_in_scan.insert(at + 1, 0x02);
        assert_eq!(check(&reserved_in_scan), Err(Error::BadMarker { at, code: 0x02 }));
        let mut no_marker = jpeg.clone();
        no_marker[2] = 0x00;
        assert_eq!(check(&no_marker), Err(Error::NotAMarker { at: 2 }));
        let mut short = jpeg.clone();
        short[5] = 0x01;
        assert_eq!(check(&short), Err(Error::BadLength { at: 4 }));
        assert_eq!(check(&[0xFF, 0xD8, 0xFF, 0xD9]), Err(Error::NoScan));
    }

    #[test]
    fn tag_is_inserted_stamped_and_read_back() {
        let jpeg = sample();
        let mut tagged = with_tag(&jpeg);
        assert_eq!(tagged.len(), jpeg.len() + TAG_LEN);
        assert_eq!(TAG_LEN, 31);
        assert_eq!(&tagged[2..6], &[0xFF, 0xFE, 0x00, 29]);
        assert_eq!(&tagged[6..17], b"mjpeg-probe");
        assert_eq!(&tagged[TAG_LEN + 2..], &jpeg[2..]);
        stamp(&mut tagged, 0x0102_0304_0506_0708, 42);
        assert_eq!(&tagged[17..25], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&tagged[25..33], &[0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(check(&tagged), Ok(()));
        assert_eq!(read_tag(&tagged), Some(Tag { seq: 0x0102_0304_0506_0708, sent_ns: 42 }));
    }

    #[test]
    fn tag_is_found_after_other_segments_and_only_before_the_scan() {
        let mut tagged = with_tag(&sample());
        stamp(&mut tagged, 7, 9);
        // A server that puts its own APP0 first.
        tagged.splice(2..2, [0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00]);
        assert_eq!(read_tag(&tagged), Some(Tag { seq: 7, sent_ns: 9 }));

        assert_eq!(read_tag(&sample()), None);
        // Another COM segment, or one of the wrong length, is not the tag.
        let mut other = sample();
        other.splice(2..2, [0xFF, 0xFE, 0x00, 0x0D]);
        other.splice(6..6, *b"mjpeg-probe");
        assert_eq!(read_tag(&other), None);
        // A tag cut short by the end of the data is not read.
        assert_eq!(read_tag(&with_tag(&sample())[..20]), None);
    }
}
