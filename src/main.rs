use argh::FromArgs;
use raspivid_mjpeg_server::cli::{self, Args};
use raspivid_mjpeg_server::source::Source;
use raspivid_mjpeg_server::supervisor::Timing;
use raspivid_mjpeg_server::{guard, input, limits, log, server, systemd};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long the final lines may take to reach stderr: a stderr nobody reads
/// must not keep the process from exiting.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    // The camera's guard is this binary again, and must begin before any
    // thread (the log's) does.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|flag| flag == guard::FLAG) {
        guard::run(&args[2..]);
    }
    log::start();
    let code = run_main();
    log::flush(FINAL_FLUSH);
    code
}

fn run_main() -> ExitCode {
    let args: Vec<String> = cli::normalize(std::env::args().collect());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = strs.first().copied().unwrap_or("raspivid_mjpeg_server");
    let parsed = match Args::from_args(&[name], strs.get(1..).unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(early) => {
            // --help is an early exit too, with status Ok. stdout may be a
            // closed pipe (`--help | head -1`): that is no error of ours.
            return match early.status {
                Ok(()) => {
                    let _ = writeln!(std::io::stdout(), "{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    log!("error: {}", early.output.trim_end());
                    ExitCode::from(2)
                }
            };
        }
    };
    if parsed.version {
        let _ = writeln!(std::io::stdout(), "{}", cli::version());
        return ExitCode::SUCCESS;
    }
    let config = match parsed.into_config(std::io::stdin().is_terminal()) {
        Ok(config) => config,
        Err(message) => {
            log!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: cli::Config) -> std::io::Result<()> {
    let room = limits::raise();
    if config.max_clients > room {
        log!(
            "warning: --max-clients {} lowered to {room}, all the open-files limit leaves for \
             clients (raise it with ulimit -n or LimitNOFILE=)",
            config.max_clients
        );
        config.max_clients = room;
    }
    config.max_connections = room;
    // Under systemd's socket activation the listener is passed in.
    let (listener, addr) = match systemd::listen_fd()? {
        Some(listener) => {
            let addr = listener.local_addr()?;
            (mio::net::TcpListener::from_std(listener), addr)
        }
        None => server::listen(&config)?,
    };
    let now = Instant::now();
    let timing = Timing {
        source_timeout: config.source_timeout,
        kill_timeout: config.kill_timeout,
        linger: config.linger,
    };
    let (source, description) = match &config.source {
        cli::SourceSpec::Exec(command) => {
            let source = Source::exec(command.clone(), timing, config.max_frame_bytes, now);
            let when = if config.linger.is_some() { ", started when watched" } else { "" };
            (source, format!("the camera `{command}`{when}"))
        }
        cli::SourceSpec::Http(url) => {
            let shown = url.shown();
            let source = Source::relay(url.clone(), timing, config.max_frame_bytes, now);
            let when = if config.linger.is_some() { ", connected when watched" } else { "" };
            (source, format!("a relay of {shown}{when}"))
        }
        spec => {
            let (opened, what) = input::open(spec, config.fps).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open the input: {e}"))
            })?;
            let source = Source::new(opened, what.name, config.max_frame_bytes);
            let source =
                if what.fifo { source.with_notices(config.source_timeout) } else { source };
            (source, what.description)
        }
    };
    let mut server = server::Server::new(config, listener, source)?;
    log!("streaming {description} on http://{addr}/video.mjpg");
    let result = server.run();
    log!("{}", server.report());
    result
}
