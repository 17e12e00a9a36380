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
    /// Frames live viewers have not taken and never will, as of the last
    /// [`Stats::refresh`]; they join `frames_skipped` as viewers move on.
    skipped_pending: u64,
    pub clients_total: u64,
    /// Connections refused with 503 because `--max-clients` were connected.
    pub clients_refused: u64,
    /// Clients closed for sending no request, or taking no data, in time.
    pub clients_timed_out: u64,
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
            skipped_pending: 0,
            clients_total: 0,
            clients_refused: 0,
            clients_timed_out: 0,
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
    pub fn line(&mut self, clients: usize) -> String {
        let h = &self.interval;
        let line = format!(
            "stats: fps in {:.1} out {:.1}, clients {clients}, skipped {}, latency p50 {} p99 {} max {} (µs)",
            self.fps_in,
            self.fps_out,
            self.skipped(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
        );
        self.interval.reset();
        line
    }

    /// The `/stats` document; `viewers` is a JSON array of per-viewer figures.
    pub fn json(
        &self,
        now: Instant,
        input: &Counters,
        clients: usize,
        viewers: &str,
        source: &Described,
    ) -> String {
        let h = &self.latency;
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            "{{\"uptime_s\":{:.3},\"frames_in\":{},\"fps_in\":{:.1},\"fps_out\":{:.1},\
             \"bytes_in\":{},\"bytes_out\":{},\"clients\":{clients},\"clients_total\":{},\
             \"clients_refused\":{},\"clients_timed_out\":{},\"accept_pauses\":{},\"frames_out\":{},\
             \"frames_skipped\":{},\"garbage_bytes\":{},\"broken_frames\":{},\"oversize_frames\":{},\
             \"latency_us\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\
             \"source\":{},\"viewers\":{viewers}}}",
            now.duration_since(self.started).as_secs_f64(),
            input.frames,
            self.fps_in,
            self.fps_out,
            self.bytes_in,
            self.bytes_out,
            self.clients_total,
            self.clients_refused,
            self.clients_timed_out,
            self.accept_pauses,
            self.frames_out,
            self.skipped(),
            input.garbage_bytes,
            input.broken_frames,
            input.oversize_frames,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            source_json(source, now),
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
        let json = stats.json(t0 + Duration::from_secs(2), &counters, 3, "[]", &source);
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
    }
}
