use argh::FromArgs;
use raspivid_mjpeg_server::cli::{self, Args};
use raspivid_mjpeg_server::{input, server};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = cli::normalize(std::env::args().collect());
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = strs.first().copied().unwrap_or("raspivid_mjpeg_server");
    let parsed = match Args::from_args(&[name], strs.get(1..).unwrap_or_default()) {
        Ok(parsed) => parsed,
        Err(early) => {
            // --help is an early exit too, with status Ok.
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("error: {}", early.output.trim_end());
                    ExitCode::from(2)
                }
            };
        }
    };
    let config = match parsed.into_config(std::io::stdin().is_terminal()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: cli::Config) -> std::io::Result<()> {
    let (listener, addr) = server::listen(&config)?;
    let (input, what) = input::open(&config.source, config.fps)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open the input: {e}")))?;
    eprintln!("streaming {what} on http://{addr}/video.mjpg");
    let mut server = server::Server::new(config, listener, input)?;
    let result = server.run();
    eprintln!("{}", server.report());
    result
}
