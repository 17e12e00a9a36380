/*!
`mjpeg-probe glass URL`: glass-to-glass latency without a browser.

A camera films the clock that `/latency` draws (or ffmpeg's x11grab grabs
the screen it is on); this reads the clock back out of every frame of the
stream and subtracts it from the time the frame arrived. The page draws
`Date.now()`, so the arrival time is taken on CLOCK_REALTIME: the page and
the probe must share one machine's clock (the page's screen, filmed, and
the probe on the same computer).

One thread reads the stream and notes each frame's arrival right after the
`read` that completed it (the first frame of a connection, which a server
sends at once however old it is, is left out); another decodes (zune-jpeg, luminance only) and
reads the code ([`crate::clockface`]), so decoding never delays the next
arrival time. With `--tee LOG` (from `mjpeg-probe tee` in front of the
server), each frame is also matched by its content key with the moment its
last byte entered the server's pipe: the server's own share.

Given a file instead of a URL, it reads each JPEG in it (concatenated, as
`ffmpeg -f mjpeg` writes) and prints what it found, for checking a
recording.
*/

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::clock::realtime_ns;
use crate::clockface::{self, Luma, Miss};
use crate::multipart::{self, Multipart};
use crate::report::{number, quantile, spread};
use crate::{jpeg, tee, watch, Fatal};
use raspivid_mjpeg_server::upstream::Url;
use raspivid_mjpeg_server::upstream::{self as http, Dechunker};

const MAX_PART: usize = 16 << 20;
const RETRY: Duration = Duration::from_millis(100);
/// A reading further than this from the arrival time (either way) is not
/// this machine's clock: a misread, or a clock from elsewhere.
const PLAUSIBLE_MS: f64 = 60_000.0;

pub struct Options {
    pub url: Url,
    pub seconds: f64,
    pub warmup: f64,
    pub tee: Option<PathBuf>,
    pub timeline: Option<PathBuf>,
}

/// A frame as it arrived.
struct Arrival {
    unix_ns: u64,
    jpeg: Vec<u8>,
    /// The first frame of a connection: servers send a new viewer the
    /// latest frame at once, however old, so it measures nothing live.
    joining: bool,
}

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Read { value: u32, latency_ms: f64, module: f64 },
    NotFound,
    Unreadable,
    Implausible,
    Undecodable,
}

struct Frame {
    unix_ns: u64,
    key: u64,
    outcome: Outcome,
    /// Decoding and reading, in ms.
    work_ms: f64,
}

/// What the reading thread saw of the connection.
#[derive(Default)]
struct Link {
    connected: bool,
    closed: u64,
    bytes: u64,
    last_error: Option<String>,
}

/// The latency of a frame that arrived at `unix_ns` showing clock `value`
/// (Unix ms modulo 2^32).
pub fn latency_ms(unix_ns: u64, value: u32) -> f64 {
    let ms = unix_ns / 1_000_000;
    let whole = (ms as u32).wrapping_sub(value) as i32;
    f64::from(whole) + (unix_ns % 1_000_000) as f64 / 1e6
}

/// Decodes a JPEG to its luminance: width, height, pixels.
pub fn decode_luma(data: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = decoder.decode().map_err(|e| format!("{e:?}"))?;
    let info = decoder.info().ok_or("no image information")?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    if pixels.len() < w * h {
        return Err(format!("{} bytes for {w}x{h}", pixels.len()));
    }
    Ok((w, h, pixels))
}

/// Reads one frame, trying first where the code was last time.
fn examine(jpeg: &[u8], unix_ns: Option<u64>, hint: &mut Option<[(f64, f64); 4]>) -> Outcome {
    let Ok((width, height, pixels)) = decode_luma(jpeg) else {
        return Outcome::Undecodable;
    };
    let img = Luma { width, height, pixels: &pixels };
    match clockface::read(&img, *hint) {
        Ok(reading) => {
            *hint = Some(reading.corners);
            let latency_ms = unix_ns.map_or(0.0, |t| latency_ms(t, reading.value));
            if latency_ms.abs() > PLAUSIBLE_MS {
                return Outcome::Implausible;
            }
            Outcome::Read { value: reading.value, latency_ms, module: reading.module }
        }
        Err(Miss::NotFound) => Outcome::NotFound,
        Err(Miss::Unreadable) => Outcome::Unreadable,
    }
}

fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut why = "no address".to_owned();
    for addr in addrs {
        match TcpStream::connect_timeout(addr, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            Err(e) => why = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(why)
}

/// Reads the stream until `end`, reconnecting when it ends, and hands on
/// every part with its arrival time.
fn read_stream(url: &Url, end: Instant, tx: &mpsc::Sender<Arrival>, link: &mut Link) {
    let addrs = match crate::resolve(url) {
        Ok(addrs) => addrs,
        Err(e) => {
            link.last_error = Some(format!("{}: {e}", url.host));
            return;
        }
    };
    let request = url.request("mjpeg-probe");
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < end {
        let mut stream = match connect(&addrs) {
            Ok(s) => s,
            Err(e) => {
                link.last_error = Some(e);
                std::thread::sleep(RETRY);
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(RETRY));
        if let Err(e) = stream.write_all(&request) {
            link.last_error = Some(format!("request: {e}"));
            continue;
        }
        let mut head = Vec::new();
        let mut body: Option<(Multipart, Option<Dechunker>)> = None;
        let mut joining = true;
        loop {
            if Instant::now() >= end {
                return;
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    link.last_error = Some(format!("read: {e}"));
                    break;
                }
            };
            let unix_ns = realtime_ns();
            link.bytes += n as u64;
            let mut data: Vec<u8>;
            let (parts, dechunk) = match &mut body {
                Some((parts, dechunk)) => {
                    data = buf[..n].to_vec();
                    (parts, dechunk)
                }
                None => {
                    head.extend_from_slice(&buf[..n]);
                    let parsed = match http::parse_head(&head) {
                        Ok(Some(parsed)) => parsed,
                        Ok(None) => continue,
                        Err(e) => {
                            link.last_error = Some(e.to_string());
                            std::thread::sleep(RETRY);
                            break;
                        }
                    };
                    let (parsed, len) = parsed;
                    let boundary = multipart::boundary(&head[..len]);
                    let Some(parts) = boundary.and_then(|b| Multipart::new(&b, MAX_PART)) else {
                        link.last_error = Some("no usable boundary".into());
                        break;
                    };
                    link.connected = true;
                    data = head.split_off(len);
                    let dechunk = parsed.chunked.then(Dechunker::default);
                    let (parts, dechunk) = body.insert((parts, dechunk));
                    (parts, dechunk)
                }
            };
            if let Some(d) = dechunk {
                match d.decode(&mut data) {
                    Ok(len) => data.truncate(len),
                    Err(e) => {
                        link.last_error = Some(e.to_string());
                        break;
                    }
                }
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                match parts.feed(rest) {
                    Ok(fed) => {
                        rest = &rest[fed.consumed..];
                        if fed.part {
                            let jpeg = parts.part().to_vec();
                            if tx.send(Arrival { unix_ns, jpeg, joining }).is_err() {
                                return;
                            }
                            joining = false;
                        }
                    }
                    Err(e) => {
                        link.last_error = Some(e.to_string());
                        rest = &[];
                    }
                }
            }
        }
        link.closed += 1;
        std::thread::sleep(RETRY);
    }
}

/// The server's share of each frame: its arrival minus the latest tee
/// entry with its key at or before that arrival.
fn pair(frames: &[Frame], log: &[tee::Entry]) -> Vec<Option<u64>> {
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for entry in log {
        by_key.entry(entry.key).or_default().push(entry.unix_ns);
    }
    frames
        .iter()
        .map(|f| {
            let times = by_key.get(&f.key)?;
            times.iter().copied().filter(|&t| t <= f.unix_ns).max()
        })
        .collect()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A figure in the reports: ms to the µs, or null.
fn num(v: Option<f64>) -> String {
    number(v, 3)
}

#[derive(Default)]
pub struct Report {
    pub frames: usize,
    pub latencies: Vec<f64>,
    pub not_found: usize,
    pub unreadable: usize,
    pub implausible: usize,
    pub undecodable: usize,
    pub work_ms: Vec<f64>,
    pub module_px: Option<f64>,
    pub tee: bool,
    pub server_ms: Vec<f64>,
    pub upstream_ms: Vec<f64>,
    pub seconds: f64,
    pub closed: u64,
    pub bytes: u64,
}

impl Report {
    pub fn invalid(&self) -> usize {
        self.not_found + self.unreadable + self.implausible + self.undecodable
    }

    pub fn json(&self) -> String {
        let l = &self.latencies;
        let s = &self.server_ms;
        let u = &self.upstream_ms;
        let tee = |v: Option<f64>| if self.tee { num(v) } else { "null".into() };
        format!(
            "{{\"frames\":{},\"count\":{},\"invalid\":{},\"not_found\":{},\"unreadable\":{},\
             \"implausible\":{},\"undecodable\":{},\"fps\":{},\"p50_ms\":{},\"p90_ms\":{},\
             \"p99_ms\":{},\"min_ms\":{},\"max_ms\":{},\"mean_ms\":{},\"module_px\":{},\
             \"decode_p50_ms\":{},\"paired\":{},\"server_p50_ms\":{},\"server_p90_ms\":{},\
             \"server_max_ms\":{},\"upstream_p50_ms\":{},\"upstream_p90_ms\":{},\
             \"closed\":{},\"bytes\":{},\"seconds\":{:.3}}}",
            self.frames,
            l.len(),
            self.invalid(),
            self.not_found,
            self.unreadable,
            self.implausible,
            self.undecodable,
            num(Some(self.frames as f64 / self.seconds)),
            num(quantile(l, 0.5)),
            num(quantile(l, 0.9)),
            num(quantile(l, 0.99)),
            num(l.first().copied()),
            num(l.last().copied()),
            num((!l.is_empty()).then(|| l.iter().sum::<f64>() / l.len() as f64)),
            num(self.module_px),
            num(quantile(&self.work_ms, 0.5)),
            if self.tee { s.len().to_string() } else { "null".into() },
            tee(quantile(s, 0.5)),
            tee(quantile(s, 0.9)),
            tee(s.last().copied()),
            tee(quantile(u, 0.5)),
            tee(quantile(u, 0.9)),
            self.closed,
            self.bytes,
            self.seconds,
        )
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "frames        {} in {:.3} s ({:.1}/s): {} read, {} not ({} no code found, {} unreadable, {} implausible, {} undecodable)",
            self.frames,
            self.seconds,
            self.frames as f64 / self.seconds,
            self.latencies.len(),
            self.invalid(),
            self.not_found,
            self.unreadable,
            self.implausible,
            self.undecodable
        );
        let l = &self.latencies;
        match spread(l) {
            Some((min, _, max)) => {
                let _ = writeln!(
                    out,
                    "glass ms      p50 {}  p90 {}  p99 {}  min {min:.3}  max {max:.3}",
                    num(quantile(l, 0.5)),
                    num(quantile(l, 0.9)),
                    num(quantile(l, 0.99))
                );
            }
            None => out.push_str("glass ms      no readings\n"),
        }
        let _ = writeln!(
            out,
            "code          {} px a module; decode and read p50 {} ms",
            num(self.module_px),
            num(quantile(&self.work_ms, 0.5))
        );
        if self.tee {
            let _ = writeln!(
                out,
                "tee           {} frames paired: server share ms p50 {}  p90 {}  max {}; clock to tee ms p50 {}  p90 {}",
                self.server_ms.len(),
                num(quantile(&self.server_ms, 0.5)),
                num(quantile(&self.server_ms, 0.9)),
                num(self.server_ms.last().copied()),
                num(quantile(&self.upstream_ms, 0.5)),
                num(quantile(&self.upstream_ms, 0.9))
            );
        }
        out
    }
}

pub fn run(options: &Options) -> Result<Report, Fatal> {
    // Wait for the server a little, as `watch` does.
    watch::find_server(&options.url)?;
    let start = Instant::now();
    let start_ns = realtime_ns();
    let warm_ns = start_ns + (options.warmup * 1e9) as u64;
    let end = start + Duration::from_secs_f64(options.seconds);
    let (tx, rx) = mpsc::channel::<Arrival>();
    let url = options.url.clone();
    let reader = std::thread::spawn(move || {
        let mut link = Link::default();
        read_stream(&url, end, &tx, &mut link);
        link
    });
    let mut frames = Vec::new();
    let mut hint = None;
    for arrival in rx {
        if arrival.unix_ns < warm_ns || arrival.joining {
            continue;
        }
        let t0 = Instant::now();
        let outcome = examine(&arrival.jpeg, Some(arrival.unix_ns), &mut hint);
        let work_ms = t0.elapsed().as_secs_f64() * 1e3;
        let key = jpeg::content_key(&arrival.jpeg);
        frames.push(Frame { unix_ns: arrival.unix_ns, key, outcome, work_ms });
    }
    let link = reader.join().map_err(|_| Fatal::runtime("the reading thread panicked".into()))?;
    if !link.connected {
        let why = link.last_error.unwrap_or_default();
        return Err(Fatal::usage(format!("no stream: {why}")));
    }
    let paired = match &options.tee {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Fatal::usage(format!("{}: {e}", path.display())))?;
            Some(pair(&frames, &tee::parse_log(&text)))
        }
    };
    let mut report = Report {
        frames: frames.len(),
        tee: paired.is_some(),
        seconds: options.seconds - options.warmup,
        closed: link.closed,
        bytes: link.bytes,
        ..Report::default()
    };
    let mut modules = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let tee_ns = paired.as_ref().and_then(|p| p[i]);
        if let Some(t) = tee_ns {
            report.server_ms.push((f.unix_ns as f64 - t as f64) / 1e6);
        }
        report.work_ms.push(f.work_ms);
        match f.outcome {
            Outcome::Read { value, latency_ms: ms, module } => {
                report.latencies.push(ms);
                modules.push(module);
                if let Some(t) = tee_ns {
                    report.upstream_ms.push(latency_ms(t, value));
                }
            }
            Outcome::NotFound => report.not_found += 1,
            Outcome::Unreadable => report.unreadable += 1,
            Outcome::Implausible => report.implausible += 1,
            Outcome::Undecodable => report.undecodable += 1,
        }
    }
    if let Some(path) = &options.timeline {
        write_timeline(path, &frames, paired.as_deref(), start_ns)?;
    }
    report.module_px = quantile(&sorted(modules), 0.5);
    report.latencies = sorted(report.latencies);
    report.work_ms = sorted(report.work_ms);
    report.server_ms = sorted(report.server_ms);
    report.upstream_ms = sorted(report.upstream_ms);
    Ok(report)
}

fn write_timeline(
    path: &PathBuf,
    frames: &[Frame],
    paired: Option<&[Option<u64>]>,
    start_ns: u64,
) -> Result<(), Fatal> {
    let mut out = String::from("t_s,outcome,clock_ms,latency_ms,server_ms\n");
    for (i, f) in frames.iter().enumerate() {
        let t = (f.unix_ns as f64 - start_ns as f64) / 1e9;
        let server = paired
            .and_then(|p| p[i])
            .map(|t| format!("{:.3}", (f.unix_ns as f64 - t as f64) / 1e6))
            .unwrap_or_default();
        let (outcome, clock, latency) = match f.outcome {
            Outcome::Read { value, latency_ms, .. } => {
                ("read", value.to_string(), format!("{latency_ms:.3}"))
            }
            Outcome::NotFound => ("not_found", String::new(), String::new()),
            Outcome::Unreadable => ("unreadable", String::new(), String::new()),
            Outcome::Implausible => ("implausible", String::new(), String::new()),
            Outcome::Undecodable => ("undecodable", String::new(), String::new()),
        };
        let _ = writeln!(out, "{t:.6},{outcome},{clock},{latency},{server}");
    }
    std::fs::write(path, out).map_err(|e| Fatal::runtime(format!("{}: {e}", path.display())))
}

/// Reads every JPEG of a file and prints what it shows, one line a frame.
pub fn read_file(path: &str) -> Result<(), Fatal> {
    let data = std::fs::read(path).map_err(|e| Fatal::usage(format!("{path}: {e}")))?;
    let mut at = 0;
    let mut hint = None;
    let mut n = 0;
    while at < data.len() {
        let Some(soi) = memchr::memmem::find(&data[at..], &[0xFF, 0xD8]) else { break };
        at += soi;
        let len = match jpeg::frame_len(&data[at..]) {
            Ok(len) => len,
            Err(e) => return Err(Fatal::runtime(format!("{path}: frame {n} at byte {at}: {e}"))),
        };
        let outcome = examine(&data[at..at + len], None, &mut hint);
        match outcome {
            Outcome::Read { value, module, .. } => {
                let corners = hint.unwrap_or_default();
                println!(
                    "frame {n}: clock {value} ({module:.1} px a module, finders at {})",
                    corners.map(|(x, y)| format!("{x:.0},{y:.0}")).join(" ")
                );
            }
            other => println!("frame {n}: {other:?}"),
        }
        n += 1;
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_wraps_with_the_clock() {
        let t = 1_732_000_000_123u64 * 1_000_000 + 400_000;
        let value = (1_732_000_000_100u64 % (1 << 32)) as u32;
        assert!((latency_ms(t, value) - 23.4).abs() < 1e-9);
        // Across a wrap of the low 32 bits.
        let t = (1u64 << 32) * 1_000_000 + 5_000_000;
        assert!((latency_ms(t, u32::MAX - 4) - 10.0).abs() < 1e-9);
        assert!((latency_ms(t, 10) + 5.0).abs() < 1e-9);
    }

    #[test]
    fn frames_pair_with_the_latest_tee_entry_before_them() {
        let frame = |unix_ns, key| Frame { unix_ns, key, outcome: Outcome::NotFound, work_ms: 0.0 };
        let log = [
            tee::Entry { unix_ns: 100, key: 1 },
            tee::Entry { unix_ns: 200, key: 2 },
            tee::Entry { unix_ns: 300, key: 1 },
        ];
        let frames = [frame(150, 1), frame(350, 1), frame(210, 2), frame(90, 2), frame(999, 7)];
        assert_eq!(pair(&frames, &log), vec![Some(100), Some(300), Some(200), None, None]);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = sorted(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.9), Some(5.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
