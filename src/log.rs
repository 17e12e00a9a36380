/*!
Lines for stderr that never block the loop and never kill the server.

`eprintln!` panics when stderr is a closed pipe and blocks while it is a
full one; either would stop every viewer's stream. Instead [`line`] hands
each line to a writer thread through a bounded channel. When the channel is
full (stderr is not being read), the line is dropped and counted, and the
writer says how many were lost once it can write again. Write errors (a
closed stderr) are ignored: the server's job is the stream, not its log.
*/

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

/// Lines that may wait for a slow stderr: a burst of warnings fits, and a
/// stderr that is never read costs at most this many lines of memory.
const QUEUE: usize = 256;

enum Msg {
    Line(String),
    /// Answer once every line sent before has been written.
    Flush(mpsc::Sender<()>),
}

/// A writer thread behind a bounded queue.
pub struct Logger {
    sender: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Logger {
    /// Starts a thread that writes lines to `out`, holding at most `queue`.
    pub fn new(out: impl Write + Send + 'static, queue: usize) -> Logger {
        let (tx, rx) = mpsc::sync_channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let _ =
            thread::Builder::new().name("log".into()).spawn(move || write_lines(rx, out, &counter));
        Logger { sender: tx, dropped }
    }

    /// Queues `text`, or drops and counts it if the queue is full.
    pub fn line(&self, text: String) {
        if self.sender.try_send(Msg::Line(text)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `limit` for the lines queued so far to be written.
    pub fn flush(&self, limit: Duration) {
        let (done, written) = mpsc::channel();
        let mut msg = Msg::Flush(done);
        let step = Duration::from_millis(5);
        let mut waited = Duration::ZERO;
        // The queue may be full of lines: wait for room as long as `limit` allows.
        loop {
            match self.sender.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if waited < limit => {
                    msg = back;
                    thread::sleep(step);
                    waited += step;
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(limit.saturating_sub(waited));
    }
}

fn write_lines(rx: Receiver<Msg>, mut out: impl Write, dropped: &AtomicU64) {
    let mut reported = 0;
    for msg in rx {
        match msg {
            Msg::Line(text) => {
                let now = dropped.load(Ordering::Relaxed);
                if now > reported {
                    let lost = now - reported;
                    let _ = writeln!(
                        out,
                        "warning: {lost} log lines dropped: stderr was not being read"
                    );
                    reported = now;
                }
                let _ = out.write_all(text.as_bytes());
            }
            Msg::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

static STDERR: OnceLock<Logger> = OnceLock::new();

/// Starts the process's stderr writer; until then (and in unit tests)
/// lines are written directly, errors ignored.
pub fn start() {
    STDERR.get_or_init(|| Logger::new(std::io::stderr(), QUEUE));
}

/// Writes `args` and a newline to stderr, or drops it if stderr is behind.
pub fn line(args: fmt::Arguments) {
    let text = format!("{args}\n");
    match STDERR.get() {
        Some(logger) => logger.line(text),
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// Lines stderr has lost so far.
pub fn dropped() -> u64 {
    STDERR.get().map_or(0, Logger::dropped)
}

/// Waits up to `limit` for stderr's lines so far: for the final report,
/// without hanging on a stderr nobody reads.
pub fn flush(limit: Duration) {
    if let Some(logger) = STDERR.get() {
        logger.flush(limit);
    }
}

/// `log!("…", args)`: one line on stderr, never blocking, never panicking.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver as Gate;
    use std::sync::Mutex;

    /// A writer that blocks until the test opens its gate, then keeps all.
    struct Stuck {
        gate: Option<Gate<()>>,
        kept: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            self.kept.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_costs_lines_not_time_and_the_loss_is_told() {
        let (open, gate) = mpsc::channel();
        let kept = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger::new(Stuck { gate: Some(gate), kept: Arc::clone(&kept) }, 4);
        // The writer sticks on its first write; four lines wait, and the
        // writer may or may not have taken one more.
        for i in 0..20 {
            logger.line(format!("line {i}\n"));
        }
        assert!(logger.dropped() >= 15 && logger.dropped() <= 16, "{}", logger.dropped());
        open.send(()).unwrap();
        logger.flush(Duration::from_secs(10));
        logger.line("after\n".into());
        logger.flush(Duration::from_secs(10));
        let text = String::from_utf8(kept.lock().unwrap().clone()).unwrap();
        for i in 0..4 {
            assert!(text.contains(&format!("line {i}\n")), "{text}");
        }
        assert!(text.contains("log lines dropped"), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
    }

    #[test]
    fn a_failing_writer_is_ignored() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let logger = Logger::new(Broken, 4);
        logger.line("lost\n".into());
        logger.flush(Duration::from_secs(10));
        assert_eq!(logger.dropped(), 0);
    }
}
