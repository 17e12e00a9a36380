//! Fuzzes the JPEG frame splitter.
//!
//! Input layout:
//!
//! ```text
//! byte 0..2   cap, little-endian u16: bit 15 set means 1 MiB (no practical
//!             cap), else the low 15 bits are `max_frame` (0..=32767; the
//!             splitter raises anything below 4 to 4)
//! byte 2      chunk pattern length n = (byte & 7) + 1
//! byte 3..3+n chunk sizes, each byte + 1 (1..=256), used in turn
//! the rest    the byte stream
//! ```
//!
//! Missing header bytes read as 0. The stream is split whole, in the
//! chunks of the pattern, and byte by byte, and every way must give the
//! same frames at the same stream offsets, the same counters, the same
//! in-frame state at the end and the same result from `finish`.
//! Every frame must start `FF D8`, end `FF D9`, be no longer than the cap,
//! and be exactly the stream bytes just before the point where `feed`
//! stopped consuming; every `feed` must make progress.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raspivid_mjpeg_server::splitter::{Counters, Splitter};

/// Byte by byte only up to this length, to keep the executions fast.
const BYTEWISE_MAX: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Each frame and the stream offset just past its last byte.
    frames: Vec<(usize, Vec<u8>)>,
    counters: Counters,
    in_frame_at_end: bool,
    finish_cut: bool,
    counters_after_finish: Counters,
}

fn run(stream: &[u8], cap: usize, chunks: &mut dyn Iterator<Item = usize>) -> Outcome {
    let mut s = Splitter::new(cap);
    let limit = cap.max(4);
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let len = chunks.next().unwrap().clamp(1, stream.len() - pos);
        let mut piece = &stream[pos..pos + len];
        while !piece.is_empty() {
            let fed = s.feed(piece);
            assert!(fed.consumed > 0 || fed.frame.is_some(), "no progress");
            assert!(fed.consumed <= piece.len(), "consumed past the input");
            pos += fed.consumed;
            piece = &piece[fed.consumed..];
            if let Some(frame) = fed.frame {
                assert!(frame.len() >= 4, "frame of {} bytes", frame.len());
                assert_eq!(&frame[..2], &[0xFF, 0xD8], "frame does not start with SOI");
                assert_eq!(&frame[frame.len() - 2..], &[0xFF, 0xD9], "frame does not end with EOI");
                assert!(
                    frame.len() <= limit,
                    "frame of {} bytes over the cap {limit}",
                    frame.len()
                );
                assert!(frame.len() <= pos, "frame longer than the stream so far");
                assert_eq!(
                    &stream[pos - frame.len()..pos],
                    &frame[..],
                    "frame is not the bytes just consumed"
                );
                if let Some((end, _)) = frames.last() {
                    assert!(pos - frame.len() >= *end, "frames overlap");
                }
                assert!(!s.in_frame(), "still in a frame after handing one on");
                frames.push((pos, frame));
            }
        }
    }
    let counters = s.counters;
    assert_eq!(counters.frames, frames.len() as u64);
    let framed: usize = frames.iter().map(|(_, f)| f.len()).sum();
    assert!(
        counters.garbage_bytes + framed as u64 <= stream.len() as u64,
        "garbage {} + framed {framed} > stream {}",
        counters.garbage_bytes,
        stream.len()
    );
    if limit >= stream.len() {
        assert_eq!(
            counters.oversize_frames, 0,
            "oversize frame under a cap above the stream length"
        );
    }
    let in_frame_at_end = s.in_frame();
    let finish_cut = s.finish();
    assert_eq!(finish_cut, in_frame_at_end);
    assert!(!s.in_frame());
    let counters_after_finish = s.counters;
    assert_eq!(
        counters_after_finish.broken_frames + counters_after_finish.oversize_frames,
        counters.broken_frames + counters.oversize_frames + u64::from(finish_cut)
    );
    // A second finish is a no-op.
    assert!(!s.finish());
    assert_eq!(s.counters, counters_after_finish);
    Outcome { frames, counters, in_frame_at_end, finish_cut, counters_after_finish }
}

fuzz_target!(|data: &[u8]| {
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    let c = u16::from_le_bytes([at(0), at(1)]);
    let cap = if c & 0x8000 != 0 { 1 << 20 } else { usize::from(c & 0x7FFF) };
    let n = usize::from(at(2) & 7) + 1;
    let pattern: Vec<usize> = (0..n).map(|i| usize::from(at(3 + i)) + 1).collect();
    let stream = data.get(3 + n..).unwrap_or(&[]);

    let whole = run(stream, cap, &mut std::iter::repeat(usize::MAX));
    let chunked = run(stream, cap, &mut pattern.iter().copied().cycle());
    assert_eq!(chunked, whole, "chunks {pattern:?} differ from one piece");
    if stream.len() <= BYTEWISE_MAX {
        let bytewise = run(stream, cap, &mut std::iter::repeat(1));
        assert_eq!(bytewise, whole, "byte by byte differs from one piece");
    }
});
