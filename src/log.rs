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
use std::sync::{Mutex, OnceLock};
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

static SENDER: OnceLock<Mutex<SyncSender<Msg>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts the writer thread; until then (and in unit tests) lines are
/// written directly, errors ignored.
pub fn start() {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    if SENDER.set(Mutex::new(tx)).is_ok() {
        let _ = thread::Builder::new().name("log".into()).spawn(move || write_lines(rx));
    }
}

/// Writes `args` and a newline to stderr, or drops it if stderr is behind.
pub fn line(args: fmt::Arguments) {
    let text = format!("{args}\n");
    let Some(sender) = SENDER.get() else {
        let _ = std::io::stderr().write_all(text.as_bytes());
        return;
    };
    let sent = sender.lock().map(|tx| tx.try_send(Msg::Line(text)));
    if let Ok(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) = sent {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines dropped so far because stderr was not being read.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Waits up to `limit` for the lines sent so far to be written: for the
/// final report, without hanging on a stderr nobody reads.
pub fn flush(limit: Duration) {
    let Some(sender) = SENDER.get() else { return };
    let (done, written) = mpsc::channel();
    let Ok(sender) = sender.lock() else { return };
    let mut msg = Msg::Flush(done);
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    // The queue may be full of lines: wait for room as long as `limit` allows.
    loop {
        match sender.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if waited < limit => {
                msg = back;
                thread::sleep(step);
                waited += step;
            }
            Err(_) => return,
        }
    }
    drop(sender);
    let _ = written.recv_timeout(limit.saturating_sub(waited));
}

fn write_lines(rx: Receiver<Msg>) {
    let mut reported = 0;
    for msg in rx {
        let mut err = std::io::stderr().lock();
        match msg {
            Msg::Line(text) => {
                let dropped = dropped();
                if dropped > reported {
                    let _ = writeln!(
                        err,
                        "warning: {} log lines dropped: stderr was not being read",
                        dropped - reported
                    );
                    reported = dropped;
                }
                let _ = err.write_all(text.as_bytes());
            }
            Msg::Flush(done) => {
                let _ = err.flush();
                let _ = done.send(());
            }
        }
    }
}

/// `log!("…", args)`: one line on stderr, never blocking, never panicking.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
