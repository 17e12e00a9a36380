/*!
Where frames come from, opened as something the poll loop can read.

Pipes, FIFOs and sockets are made non-blocking and polled. A regular file
cannot be polled (epoll refuses it), so it is read on a timer at `--fps`.
The test pattern and the `--file` list run on producer threads that write
into a pipe, so the loop sees them exactly as it sees a camera on stdin.
*/

use crate::cli::SourceSpec;
use crate::pattern;
use crate::source::{AtEnd, Opened, Paced, Polled};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// What an input is called in messages.
pub struct Label {
    /// Short, for errors: "stdin", a path.
    pub name: String,
    /// For the start-up line.
    pub description: String,
    /// A FIFO: its writer may go quiet and come back, so viewers are told.
    pub fifo: bool,
}

fn label(name: impl Into<String>, description: String) -> Label {
    Label { name: name.into(), description, fifo: false }
}

/// Opens the source and says what it is.
pub fn open(source: &SourceSpec, fps: u32) -> io::Result<(Opened, Label)> {
    let interval = crate::source::interval(fps);
    match source {
        SourceSpec::Stdin => {
            // SAFETY: fd 0 is open for the life of the process and nothing
            // else in this program reads it.
            let stdin = unsafe { File::from_raw_fd(0) };
            if stdin.metadata()?.file_type().is_file() {
                return Ok((
                    Opened::Paced(Paced::new(stdin, interval, false)),
                    label("stdin", format!("stdin (a file, read at {fps} fps)")),
                ));
            }
            set_nonblocking(&stdin)?;
            Ok((Opened::Polled(Polled::new(stdin, AtEnd::Exit)), label("stdin", "stdin".into())))
        }
        SourceSpec::Path(path) => open_path(path, interval, fps),
        SourceSpec::List { list, delay } => {
            let names = read_list(list)?;
            let (reader, writer) = pipe()?;
            let count = names.len();
            spawn_list(writer, names, *delay)?;
            let what = format!(
                "{count} JPEG files listed in {list}, one every {} µs, looped",
                delay.as_micros()
            );
            Ok((Opened::Polled(Polled::new(reader, AtEnd::Failed)), label("the file list", what)))
        }
        SourceSpec::Pattern => {
            let (reader, writer) = pipe()?;
            pattern::spawn(writer, fps)?;
            let what = format!(
                "the built-in test pattern, {}x{} at {fps} fps (pipe a camera into stdin to stream it)",
                pattern::WIDTH,
                pattern::HEIGHT
            );
            Ok((
                Opened::Polled(Polled::new(reader, AtEnd::Failed)),
                label("the test pattern", what),
            ))
        }
        SourceSpec::Exec(_) | SourceSpec::Http(_) => {
            Err(io::Error::other("a camera or a relay is run by the source"))
        }
    }
}

fn open_path(path: &Path, interval: Duration, fps: u32) -> io::Result<(Opened, Label)> {
    let shown = path.display();
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{shown}: {e}"));
    let meta = fs::metadata(path).map_err(with_path)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(io::Error::other(format!(
            "{shown} is a directory; --input wants a FIFO, a pipe or a file of JPEG frames"
        )));
    }
    if kind.is_file() {
        if meta.len() == 0 {
            return Err(io::Error::other(format!("{shown} is empty: no frames to loop")));
        }
        let file = File::open(path).map_err(with_path)?;
        return Ok((
            Opened::Paced(Paced::new(file, interval, true)),
            label(shown.to_string(), format!("{shown} (looped at {fps} fps)")),
        ));
    }
    // A FIFO is opened for writing too, so that it always has a writer: the
    // camera process can exit and start again without the server seeing an
    // end of file, and the viewers stay connected.
    let fifo = kind.is_fifo();
    let file = OpenOptions::new()
        .read(true)
        .write(fifo)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(with_path)?;
    let what = if fifo {
        format!("{shown} (FIFO; camera restarts are waited for)")
    } else {
        shown.to_string()
    };
    Ok((
        Opened::Polled(Polled::new(file, AtEnd::Exit)),
        Label { fifo, ..label(shown.to_string(), what) },
    ))
}

pub(crate) fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a valid fd with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe whose reading end is non-blocking (for the loop) and whose writing
/// end blocks (for a producer thread).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    set_nonblocking(&reader)?;
    Ok((reader, writer))
}

fn read_list(list: &str) -> io::Result<Vec<String>> {
    let lines: Vec<String> = if list == "-" {
        io::stdin().lock().lines().collect::<io::Result<_>>()?
    } else {
        io::BufReader::new(File::open(list)?).lines().collect::<io::Result<_>>()?
    };
    let names: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    if names.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the list names no files"));
    }
    for name in &names {
        File::open(name).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
    }
    Ok(names)
}

/// Writes each listed file in turn, one every `delay`, forever. The files
/// are read anew each time, so another program may replace them.
fn spawn_list(mut pipe: File, names: Vec<String>, delay: Duration) -> io::Result<()> {
    thread::Builder::new().name("file-list".into()).spawn(move || {
        let mut due = Instant::now();
        let mut warned = HashSet::new();
        for name in names.iter().cycle() {
            match fs::read(name) {
                Ok(jpeg) => {
                    if pipe.write_all(&jpeg).is_err() {
                        return;
                    }
                }
                Err(e) if warned.insert(name.clone()) => crate::log!("warning: {name}: {e}"),
                Err(_) => {}
            }
            // Due times add up rather than multiply a frame count, which
            // would wrap on a long run.
            due += delay;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
    })?;
    Ok(())
}

/// Reads once from `file` into `buf`, mapping the end to `Ok(0)`.
pub fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
