/*!
`mjpeg-probe`: measures the latency of an MJPEG-over-HTTP server.

`source` feeds the server frames tagged with a sequence number and the time
of their write; `watch` reads the server's stream with many clients and
compares each frame's arrival with its tag. Both read CLOCK_MONOTONIC, so
they must run on the same machine.

`glass` reads the clock that the server's `/latency` page draws out of each
frame of a stream that films it (glass-to-glass latency), and `tee` marks
when each frame entered the server's pipe, for the server's share of it.
*/

mod clock;
mod clockface;
mod glass;
mod jpeg;
mod multipart;
mod report;
mod source;
mod tee;
mod watch;

use raspivid_mjpeg_server::upstream::Url;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
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

/// The addresses of the URL's host, in the resolver's order. The probe
/// resolves once, before its clients start, so it may wait for the answer.
pub(crate) fn resolve(url: &Url) -> io::Result<Vec<SocketAddr>> {
    Ok((url.host.as_str(), url.port).to_socket_addrs()?.collect())
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
    Glass(GlassArgs),
    Tee(TeeArgs),
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
    #[argh(option)]
    /// when a stream ends or fails, connect again: TRIES[,FIRST_MS[,MAX_MS]]
    /// (the wait doubles from FIRST_MS, default 100, up to MAX_MS, default
    /// 2000); the report adds the reconnects and their loss-to-frame times
    reconnect: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "glass")]
/// Read the glass-to-glass clock of the /latency page out of every frame of
/// a stream that films it, and report the latency: arrival time minus the
/// clock shown. The clock and this probe must share one machine's clock.
/// Given a file of JPEGs instead of a URL, print what each frame shows.
struct GlassArgs {
    #[argh(positional)]
    /// the stream, http://HOST:PORT/path?query, or a file of JPEGs
    url: String,
    #[argh(option, default = "10.0")]
    /// length of the run in seconds (default 10)
    seconds: f64,
    #[argh(option, default = "0.0")]
    /// seconds at the start whose frames are not read (default 0)
    warmup: f64,
    #[argh(switch)]
    /// print one JSON line instead of the summary
    json: bool,
    #[argh(option)]
    /// the log of `mjpeg-probe tee` in front of the server: pair each frame
    /// with it for the server's share
    tee: Option<PathBuf>,
    #[argh(option)]
    /// write every frame to this CSV file: t_s,outcome,clock_ms,latency_ms,server_ms
    timeline: Option<PathBuf>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "tee")]
/// Copy stdin to stdout unchanged, and log when each JPEG's last byte was
/// handed on: one line "UNIX_NS KEY LEN" a frame, for `glass --tee`.
struct TeeArgs {
    #[argh(positional)]
    /// the log file (truncated)
    log: PathBuf,
}

fn glass(args: GlassArgs) -> Result<u8, Fatal> {
    if !args.url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
        glass::read_file(&args.url)?;
        return Ok(0);
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(Fatal::usage("--seconds must be a positive number".into()));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0 && args.warmup < args.seconds) {
        return Err(Fatal::usage("--warmup must be zero or more and less than --seconds".into()));
    }
    let options = glass::Options {
        url: Url::parse(&args.url).map_err(Fatal::usage)?,
        seconds: args.seconds,
        warmup: args.warmup,
        tee: args.tee,
        timeline: args.timeline,
    };
    let report = glass::run(&options)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    Ok(0)
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
        url: Url::parse(&args.url).map_err(Fatal::usage)?,
        clients: args.clients,
        stalled: args.stalled,
        seconds: args.seconds,
        warmup: args.warmup,
        timeline: args.timeline,
    };
    let policy = args.reconnect.as_deref().map(watch::Reconnect::parse).transpose();
    let policy = policy.map_err(Fatal::usage)?;
    let (report, recovery) = watch::run_with(&options, policy)?;
    let recovery = policy.map(|_| recovery);
    match (args.json, &recovery) {
        (true, Some(recovery)) => println!("{}", recovery.merge_into(&report.json())),
        (true, None) => println!("{}", report.json()),
        (false, Some(recovery)) => print!("{}{}", report.human(), recovery.human()),
        (false, None) => print!("{}", report.human()),
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
        Command::Glass(args) => glass(args),
        Command::Tee(args) => tee::run(&args.log).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("mjpeg-probe: {}", fatal.message);
            ExitCode::from(fatal.code)
        }
    }
}
