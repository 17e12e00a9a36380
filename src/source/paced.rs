/*!
A regular file, which epoll refuses: read on a timer at `--fps`, fed to the
splitter until one frame comes out, and rewound at its end when looped.
*/

use super::{read_buf, read_error, Feed, Sink, Turn};
use crate::input;
use mio::Registry;
use std::fs::File;
use std::io::{self, Seek};
use std::time::{Duration, Instant};

/// Reads of a paced file per interval: a file with no frame in it must not
/// hold the loop.
const PACED_READS: usize = 64;

pub struct Paced {
    file: File,
    interval: Duration,
    looped: bool,
    /// The next frame is due then; None before the first.
    next: Option<Instant>,
    /// Bytes read and not yet fed, `buf[at..len]`: a turn stops at a frame.
    buf: Box<[u8]>,
    at: usize,
    len: usize,
    /// Bytes given since the file was last rewound.
    pass: u64,
}

impl Paced {
    /// `file` at one frame per `interval`, rewound at its end if `looped`.
    pub fn new(file: File, interval: Duration, looped: bool) -> Paced {
        Paced { file, interval, looped, next: None, buf: read_buf(), at: 0, len: 0, pass: 0 }
    }
}

impl Feed for Paced {
    fn stop(&mut self, _registry: &Registry) {}

    fn deadline(&self, now: Instant) -> Option<Instant> {
        Some(self.next.unwrap_or(now))
    }

    /// Feeds the file until one frame comes out, once per interval.
    fn read(&mut self, now: Instant, _registry: &Registry, sink: &mut Sink) -> io::Result<Turn> {
        if self.next.is_some_and(|next| now < next) {
            return Ok(Turn::Open { more: false });
        }
        self.next = Some((self.next.unwrap_or(now) + self.interval).max(now));
        for _ in 0..PACED_READS {
            if self.at == self.len {
                let n = input::read_some(&mut self.file, &mut self.buf)
                    .map_err(|e| read_error(e, sink.what))?;
                if n > 0 {
                    sink.took(n);
                    self.pass += n as u64;
                    (self.at, self.len) = (0, n);
                } else if !self.looped {
                    return Ok(Turn::Ended);
                } else {
                    rewind(&mut self.file, sink.what, self.pass)?;
                    sink.splitter.finish();
                    self.pass = 0;
                    if sink.splitter.counters.frames == 0 {
                        return Err(io::Error::other(format!("{} holds no JPEG frame", sink.what)));
                    }
                    continue;
                }
            }
            let (consumed, frame) = sink.feed_one(&self.buf[self.at..self.len], Instant::now());
            self.at += consumed;
            if frame {
                break;
            }
        }
        Ok(Turn::Open { more: false })
    }
}

/// Rewinds a looped file, which must have given bytes since the last time:
/// an emptied file is an error, not a busy loop.
fn rewind(file: &mut File, what: &str, pass: u64) -> io::Result<()> {
    if pass == 0 {
        return Err(io::Error::other(format!("{what} is empty: no frames to loop")));
    }
    file.rewind()
}
