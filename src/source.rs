/*!
The input driver: owns the input and the splitter, and turns readiness or
its own deadline into frames for the loop.

A polled input (a pipe, a FIFO, a producer thread's pipe) is read until it
would block, at most [`INPUT_READS`] reads a turn; a regular file is read on
a timer, one frame per interval. Each frame goes to the `publish` callback
the moment its EOI is read. The driver says when the input ended (stdin's
end ends the server) or failed, and when it next needs a turn.
*/

use crate::input::{self, AtEnd, Input};
use crate::splitter::{Counters, Splitter};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

/// One read from the input: a whole 640x480 frame usually fits, and a read
/// never asks for more than a pipe (64 KiB by default) can hold twice over.
const READ_BUF: usize = 128 * 1024;

/// Reads from the polled input per turn of the loop (1 MiB): a producer
/// writing flat out must not keep the loop from clients that wait to write.
const INPUT_READS: usize = 8;

/// Reads of a paced file per interval: a file with no frame in it must not
/// hold the loop.
const PACED_READS: usize = 64;

/// What the input did in one turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    /// The end of the input: the server drains and exits.
    Ended,
}

pub struct InputDriver {
    input: Input,
    /// What the input is, for messages ("stdin", a path).
    what: String,
    splitter: Splitter,
    buf: Vec<u8>,
    /// The polled input may hold more than the last turn read.
    pending: bool,
    /// Bytes read from a paced file and not yet fed: `buf[at..len]`.
    paced_at: usize,
    paced_len: usize,
    /// Bytes a paced file gave since it was last rewound.
    paced_pass: u64,
    next_paced: Instant,
    ended: bool,
    warned_oversize: bool,
    max_frame_bytes: usize,
    pub bytes_in: u64,
}

impl InputDriver {
    pub fn new(input: Input, what: String, max_frame_bytes: usize, now: Instant) -> InputDriver {
        InputDriver {
            input,
            what,
            splitter: Splitter::new(max_frame_bytes),
            buf: vec![0; READ_BUF],
            pending: false,
            paced_at: 0,
            paced_len: 0,
            paced_pass: 0,
            next_paced: now,
            ended: false,
            warned_oversize: false,
            max_frame_bytes,
            bytes_in: 0,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.splitter.counters
    }

    /// Registers a polled input. epoll refuses some files (`/dev/null`,
    /// which systemd gives a service as stdin, directories, some devices):
    /// the error then says which, and what to give instead.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let Input::Polled { file, .. } = &self.input else { return Ok(()) };
        registry.register(&mut SourceFd(&file.as_raw_fd()), token, Interest::READABLE).map_err(
            |e| {
                let why = match e.raw_os_error() {
                    Some(libc::EPERM) => unpollable(file),
                    _ => e.to_string(),
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot stream {}: {why}; pipe a camera into stdin, or give --input FIFO \
                     or --pattern",
                        self.what
                    ),
                )
            },
        )
    }

    /// Stops reading: the input is left as it is, and no more frames come.
    pub fn stop(&mut self, registry: &Registry) {
        if let Input::Polled { file, .. } = &self.input {
            let _ = registry.deregister(&mut SourceFd(&file.as_raw_fd()));
        }
        self.ended = true;
        self.pending = false;
    }

    /// When the driver next needs a turn without an event: now, if a turn
    /// left bytes unread; a paced file's next frame; never once ended.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.ended {
            None
        } else if self.pending {
            Some(now)
        } else if matches!(self.input, Input::Paced { .. }) {
            Some(self.next_paced)
        } else {
            None
        }
    }

    /// Reads what the input has for this turn, handing each complete frame
    /// and the time of the read that completed it to `publish`.
    pub fn read(
        &mut self,
        now: Instant,
        registry: &Registry,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<Status> {
        if self.ended {
            return Ok(Status::Ended);
        }
        let status = match self.input {
            Input::Polled { .. } => self.read_polled(publish)?,
            Input::Paced { .. } if now >= self.next_paced => self.read_paced(now, publish)?,
            Input::Paced { .. } => Status::Open,
        };
        if self.splitter.counters.oversize_frames > 0 && !self.warned_oversize {
            self.warned_oversize = true;
            crate::log!(
                "warning: dropped a frame larger than --max-frame-bytes ({} bytes); \
                 later ones are counted in /stats",
                self.max_frame_bytes
            );
        }
        if status == Status::Ended {
            if self.splitter.finish() {
                crate::log!("warning: the input ended in the middle of a frame; it was dropped");
            }
            self.stop(registry);
        }
        Ok(status)
    }

    /// Reads until the input would block, or [`INPUT_READS`] times.
    fn read_polled(&mut self, publish: &mut dyn FnMut(Vec<u8>, Instant)) -> io::Result<Status> {
        self.pending = false;
        for _ in 0..INPUT_READS {
            let Input::Polled { file, end } = &mut self.input else { unreachable!() };
            let end = *end;
            match input::read_some(file, &mut self.buf) {
                Ok(0) if end == AtEnd::Failed => {
                    return Err(io::Error::other(format!("{} stopped", self.what)));
                }
                Ok(0) => return Ok(Status::Ended),
                Ok(n) => {
                    let read_at = Instant::now();
                    self.bytes_in += n as u64;
                    feed(&mut self.splitter, &self.buf[..n], read_at, publish);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Open),
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("reading {}: {e}", self.what)))
                }
            }
        }
        self.pending = true;
        Ok(Status::Open)
    }

    /// A regular file: feeds it until one frame comes out, once per interval.
    fn read_paced(
        &mut self,
        now: Instant,
        publish: &mut dyn FnMut(Vec<u8>, Instant),
    ) -> io::Result<Status> {
        let Input::Paced { interval, .. } = self.input else { unreachable!() };
        self.next_paced = (self.next_paced + interval).max(now);
        let frames = self.splitter.counters.frames;
        for _ in 0..PACED_READS {
            if self.paced_at == self.paced_len {
                let Input::Paced { file, looped, .. } = &mut self.input else { unreachable!() };
                let n = input::read_some(file, &mut self.buf)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", self.what)))?;
                if n > 0 {
                    self.bytes_in += n as u64;
                    self.paced_pass += n as u64;
                    (self.paced_at, self.paced_len) = (0, n);
                } else if !*looped {
                    return Ok(Status::Ended);
                } else {
                    rewind(file, &self.what, self.paced_pass)?;
                    self.splitter.finish();
                    self.paced_pass = 0;
                    if self.splitter.counters.frames == 0 {
                        return Err(io::Error::other(format!("{} holds no JPEG frame", self.what)));
                    }
                    continue;
                }
            }
            let fed = self.splitter.feed(&self.buf[self.paced_at..self.paced_len]);
            self.paced_at += fed.consumed;
            if let Some(jpeg) = fed.frame {
                publish(jpeg, Instant::now());
            }
            if self.splitter.counters.frames > frames {
                break;
            }
        }
        Ok(Status::Open)
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

/// Feeds `bytes` to the splitter, publishing every frame it completes.
fn feed(
    splitter: &mut Splitter,
    mut bytes: &[u8],
    read_at: Instant,
    publish: &mut dyn FnMut(Vec<u8>, Instant),
) {
    while !bytes.is_empty() {
        let fed = splitter.feed(bytes);
        bytes = &bytes[fed.consumed..];
        if let Some(jpeg) = fed.frame {
            publish(jpeg, read_at);
        }
    }
}

/// Why epoll refused `file`, in words.
fn unpollable(file: &File) -> String {
    let Ok(meta) = file.metadata() else { return "it cannot be polled".into() };
    let kind = meta.file_type();
    // /dev/null is character device 1:3 on Linux.
    if kind.is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        "it is /dev/null (as under systemd), which has nothing to stream".into()
    } else if kind.is_dir() {
        "it is a directory".into()
    } else if kind.is_char_device() {
        "it is a character device that cannot be polled".into()
    } else {
        "it cannot be polled".into()
    }
}

/// The time between frames at `fps`.
pub fn interval(fps: u32) -> Duration {
    Duration::from_secs(1) / fps.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn paced(bytes: &[u8], looped: bool, t: Instant) -> InputDriver {
        let path =
            std::env::temp_dir().join(format!("paced-{}-{}", std::process::id(), bytes.len()));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let input = Input::Paced { file, interval: interval(100), looped };
        InputDriver::new(input, "the file".into(), 1 << 20, t)
    }

    fn jpeg(fill: u8) -> Vec<u8> {
        // SOI, a one-byte-long-body SOS segment, entropy data, EOI.
        vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00, fill, fill, 0xFF, 0xD9]
    }

    #[test]
    fn a_paced_file_gives_one_frame_per_interval_then_loops() {
        let poll = mio::Poll::new().unwrap();
        let bytes = [jpeg(1), jpeg(2)].concat();
        let t = Instant::now();
        let mut d = paced(&bytes, true, t);
        let mut got = Vec::new();
        for i in 0..5u32 {
            let at = t + interval(100) * i;
            let status = d.read(at, poll.registry(), &mut |f, _| got.push(f[7])).unwrap();
            assert_eq!(status, Status::Open);
            assert_eq!(d.deadline(at), Some(at + interval(100)));
        }
        assert_eq!(got, [1, 2, 1, 2, 1]);
        // Not yet due: nothing read.
        d.read(t, poll.registry(), &mut |_, _| panic!("early")).unwrap();
    }

    #[test]
    fn a_paced_file_that_is_not_looped_ends() {
        let poll = mio::Poll::new().unwrap();
        let t = Instant::now();
        let mut d = paced(&jpeg(1), false, t);
        let mut got = 0;
        assert_eq!(d.read(t, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Open);
        let later = t + Duration::from_secs(1);
        assert_eq!(d.read(later, poll.registry(), &mut |_, _| got += 1).unwrap(), Status::Ended);
        assert_eq!((got, d.deadline(later)), (1, None));
    }

    #[test]
    fn a_looped_file_with_no_frame_or_no_bytes_is_an_error_not_a_busy_loop() {
        let poll = mio::Poll::new().unwrap();
        let mut d = paced(b"not a jpeg at all", true, Instant::now());
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file holds no JPEG frame"), "{err}");
        let mut d = paced(b"", true, Instant::now());
        let err = d.read(Instant::now(), poll.registry(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("the file is empty"), "{err}");
    }

    #[test]
    fn dev_null_is_named_when_epoll_refuses_it() {
        let poll = mio::Poll::new().unwrap();
        let file = File::open("/dev/null").unwrap();
        let input = Input::Polled { file, end: AtEnd::Exit };
        let mut d = InputDriver::new(input, "stdin".into(), 1 << 20, Instant::now());
        let err = d.register(poll.registry(), Token(0)).unwrap_err().to_string();
        assert!(err.starts_with("cannot stream stdin: it is /dev/null"), "{err}");
        assert!(err.contains("--input") && err.contains("--pattern"), "{err}");
    }
}
