/*!
`mjpeg-probe`: measures the latency of an MJPEG-over-HTTP server.

`source` feeds the server frames tagged with a sequence number and the time
of their write; `watch` reads the server's stream with many clients and
compares each frame's arrival with its tag. Both read CLOCK_MONOTONIC, so
they must run on the same machine.
*/

mod clock;
mod http;
mod jpeg;
mod multipart;
mod report;
mod source;
mod url;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// Exit code of a run that saw a corrupt frame, so that scripts notice.
const EXIT_CORRUPT: u8 = 1;

/// Exit code of a bad command line or a failed set-up.
const EXIT_USAGE: u8 = 2;

/// An error that ends the program: one line on stderr and an exit code.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

impl Fatal {
    /// A bad command line or a set-up that failed before the work began.
    pub fn usage(message: String) -> Fatal {
        Fatal { code: EXIT_USAGE, message }
    }

    /// A failure in the middle of the work.
    pub fn runtime(message: String) -> Fatal {
        Fatal { code: 1, message }
    }
}

#[derive(FromArgs)]
/// Latency probe for MJPEG-over-HTTP servers.
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Source(SourceArgs),
    Watch(WatchArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "source")]
/// Write the JPEG frames of FILE to stdout at a steady rate, looped, each
/// tagged with a sequence number and its send time in a COM segment.
struct SourceArgs {
    #[argh(positional)]
    /// concatenated JPEG frames, as `ffmpeg -f mjpeg` writes them
    file: PathBuf,
    #[argh(option, default = "30.0")]
    /// frames a second (default 30)
    fps: f64,
    #[argh(option)]
    /// stop after this many seconds (default: never)
    seconds: Option<f64>,
    #[argh(option)]
    /// write each frame in pieces of at most this many bytes
    chunk: Option<usize>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "watch")]
/// Read an MJPEG stream with many clients and report the latency of the
/// frames that `mjpeg-probe source` tagged. Exits 1 if a frame was corrupt.
struct WatchArgs {
    #[argh(positional)]
    /// the stream, http://HOST:PORT/path?query
    url: String,
    #[argh(option, default = "1")]
    /// reading clients (default 1)
    clients: usize,
    #[argh(option, default = "0")]
    /// clients that send their request and never read (default 0)
    stalled: usize,
    #[argh(option, default = "10.0")]
    /// length of the run in seconds (default 10)
    seconds: f64,
    #[argh(option, default = "1.0")]
    /// seconds at the start whose frames are not measured (default 1)
    warmup: f64,
    #[argh(switch)]
    /// print one JSON line instead of the summary
    json: bool,
    #[argh(option)]
    /// write every latency sample to this CSV file: t_s,latency_ms,client
    timeline: Option<PathBuf>,
}

fn source(args: SourceArgs) -> Result<u8, Fatal> {
    if !(args.fps.is_finite() && args.fps > 0.0) {
        return Err(Fatal::usage("--fps must be a positive number".into()));
    }
    if args.seconds.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
        return Err(Fatal::usage("--seconds must be zero or more".into()));
    }
    if args.chunk == Some(0) {
        return Err(Fatal::usage("--chunk must be at least 1".into()));
    }
    let options = source::Options {
        file: args.file,
        fps: args.fps,
        seconds: args.seconds,
        chunk: args.chunk,
    };
    source::run(&options)?;
    Ok(0)
}

fn watch(args: WatchArgs) -> Result<u8, Fatal> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(Fatal::usage("--seconds must be a positive number".into()));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0 && args.warmup < args.seconds) {
        return Err(Fatal::usage("--warmup must be zero or more and less than --seconds".into()));
    }
    let options = watch::Options {
        url: url::Url::parse(&args.url).map_err(Fatal::usage)?,
        clients: args.clients,
        stalled: args.stalled,
        seconds: args.seconds,
        warmup: args.warmup,
        timeline: args.timeline,
    };
    let report = watch::run(&options)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    if args.clients > 0 && report.connected == 0 {
        let why = report.last_failure.unwrap_or_default();
        return Err(Fatal::usage(format!("no client got a stream: {why}")));
    }
    Ok(if report.corrupt > 0 { EXIT_CORRUPT } else { 0 })
}

fn main() -> ExitCode {
    let args: Option<Vec<String>> =
        std::env::args_os().skip(1).map(|a| a.into_string().ok()).collect();
    let Some(args) = args else {
        eprintln!("mjpeg-probe: arguments must be UTF-8");
        return ExitCode::from(EXIT_USAGE);
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&["mjpeg-probe"], &args) {
        Ok(cli) => cli,
        Err(early) if early.status.is_ok() => {
            print!("{}", early.output);
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            let message = early.output.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("mjpeg-probe: {message} (see --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Command::Source(args) => source(args),
        Command::Watch(args) => watch(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("mjpeg-probe: {}", fatal.message);
            ExitCode::from(fatal.code)
        }
    }
}
