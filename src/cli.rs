/*!
The command line: flags (argh), then checks that turn them into a [`Config`]
or a one-line error.
*/

use argh::FromArgs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Stats interval when `--stats` is given without a number.
const DEFAULT_STATS_SECS: u64 = 5;

/// The longest interval or timeout a flag may give (a day): longer ones are
/// mistakes, and far longer ones would overflow the clock's arithmetic.
const MAX_SECS: u64 = 86_400;

#[derive(FromArgs, Debug)]
/// Streams JPEG frames from stdin (raspivid -cd MJPEG, rpicam-vid --codec mjpeg, ffmpeg -f mjpeg)
/// to every HTTP client as multipart/x-mixed-replace, at the lowest latency the machine allows.
/// With nothing piped in, streams a built-in test pattern.
pub struct Args {
    /// TCP port to listen on (default 8554)
    #[argh(option, short = 'p', default = "8554")]
    pub port: u16,

    /// address to listen on (default: every interface, IPv6 and IPv4; 127.0.0.1 keeps the camera
    /// on this machine)
    #[argh(option)]
    pub bind: Option<IpAddr>,

    /// most clients connected at once; one more gets 503 (default 1024)
    #[argh(option, default = "1024")]
    pub max_clients: usize,

    /// largest JPEG frame in bytes; a bigger one is dropped (default 8388608)
    #[argh(option, default = "8 << 20")]
    pub max_frame_bytes: usize,

    /// print a stats line every SECS seconds (default 5) on stderr, and the latency distribution
    /// at exit
    #[argh(option)]
    pub stats: Option<u64>,

    /// read frames from this file or FIFO instead of stdin (a FIFO survives the camera
    /// restarting; a regular file is looped at --fps)
    #[argh(option)]
    pub input: Option<PathBuf>,

    /// frames per second for a regular file input and the test pattern (default 30)
    #[argh(option, default = "30")]
    pub fps: u32,

    /// stream the built-in test pattern even when stdin is not a terminal
    #[argh(switch)]
    pub pattern: bool,

    /// a file listing JPEG file names, one per line, `-` for stdin; looped forever
    #[argh(option, short = 'f')]
    pub file: Option<String>,

    /// microseconds between frames of --file (default 16000)
    #[argh(option, short = 'd', default = "16000")]
    pub delay: u64,

    /// seconds a client has to send its request (default 10)
    #[argh(option, default = "10")]
    pub request_timeout: u64,

    /// seconds a client may take no data while a frame waits for it before it is closed
    /// (default 10)
    #[argh(option, default = "10")]
    pub client_timeout: u64,

    /// bytes a viewer may have waiting (unsent, or queued on the path) before it is given a new
    /// frame: small keeps a slow link showing the newest frame instead of a queue (default 16384)
    #[argh(option, default = "16 * 1024")]
    pub max_queued_bytes: u32,

    /// bytes of distinct frames viewers may hold between them; past it the viewers holding the
    /// oldest frames are closed, so trickling clients cannot take the Pi's memory (default
    /// 33554432)
    #[argh(option, default = "32 << 20")]
    pub max_held_bytes: usize,

    /// require HTTP Basic authentication with USER:PASS on every endpoint
    #[argh(option)]
    pub auth: Option<String>,

    /// send CORS headers allowing this origin (`*` for any, without credentials)
    #[argh(option)]
    pub allow_origin: Option<String>,

    /// run this shell command as the camera and stream its stdout, restarting it when it exits
    /// or stalls (e.g. 'rpicam-vid -t 0 -n --codec mjpeg --flush -o -')
    #[argh(option)]
    pub exec: Option<String>,

    /// seconds without a frame before the camera counts as stalled and is restarted (default 5)
    #[argh(option, default = "5")]
    pub source_timeout: u64,

    /// seconds the camera has to exit after SIGTERM before SIGKILL (default 3)
    #[argh(option, default = "3")]
    pub kill_timeout: u64,

    /// with --exec: run the camera only while someone watches
    #[argh(switch)]
    pub on_demand: bool,

    /// with --on-demand: seconds the camera keeps running after the last viewer leaves (default 10)
    #[argh(option, default = "10")]
    pub linger: u64,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// `raspivid_mjpeg_server 0.2.0`, for `--version`.
pub fn version() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

/// Lets `--stats` stand without a number, as the flag has always been
/// written; argh wants a value, so the default is put in.
pub fn normalize(mut args: Vec<String>) -> Vec<String> {
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--" {
            break;
        }
        if args[i] == "--stats" && args.get(i + 1).is_none_or(|next| next.parse::<u64>().is_err()) {
            args.insert(i + 1, DEFAULT_STATS_SECS.to_string());
        }
        i += 1;
    }
    args
}

/// Where frames come from, as the command line names it: what
/// [`crate::source::Source`] is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    Stdin,
    Path(PathBuf),
    /// Each JPEG file named in a list (`-`: the list is on stdin), looped.
    List {
        list: String,
        delay: Duration,
    },
    Pattern,
    /// A camera process the server runs, restarts and stops.
    Exec(String),
    /// Another server's stream, relayed.
    Http(crate::upstream::Url),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub max_clients: usize,
    /// Connections the open-files limit leaves room for, closing ones
    /// included (set at start, from [`crate::limits::raise`]).
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub stats_every: Option<Duration>,
    pub source: SourceSpec,
    pub fps: u32,
    pub request_timeout: Duration,
    pub client_timeout: Duration,
    pub max_queued_bytes: u32,
    pub max_held_bytes: usize,
    pub source_timeout: Duration,
    pub kill_timeout: Duration,
    /// `--on-demand`: how long the camera runs on after the last viewer.
    pub linger: Option<Duration>,
    /// The base64 `USER:PASS` of the `Authorization: Basic` header a client
    /// must send, if any.
    pub credentials: Option<String>,
    pub allow_origin: Option<String>,
}

impl Args {
    /// Checks the flags. `stdin_is_terminal` picks the test pattern when
    /// nothing is piped in.
    pub fn into_config(self, stdin_is_terminal: bool) -> Result<Config, String> {
        if self.fps == 0 || self.fps > 10_000 {
            return Err(format!("--fps {} is out of range (1 to 10000)", self.fps));
        }
        if self.max_clients == 0 {
            return Err("--max-clients must be at least 1".into());
        }
        if self.max_frame_bytes < 1024 {
            return Err("--max-frame-bytes must be at least 1024".into());
        }
        if self.max_held_bytes < self.max_frame_bytes.saturating_mul(2) {
            return Err(format!(
                "--max-held-bytes {} must be at least twice --max-frame-bytes {}: \
                 the newest frame and one being sent",
                self.max_held_bytes, self.max_frame_bytes
            ));
        }
        for (flag, secs) in [
            ("--stats", self.stats.unwrap_or(1)),
            ("--request-timeout", self.request_timeout),
            ("--client-timeout", self.client_timeout),
            ("--source-timeout", self.source_timeout),
            ("--kill-timeout", self.kill_timeout),
            ("--linger", self.linger),
        ] {
            if secs == 0 || secs > MAX_SECS {
                return Err(format!("{flag} {secs} is out of range (1 to {MAX_SECS} seconds)"));
            }
        }
        if self.delay > MAX_SECS * 1_000_000 {
            return Err(format!("-d/--delay {} is out of range (at most a day)", self.delay));
        }
        let chosen = [self.input.is_some(), self.file.is_some(), self.pattern, self.exec.is_some()];
        if chosen.iter().filter(|&&c| c).count() > 1 {
            return Err("choose one of --input, --file, --pattern and --exec".into());
        }
        let relay = self.input.as_ref().and_then(|p| p.to_str()).is_some_and(|p| p.contains("://"));
        if self.on_demand && self.exec.is_none() && !relay {
            return Err(
                "--on-demand needs --exec or an http:// --input: a source the server starts".into(),
            );
        }
        let source = match (self.input, self.file) {
            _ if self.exec.is_some() => SourceSpec::Exec(self.exec.unwrap_or_default()),
            (Some(path), _) if relay => {
                let url = crate::upstream::Url::parse(&path.to_string_lossy())?;
                SourceSpec::Http(url)
            }
            (Some(path), _) => SourceSpec::Path(path),
            (_, Some(list)) => {
                SourceSpec::List { list, delay: Duration::from_micros(self.delay.max(1)) }
            }
            _ if self.pattern || stdin_is_terminal => SourceSpec::Pattern,
            _ => SourceSpec::Stdin,
        };
        let credentials = match self.auth {
            Some(auth) if !auth.contains(':') => {
                return Err("--auth wants USER:PASS".into());
            }
            Some(auth) => Some(base64(auth.as_bytes())),
            None => None,
        };
        if let Some(origin) = &self.allow_origin {
            if origin.is_empty() || origin.bytes().any(|b| b.is_ascii_control()) {
                return Err(
                    "--allow-origin wants an origin such as https://example.com or *".into()
                );
            }
        }
        Ok(Config {
            bind: self.bind,
            port: self.port,
            max_clients: self.max_clients,
            max_connections: usize::MAX,
            max_frame_bytes: self.max_frame_bytes,
            stats_every: self.stats.map(Duration::from_secs),
            source,
            fps: self.fps,
            request_timeout: Duration::from_secs(self.request_timeout),
            client_timeout: Duration::from_secs(self.client_timeout),
            max_queued_bytes: self.max_queued_bytes.max(1),
            max_held_bytes: self.max_held_bytes,
            source_timeout: Duration::from_secs(self.source_timeout),
            kill_timeout: Duration::from_secs(self.kill_timeout),
            linger: self.on_demand.then(|| Duration::from_secs(self.linger)),
            credentials,
            allow_origin: self.allow_origin,
        })
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = normalize(args.iter().map(|s| s.to_string()).collect());
        let strs: Vec<&str> = args.iter().map(String::as_str).collect();
        let args = Args::from_args(&strs[..1], &strs[1..]).map_err(|e| e.output)?;
        args.into_config(false)
    }

    #[test]
    fn defaults_match_the_original() {
        let c = parse(&["server"]).unwrap();
        assert_eq!(c.port, 8554);
        assert_eq!(c.bind, None);
        assert_eq!(c.max_clients, 1024);
        assert_eq!(c.max_frame_bytes, 8 << 20);
        assert_eq!(c.max_held_bytes, 32 << 20);
        assert_eq!(c.source, SourceSpec::Stdin);
        assert_eq!(c.stats_every, None);
    }

    #[test]
    fn short_flags_of_the_original() {
        let c = parse(&["server", "-p", "9000", "-f", "list.txt", "-d", "40000"]).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(
            c.source,
            SourceSpec::List { list: "list.txt".into(), delay: Duration::from_micros(40000) }
        );
    }

    #[test]
    fn stats_with_and_without_a_number() {
        assert_eq!(parse(&["s", "--stats"]).unwrap().stats_every, Some(Duration::from_secs(5)));
        assert_eq!(
            parse(&["s", "--stats", "-p", "1"]).unwrap().stats_every,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse(&["s", "--stats", "2"]).unwrap().stats_every,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(parse(&["s", "-p", "99999"]).is_err());
        assert!(parse(&["s", "--bind", "nowhere"]).is_err());
        assert!(parse(&["s", "--fps", "0"]).unwrap_err().contains("--fps"));
        assert!(parse(&["s", "--auth", "nocolon"]).unwrap_err().contains("USER:PASS"));
        assert!(parse(&["s", "--pattern", "--input", "x"]).unwrap_err().contains("one of"));
        assert!(parse(&["s", "--exec", "cam", "--input", "x"]).unwrap_err().contains("one of"));
        assert!(parse(&["s", "--on-demand"]).unwrap_err().contains("needs --exec"));
        assert!(parse(&["s", "--input", "https://x/"]).unwrap_err().contains("only http://"));
        let relay = parse(&["s", "--on-demand", "--input", "http://pi:8554/video.mjpg"]).unwrap();
        assert!(
            matches!(relay.source, SourceSpec::Http(ref u) if u.host == "pi" && u.port == 8554)
        );
        // Once an overflow of the clock: every interval has a ceiling.
        let huge = "18446744073709551615";
        assert!(parse(&["s", "--stats", huge]).unwrap_err().contains("--stats"));
        assert!(parse(&["s", "--client-timeout", huge]).unwrap_err().contains("--client-timeout"));
        assert!(parse(&["s", "--request-timeout", "0"]).unwrap_err().contains("out of range"));
        assert!(parse(&["s", "-d", huge]).unwrap_err().contains("--delay"));
    }

    #[test]
    fn exec_and_its_timings() {
        let c = parse(&["s", "--exec", "rpicam-vid -o -", "--on-demand", "--linger", "4"]).unwrap();
        assert_eq!(c.source, SourceSpec::Exec("rpicam-vid -o -".into()));
        assert_eq!(c.linger, Some(Duration::from_secs(4)));
        assert_eq!(
            (c.source_timeout, c.kill_timeout),
            (Duration::from_secs(5), Duration::from_secs(3))
        );
        assert_eq!(parse(&["s", "--exec", "cam"]).unwrap().linger, None);
    }

    #[test]
    fn auth_becomes_the_header_value() {
        let c = parse(&["s", "--auth", "Aladdin:open sesame"]).unwrap();
        assert_eq!(c.credentials.as_deref(), Some("QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
