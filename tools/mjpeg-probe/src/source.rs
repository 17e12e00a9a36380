/*!
`mjpeg-probe source`: plays an MJPEG file to stdout as a camera would, each
frame tagged with its sequence number and the time it was written.
*/

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::clock::{now_ns, sleep_until};
use crate::{jpeg, Fatal};

/// The whole file is held in memory (twice, while the tags are added); this
/// keeps a mistaken path from eating the machine.
const MAX_FILE: u64 = 1 << 30;

pub struct Options {
    pub file: PathBuf,
    pub fps: f64,
    /// Stop after this long; `None` plays forever.
    pub seconds: Option<f64>,
    /// Write each frame in pieces of at most this many bytes.
    pub chunk: Option<usize>,
}

/// Splits concatenated JPEGs into frames, each with a tag slot after its SOI.
fn load(path: &PathBuf) -> Result<Vec<Vec<u8>>, Fatal> {
    let name = path.display();
    let open = |e: io::Error| Fatal::usage(format!("{name}: {e}"));
    let size = std::fs::metadata(path).map_err(open)?.len();
    if size > MAX_FILE {
        return Err(Fatal::usage(format!("{name}: larger than {MAX_FILE} bytes")));
    }
    let data = std::fs::read(path).map_err(open)?;
    let mut frames = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = jpeg::frame_len(&data[at..]).map_err(|e| {
            Fatal::usage(format!("{name}: frame {} at byte {at}: {e}", frames.len()))
        })?;
        frames.push(jpeg::with_tag(&data[at..at + len]));
        at += len;
    }
    if frames.is_empty() {
        return Err(Fatal::usage(format!("{name}: no frames")));
    }
    Ok(frames)
}

pub fn run(options: &Options) -> Result<(), Fatal> {
    let mut frames = load(&options.file)?;
    // A plain file on fd 1: `io::Stdout` is line-buffered and would split
    // frames at every 0x0A byte.
    let fd = io::stdout().as_fd().try_clone_to_owned();
    let mut out = File::from(fd.map_err(|e| Fatal::usage(format!("stdout: {e}")))?);
    let chunk = options.chunk.unwrap_or(usize::MAX);

    let period_ns = 1e9 / options.fps;
    let start = now_ns();
    let end = options.seconds.map(|s| start + (s * 1e9) as u64);
    let deadline = |slot: u64| start + (slot as f64 * period_ns) as u64;
    let mut slot = 0;
    for seq in 0.. {
        let due = deadline(slot);
        if end.is_some_and(|end| due >= end) {
            break;
        }
        sleep_until(due);
        let count = frames.len() as u64;
        let frame = &mut frames[(seq % count) as usize];
        jpeg::stamp(frame, seq, now_ns());
        for piece in frame.chunks(chunk) {
            match out.write_all(piece) {
                Ok(()) => {}
                // The reader is gone: the stream is over, which is no error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(Fatal::runtime(format!("stdout: {e}"))),
            }
        }
        // A sensor does not wait for a slow reader: slots missed while a
        // write blocked are skipped, not made up in a burst.
        slot = (slot + 1).max(((now_ns() - start) as f64 / period_ns) as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::tests::sample;

    fn load_bytes(name: &str, data: &[u8]) -> Result<Vec<Vec<u8>>, Fatal> {
        let path = std::env::temp_dir().join(format!("mjpeg-probe-{}-{name}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let frames = load(&path);
        std::fs::remove_file(&path).unwrap();
        frames
    }

    #[test]
    fn a_file_is_split_into_tagged_frames() {
        let mut tail = sample();
        tail.splice(2..2, [0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9]); // EOI inside a segment
        let frames = load_bytes("two", &[sample(), tail.clone()].concat()).unwrap();
        assert_eq!(frames, vec![jpeg::with_tag(&sample()), jpeg::with_tag(&tail)]);
    }

    #[test]
    fn a_broken_file_is_refused_with_the_place() {
        let data = [sample(), b"junk".to_vec()].concat();
        let error = load_bytes("junk", &data).unwrap_err();
        assert_eq!(error.code, 2);
        assert!(error
            .message
            .ends_with(&format!("frame 1 at byte {}: does not start with FF D8", sample().len())));
        assert!(load_bytes("empty", b"").unwrap_err().message.ends_with("no frames"));
    }
}
