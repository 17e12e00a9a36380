/*!
A pipe, a FIFO or a producer thread's pipe: polled for readability and read
until it would block, at most [`INPUT_READS`] reads a turn. [`drain`], that
read, serves the camera's stdout too.
*/

use super::{read_buf, read_error, Feed, Sink, Turn, INPUT_READS};
use crate::input;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Instant;

/// What the end of a polled input means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// The camera process has finished: so has the server.
    Exit,
    /// A producer thread stopped, which it only does on an error.
    Failed,
}

pub struct Polled {
    file: File,
    end: AtEnd,
    buf: Box<[u8]>,
}

impl Polled {
    pub fn new(file: File, end: AtEnd) -> Polled {
        Polled { file, end, buf: read_buf() }
    }
}

impl Feed for Polled {
    /// Registers the file. epoll refuses some files (`/dev/null`, which
    /// systemd gives a service as stdin, directories, some devices): the
    /// error then says which, and what to give instead.
    fn start(&mut self, registry: &Registry, token: Token, what: &str) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        registry.register(&mut SourceFd(&fd), token, Interest::READABLE).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => unpollable(&self.file),
                _ => e.to_string(),
            };
            io::Error::new(
                e.kind(),
                format!(
                    "cannot stream {what}: {why}; pipe a camera into stdin, or give --exec CMD, \
                     --input FIFO or --pattern"
                ),
            )
        })
    }

    fn stop(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.file.as_raw_fd()));
    }

    fn deadline(&self, _now: Instant) -> Option<Instant> {
        None
    }

    fn read(&mut self, _now: Instant, _registry: &Registry, sink: &mut Sink) -> io::Result<Turn> {
        match drain(&mut self.file, &mut self.buf, sink)? {
            Drained::Open { more } => Ok(Turn::Open { more }),
            Drained::End if self.end == AtEnd::Failed => {
                Err(io::Error::other(format!("{} stopped", sink.what)))
            }
            Drained::End => Ok(Turn::Ended),
        }
    }
}

/// How far [`drain`] got.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// It would block; `more` if the cap stopped it first.
    Open { more: bool },
    /// The end of the file.
    End,
}

/// Reads `file` until it would block, or [`INPUT_READS`] times, feeding
/// the splitter.
pub(super) fn drain(file: &mut File, buf: &mut [u8], sink: &mut Sink) -> io::Result<Drained> {
    for _ in 0..INPUT_READS {
        match input::read_some(file, buf) {
            Ok(0) => return Ok(Drained::End),
            Ok(n) => {
                let read_at = Instant::now();
                sink.took(n);
                sink.feed(&buf[..n], read_at);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Drained::Open { more: false })
            }
            Err(e) => return Err(read_error(e, sink.what)),
        }
    }
    Ok(Drained::Open { more: true })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitter::Splitter;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    /// A pipe: its reading end non-blocking, as `input::open` makes it.
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        // SAFETY: both fds were just created and are owned by nothing else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    const JPEG: [u8; 11] = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x00, 7, 7, 0xFF, 0xD9];

    /// Reads `polled` once: its turn, and the frames and bytes it gave.
    fn turn(polled: &mut Polled) -> (io::Result<Turn>, usize, u64) {
        let (mut splitter, mut bytes_in, mut frames) = (Splitter::new(1 << 20), 0, 0);
        let mut publish = |_: Vec<u8>, _: Instant| frames += 1;
        let mut sink = Sink {
            splitter: &mut splitter,
            bytes_in: &mut bytes_in,
            publish: &mut publish,
            what: "the pipe",
            changed: false,
        };
        let poll = mio::Poll::new().unwrap();
        let turn = polled.read(Instant::now(), poll.registry(), &mut sink);
        (turn, frames, bytes_in)
    }

    #[test]
    fn a_pipe_is_read_until_it_would_block_and_its_end_is_what_it_means() {
        let (reader, mut writer) = pipe();
        let mut polled = Polled::new(reader, AtEnd::Exit);
        writer.write_all(&[JPEG, JPEG].concat()).unwrap();
        let (turn, frames, bytes) = turn(&mut polled);
        assert_eq!((turn.unwrap(), frames, bytes), (Turn::Open { more: false }, 2, 22));
        drop(writer);
        assert_eq!(self::turn(&mut polled).0.unwrap(), Turn::Ended);

        let (reader, writer) = pipe();
        let mut polled = Polled::new(reader, AtEnd::Failed);
        drop(writer);
        let err = self::turn(&mut polled).0.unwrap_err().to_string();
        assert_eq!(err, "the pipe stopped");
    }

    #[test]
    fn a_pipe_that_fills_every_read_leaves_more_for_the_next_turn() {
        let (reader, mut writer) = pipe();
        let mut polled = Polled::new(reader, AtEnd::Exit);
        polled.buf = vec![0; 4].into_boxed_slice();
        writer.write_all(&[0; 4 * INPUT_READS + 1]).unwrap();
        let (turn, _, bytes) = turn(&mut polled);
        assert_eq!((turn.unwrap(), bytes), (Turn::Open { more: true }, 4 * INPUT_READS as u64));
    }
}
