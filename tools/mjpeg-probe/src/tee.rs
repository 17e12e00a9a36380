/*!
`mjpeg-probe tee LOG`: a pass-through for a camera's pipe that notes when
each frame left it.

It copies stdin to stdout unchanged and as soon as bytes arrive, but splits
its writes at each JPEG's EOI: just before the write that hands on a
frame's last byte it reads CLOCK_REALTIME, and after that write it appends
one line to LOG:

```text
UNIX_NS KEY LEN
```

`UNIX_NS` is that time in Unix nanoseconds, `KEY` the frame's content key
([`crate::jpeg::content_key`], 16 hex digits) and `LEN` its length in bytes.
Put in front of a server (`camera | mjpeg-probe tee LOG | server`), it marks
the moment a frame was complete in the server's pipe; `mjpeg-probe glass
--tee LOG` finds each received frame's line by its key, and the difference
is the server's share of the latency (its read, its work, its write and the
network), apart from everything before the pipe.

Bytes that are no JPEG pass through unlogged. The log is written line by
line without a buffer, so it is whole whenever the tee is stopped.
*/

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use memchr::memmem;

use crate::clock::realtime_ns;
use crate::{jpeg, Fatal};

/// A frame larger than this is dropped from the log (the bytes still pass):
/// it bounds the memory of a stream that never ends a frame.
const MAX_FRAME: usize = 64 << 20;

/// Cuts the frames out of a byte stream as it passes.
#[derive(Default)]
pub struct Splitter {
    /// The current frame from its SOI, while its EOI has not arrived.
    frame: Vec<u8>,
    /// The last chunk, outside a frame, ended with `FF`: perhaps half an SOI.
    pending_ff: bool,
}

/// A frame's end found in a chunk.
#[derive(Debug, PartialEq, Eq)]
pub struct End {
    /// Offset in the chunk just past the EOI.
    pub at: usize,
    pub key: u64,
    pub len: usize,
}

impl Splitter {
    /// The first frame end in `chunk[from..]`, fed after the chunks before
    /// it; `None` once the chunk is used up. Call again with `from` = the
    /// returned end until `None`.
    pub fn next_end(&mut self, chunk: &[u8], mut from: usize) -> Option<End> {
        while from < chunk.len() {
            if self.frame.is_empty() {
                if std::mem::take(&mut self.pending_ff) && from == 0 && chunk[0] == 0xD8 {
                    self.frame.push(0xFF);
                } else if let Some(soi) = memmem::find(&chunk[from..], &[0xFF, 0xD8]) {
                    from += soi;
                } else {
                    self.pending_ff = chunk.last() == Some(&0xFF);
                    return None;
                }
            }
            let before = self.frame.len();
            self.frame.extend_from_slice(&chunk[from..]);
            match jpeg::frame_len(&self.frame) {
                Ok(len) => {
                    let end = End {
                        at: from + (len - before),
                        key: jpeg::content_key(&self.frame[..len]),
                        len,
                    };
                    self.frame.clear();
                    return Some(end);
                }
                Err(jpeg::Error::Truncated) if self.frame.len() <= MAX_FRAME => return None,
                Err(_) => {
                    // Not a frame after all: look again after its SOI.
                    let skip = 2usize.saturating_sub(before);
                    self.frame.clear();
                    from += skip;
                }
            }
        }
        None
    }
}

fn write_all(out: &mut File, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)
}

pub fn run(log_path: &Path) -> Result<(), Fatal> {
    let name = log_path.display();
    let mut log = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(log_path)
        .map_err(|e| Fatal::usage(format!("{name}: {e}")))?;
    let dup = |fd: io::Result<std::os::fd::OwnedFd>, what: &str| {
        fd.map(File::from).map_err(|e| Fatal::usage(format!("{what}: {e}")))
    };
    // Plain files on fds 0 and 1: no buffering, no line splitting.
    let mut input = dup(io::stdin().as_fd().try_clone_to_owned(), "stdin")?;
    let mut output = dup(io::stdout().as_fd().try_clone_to_owned(), "stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut splitter = Splitter::default();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fatal::runtime(format!("stdin: {e}"))),
        };
        let chunk = &buf[..n];
        let mut written = 0;
        let mut from = 0;
        while let Some(end) = splitter.next_end(chunk, from) {
            let t = realtime_ns();
            if let Err(e) = write_all(&mut output, &chunk[written..end.at]) {
                return gone(e);
            }
            written = end.at;
            from = end.at;
            let line = format!("{t} {:016x} {}\n", end.key, end.len);
            log.write_all(line.as_bytes()).map_err(|e| Fatal::runtime(format!("{name}: {e}")))?;
        }
        if let Err(e) = write_all(&mut output, &chunk[written..]) {
            return gone(e);
        }
    }
}

/// The reader went away: the end of the tee, not an error.
fn gone(e: io::Error) -> Result<(), Fatal> {
    if e.kind() == ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Fatal::runtime(format!("stdout: {e}")))
    }
}

/// One line of a tee log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub unix_ns: u64,
    pub key: u64,
}

/// The lines of a tee log; malformed ones (a line cut by a kill) are skipped.
pub fn parse_log(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let unix_ns = fields.next()?.parse().ok()?;
            let key = u64::from_str_radix(fields.next()?, 16).ok()?;
            fields.next()?.parse::<usize>().ok()?;
            Some(Entry { unix_ns, key })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jpeg::tests::sample;

    fn ends(chunks: &[&[u8]]) -> Vec<(usize, usize, usize)> {
        let mut splitter = Splitter::default();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut from = 0;
            while let Some(end) = splitter.next_end(chunk, from) {
                assert_eq!(end.key, jpeg::content_key(&sample()));
                out.push((i, end.at, end.len));
                from = end.at;
            }
        }
        out
    }

    #[test]
    fn frames_end_where_their_eoi_is_in_any_chunking() {
        let one = sample();
        let n = one.len();
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(ends(&[&two]), vec![(0, n, n), (0, 2 * n, n)]);
        // Split inside the second frame, and junk in front.
        let junk = [b"xx".as_slice(), &two[..n + 5]].concat();
        assert_eq!(ends(&[&junk, &two[n + 5..]]), vec![(0, n + 2, n), (1, n - 5, n)]);
        // One byte at a time.
        let bytes: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(ends(&bytes), vec![(n - 1, 1, n), (2 * n - 1, 1, n)]);
    }

    #[test]
    fn a_broken_frame_is_skipped_and_the_next_one_found() {
        let one = sample();
        let broken = [&one[..10], &[0xFF, 0x02], &one[..]].concat();
        let n = one.len();
        assert_eq!(ends(&[&broken]), vec![(0, broken.len(), n)]);
    }

    #[test]
    fn log_lines_parse_and_cut_ones_are_skipped() {
        let text = "1700000000000000000 00000000000000ff 123\n17 zz 1\n1700000000000000001 0a";
        assert_eq!(parse_log(text), vec![Entry { unix_ns: 1_700_000_000_000_000_000, key: 255 }]);
    }
}
