/*!
Counters and the latency histogram, and the three ways they are shown: the
`--stats` line, the `/stats` JSON and the percentile distribution at exit.
*/

use crate::source::Described;
use crate::splitter::Counters;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The histogram covers 1 µs to one minute, at three significant digits: a
/// frame older than that is a dead client, not a latency.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

pub struct Stats {
    pub started: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Frames sent whole, summed over clients.
    pub frames_out: u64,
    /// Frames a viewer skipped to take a newer one (or its connection ended).
    pub frames_skipped: u64,
    /// Of those, frames skipped because the viewer's application read
    /// slower than the camera wrote.
    pub frames_skipped_reading: u64,
    /// Frames live viewers have not taken and never will, as of the last
    /// [`Stats::refresh`]; they join `frames_skipped` as viewers move on.
    skipped_pending: u64,
    pub clients_total: u64,
    /// Connections refused with 503 because `--max-clients` were connected.
    pub clients_refused: u64,
    /// Clients closed for sending no request, or taking no data, in time.
    pub clients_timed_out: u64,
    /// Clients closed because the frames clients held reached
    /// `--max-held-bytes`.
    pub clients_evicted: u64,
    /// Times the listener rested because file descriptors ran out.
    pub accept_pauses: u64,
    /// Time from the read that completed a frame to the write that finished
    /// it, per client and frame, in µs: since start, and since the last line.
    pub latency: Histogram<u64>,
    interval: Histogram<u64>,
    /// Frames in and out at the last one-second tick, for the rates.
    tick: Tick,
    pub fps_in: f64,
    pub fps_out: f64,
}

#[derive(Clone, Copy)]
struct Tick {
    at: Instant,
    frames_in: u64,
    frames_out: u64,
}

impl Stats {
    pub fn new(now: Instant) -> Stats {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                .expect("constant histogram bounds are valid")
        };
        Stats {
            started: now,
            bytes_in: 0,
            bytes_out: 0,
            frames_out: 0,
            frames_skipped: 0,
            frames_skipped_reading: 0,
            skipped_pending: 0,
            clients_total: 0,
            clients_refused: 0,
            clients_timed_out: 0,
            clients_evicted: 0,
            accept_pauses: 0,
            latency: histogram(),
            interval: histogram(),
            tick: Tick { at: now, frames_in: 0, frames_out: 0 },
            fps_in: 0.0,
            fps_out: 0.0,
        }
    }

    /// Records one client receiving the whole of a frame, and the frame's
    /// latency where it measures delivery.
    pub fn delivered(&mut self, latency: Option<Duration>) {
        self.frames_out += 1;
        if let Some(latency) = latency {
            let micros = latency.as_micros() as u64;
            self.latency.saturating_record(micros);
            self.interval.saturating_record(micros);
        }
    }

    /// Takes figures kept elsewhere, before they are shown.
    pub fn refresh(&mut self, bytes_in: u64, skipped_pending: u64) {
        self.bytes_in = bytes_in;
        self.skipped_pending = skipped_pending;
    }

    /// Frames skipped, by viewers gone and by viewers still watching.
    pub fn skipped(&self) -> u64 {
        self.frames_skipped + self.skipped_pending
    }

    /// Updates the rates; called about once a second.
    pub fn tick(&mut self, now: Instant, frames_in: u64) {
        let secs = now.duration_since(self.tick.at).as_secs_f64();
        if secs > 0.0 {
            self.fps_in = (frames_in - self.tick.frames_in) as f64 / secs;
            self.fps_out = (self.frames_out - self.tick.frames_out) as f64 / secs;
        }
        self.tick = Tick { at: now, frames_in, frames_out: self.frames_out };
    }

    /// The `--stats` line; starts a new interval.
    /// A camera or relay's state follows, with why it is down and its
    /// restarts.
    pub fn line(&mut self, clients: usize, source: &Described) -> String {
        let h = &self.interval;
        let mut line = format!(
            "stats: fps in {:.1} out {:.1}, clients {clients}, skipped {}, latency p50 {} p99 {} max {} (µs)",
            self.fps_in,
            self.fps_out,
            self.skipped(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
        );
        if matches!(source.kind, "exec" | "relay") {
            let _ = write!(line, ", {} {}", source.kind, source.state);
            if let Some(reason) = source.reason {
                let _ = write!(line, " ({reason})");
            }
            let _ = write!(line, ", restarts {}", source.restarts);
        }
        self.interval.reset();
        line
    }

    /// Every figure once, with its `/stats` key and its Prometheus name:
    /// the one table both documents are made from.
    fn table(&self, f: &Figures) -> Vec<Row> {
        use Kind::{Counter, Gauge};
        use Value::{Float, Int};
        let c = f.input;
        let source_up = u64::from(f.source.state == "online");
        let age = f.source.last_frame.map(|t| f.now.duration_since(t).as_secs_f64());
        vec![
            row(
                "uptime_s",
                "uptime_seconds",
                "Seconds since the server started.",
                Gauge,
                Float(f.now.duration_since(self.started).as_secs_f64(), 3),
            ),
            row(
                "frames_in",
                "input_frames_total",
                "JPEG frames cut from the input.",
                Counter,
                Int(c.frames),
            ),
            row("fps_in", "", "", Gauge, Float(self.fps_in, 1)),
            row("fps_out", "", "", Gauge, Float(self.fps_out, 1)),
            row(
                "bytes_in",
                "input_bytes_total",
                "Bytes read from the input.",
                Counter,
                Int(self.bytes_in),
            ),
            row(
                "bytes_out",
                "sent_bytes_total",
                "Bytes written to clients.",
                Counter,
                Int(self.bytes_out),
            ),
            row("clients", "clients", "Clients connected.", Gauge, Int(f.clients as u64)),
            row(
                "streaming",
                "viewers",
                "Clients receiving the stream.",
                Gauge,
                Int(f.viewers as u64),
            ),
            row(
                "clients_total",
                "connections_total",
                "Connections accepted.",
                Counter,
                Int(self.clients_total),
            ),
            row(
                "clients_refused",
                "connections_refused_total",
                "Connections refused with 503 past --max-clients.",
                Counter,
                Int(self.clients_refused),
            ),
            row(
                "clients_timed_out",
                "clients_timed_out_total",
                "Clients closed for sending no request or taking no data in time.",
                Counter,
                Int(self.clients_timed_out),
            ),
            row(
                "clients_evicted",
                "clients_evicted_total",
                "Clients closed because the frames clients held reached --max-held-bytes.",
                Counter,
                Int(self.clients_evicted),
            ),
            row(
                "held_frame_bytes",
                "held_frame_bytes",
                "Bytes of distinct frames clients hold while they send them.",
                Gauge,
                Int(f.held_bytes as u64),
            ),
            row(
                "accept_pauses",
                "accept_pauses_total",
                "Times accepting rested because file descriptors ran out.",
                Counter,
                Int(self.accept_pauses),
            ),
            row(
                "frames_out",
                "sent_frames_total",
                "Frames sent whole, summed over viewers.",
                Counter,
                Int(self.frames_out),
            ),
            row(
                "frames_skipped",
                "skipped_frames_total",
                "Frames a viewer skipped to take a newer one.",
                Counter,
                Int(self.skipped()),
            ),
            row(
                "frames_skipped_reading",
                "skipped_frames_slow_reader_total",
                "Frames a viewer skipped because its application read slower than the camera wrote.",
                Counter,
                Int(self.frames_skipped_reading),
            ),
            row(
                "garbage_bytes",
                "input_garbage_bytes_total",
                "Input bytes outside any JPEG frame.",
                Counter,
                Int(c.garbage_bytes),
            ),
            row(
                "broken_frames",
                "input_dropped_frames_total{reason=\"broken\"}",
                "Input frames dropped, by reason.",
                Counter,
                Int(c.broken_frames),
            ),
            row(
                "oversize_frames",
                "input_dropped_frames_total{reason=\"oversize\"}",
                "Input frames dropped, by reason.",
                Counter,
                Int(c.oversize_frames),
            ),
            row(
                "log_lines_dropped",
                "log_lines_dropped_total",
                "Log lines dropped because stderr was not being read.",
                Counter,
                Int(f.log_dropped),
            ),
            row("", "source_up", "1 while the source sends frames.", Gauge, Int(source_up)),
            row(
                "",
                "source_restarts_total",
                "Times the camera was started again.",
                Counter,
                Int(f.source.restarts),
            ),
            row(
                "",
                "source_last_frame_age_seconds",
                "Seconds since the source's last frame.",
                Gauge,
                Float(age.unwrap_or(f64::NAN), 3),
            ),
        ]
    }

    /// The `/stats` document; `viewers` is a JSON array of per-viewer figures.
    pub fn json(&self, f: &Figures, viewers: &str) -> String {
        let h = &self.latency;
        let mut out = String::with_capacity(1024);
        out.push('{');
        for r in self.table(f).iter().filter(|r| !r.json.is_empty()) {
            let _ = write!(out, "\"{}\":{},", r.json, r.value);
        }
        let _ = write!(
            out,
            "\"latency_us\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\
             \"source\":{},\"viewers\":{viewers}}}",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            source_json(f.source, f.now),
        );
        out
    }

    /// The Prometheus text exposition (version 0.0.4) of the same table,
    /// the delivery latency as a histogram in seconds, the source's state
    /// as one series per state, and the build.
    pub fn metrics(&self, f: &Figures) -> String {
        let mut out = String::with_capacity(4096);
        let mut last = "";
        for r in self.table(f).iter().filter(|r| !r.metric.is_empty()) {
            let name = r.metric.split('{').next().unwrap_or(r.metric);
            if name != last {
                let kind = match r.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ =
                    write!(out, "# HELP {PREFIX}{name} {}\n# TYPE {PREFIX}{name} {kind}\n", r.help);
                last = name;
            }
            let _ = writeln!(out, "{PREFIX}{} {}", r.metric, r.value.prometheus());
        }
        let name = format!("{PREFIX}source_state");
        let _ = write!(
            out,
            "# HELP {name} The source's state: 1 for the one it is in.\n# TYPE {name} gauge\n"
        );
        for state in ["starting", "online", "offline", "stopped"] {
            let _ =
                writeln!(out, "{name}{{state=\"{state}\"}} {}", u8::from(f.source.state == state));
        }
        let name = format!("{PREFIX}delivery_latency_seconds");
        let _ = write!(
            out,
            "# HELP {name} Time from the read that completed a frame to the write that finished it, per viewer and frame.\n\
             # TYPE {name} histogram\n"
        );
        let h = &self.latency;
        for bound in LATENCY_BUCKETS {
            let micros = (bound * 1e6) as u64;
            let count = if h.is_empty() { 0 } else { h.count_between(0, micros) };
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let sum = h.mean() * h.len() as f64 / 1e6;
        let _ = write!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {len}\n{name}_sum {sum}\n{name}_count {len}\n",
            len = h.len()
        );
        let name = format!("{PREFIX}build_info");
        let _ = write!(
            out,
            "# HELP {name} The version running.\n# TYPE {name} gauge\n{name}{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        out
    }

    /// One line for the end of the run.
    pub fn summary(&self, now: Instant, input: &Counters) -> String {
        format!(
            "done: {:.1} s, frames in {}, client-frames out {}, skipped {}, garbage bytes {}, \
             broken frames {}, oversize frames {}, clients {}",
            now.duration_since(self.started).as_secs_f64(),
            input.frames,
            self.frames_out,
            self.skipped(),
            input.garbage_bytes,
            input.broken_frames,
            input.oversize_frames,
            self.clients_total,
        )
    }
}

/// Every metric's name starts so.
const PREFIX: &str = "raspivid_mjpeg_server_";

/// Upper bounds of the latency histogram's buckets, in seconds: from what
/// loopback achieves (0.1 ms) to what a stalled link shows (seconds).
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The figures kept outside [`Stats`], gathered when shown.
pub struct Figures<'a> {
    pub now: Instant,
    pub input: &'a Counters,
    pub clients: usize,
    pub viewers: usize,
    /// Bytes of distinct frames clients hold.
    pub held_bytes: usize,
    pub source: &'a Described<'a>,
    pub log_dropped: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    /// With this many decimals in `/stats`.
    Float(f64, usize),
}

impl Value {
    fn prometheus(self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Float(x, _) if x.is_nan() => "NaN".into(),
            Value::Float(x, _) => x.to_string(),
        }
    }
}

impl std::fmt::Display for Value {
    /// As JSON: a number, or null for none.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match *self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x, _) if x.is_nan() => f.write_str("null"),
            Value::Float(x, decimals) => write!(f, "{x:.decimals$}"),
        }
    }
}

/// One figure: its `/stats` key (empty: not there), its metric name after
/// [`PREFIX`], with labels (empty: not there), help, kind and value.
struct Row {
    json: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: Kind,
    value: Value,
}

fn row(
    json: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: Kind,
    value: Value,
) -> Row {
    Row { json, metric, help, kind, value }
}

/// The source's kind, state, why it is down, its process, restarts, and
/// the age of its last frame, as a JSON object.
fn source_json(source: &Described, now: Instant) -> String {
    let optional = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    format!(
        "{{\"kind\":\"{}\",\"state\":\"{}\",\"reason\":{},\"pid\":{},\"restarts\":{},\
         \"last_frame_age_s\":{}}}",
        source.kind,
        source.state,
        optional(source.reason.map(json_string)),
        optional(source.pid.map(|p| p.to_string())),
        source.restarts,
        optional(source.last_frame.map(|t| format!("{:.3}", now.duration_since(t).as_secs_f64()))),
    )
}

/// `text` as a JSON string, quoted and escaped.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The latency distribution in HdrHistogram's percentile text format (values
/// in milliseconds), which its plotting tools read.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        return out;
    }
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / 1000.0;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_ends_at_the_max_with_every_sample() {
        let mut stats = Stats::new(Instant::now());
        for micros in [100, 200, 300, 400, 5000] {
            stats.delivered(Some(Duration::from_micros(micros)));
        }
        let text = percentile_distribution(&stats.latency);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        let last = text.lines().rfind(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(cols[0], "5.003");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "5");
        assert!(text.contains("Total count    =            5]"));
    }

    #[test]
    fn rates_and_json() {
        let t0 = Instant::now();
        let mut stats = Stats::new(t0);
        stats.delivered(Some(Duration::from_millis(1)));
        stats.tick(t0 + Duration::from_secs(2), 60);
        assert_eq!(stats.fps_in, 30.0);
        assert_eq!(stats.fps_out, 0.5);
        let counters = Counters { frames: 60, garbage_bytes: 7, ..Counters::default() };
        let source = Described {
            kind: "exec",
            state: "offline",
            reason: Some("camera \"x\" exited"),
            pid: None,
            restarts: 2,
            last_frame: Some(t0),
        };
        let figures = Figures {
            now: t0 + Duration::from_secs(2),
            input: &counters,
            clients: 3,
            viewers: 1,
            held_bytes: 0,
            source: &source,
            log_dropped: 0,
        };
        let json = stats.json(&figures, "[]");
        assert!(json.starts_with("{\"uptime_s\":2.000,\"frames_in\":60,\"fps_in\":30.0,"));
        assert!(json.contains("\"clients\":3,"));
        assert!(json.contains("\"garbage_bytes\":7,"));
        assert!(json.contains("\"latency_us\":{\"count\":1,\"p50\":1000,"));
        assert!(json.contains(
            "\"source\":{\"kind\":\"exec\",\"state\":\"offline\",\"reason\":\"camera \\\"x\\\" exited\",\
             \"pid\":null,\"restarts\":2,\"last_frame_age_s\":2.000}"
        ), "{json}");
        assert!(json.ends_with("},\"viewers\":[]}"));
        assert_eq!(json_string("a\nb\\"), "\"a\\u000ab\\\\\"");
        let line = stats.line(3, &source);
        assert!(line.ends_with(", exec offline (camera \"x\" exited), restarts 2"), "{line}");
        let metrics = stats.metrics(&figures);
        for line in [
            "# TYPE raspivid_mjpeg_server_input_frames_total counter\n",
            "raspivid_mjpeg_server_input_frames_total 60\n",
            "raspivid_mjpeg_server_input_dropped_frames_total{reason=\"broken\"} 0\n",
            "raspivid_mjpeg_server_source_state{state=\"offline\"} 1\n",
            "raspivid_mjpeg_server_source_up 0\n",
            "raspivid_mjpeg_server_delivery_latency_seconds_bucket{le=\"0.0005\"} 0\n",
            "raspivid_mjpeg_server_delivery_latency_seconds_bucket{le=\"0.001\"} 1\n",
            "raspivid_mjpeg_server_delivery_latency_seconds_count 1\n",
            "raspivid_mjpeg_server_build_info{version=",
        ] {
            assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
        }
        // HELP and TYPE once per name, even with several labelled series.
        assert_eq!(
            metrics.matches("# TYPE raspivid_mjpeg_server_input_dropped_frames_total").count(),
            1
        );
    }
}
