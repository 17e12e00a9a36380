/*!
What `watch` prints at the end: a summary for people, or one JSON line for scripts.
*/

use std::fmt::Write as _;

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Reading clients asked for.
    pub clients: usize,
    /// Stalled clients asked for, and how many had sent their request at the end.
    pub stalled: usize,
    pub stalled_open: usize,
    /// Reading clients that got a stream at least once.
    pub connected: usize,
    /// Connection attempts that did not get a stream.
    pub failed: u64,
    /// Streams that the server ended.
    pub closed: u64,
    /// Well-formed frames received in the measured window.
    pub frames: u64,
    /// Frames a second of each reading client in the measured window.
    pub fps: Vec<f64>,
    /// Sequence numbers missing between consecutive frames of a client.
    pub skipped: u64,
    /// Frames whose sequence number was not above the previous one.
    pub backwards: u64,
    /// Parts that were no well-formed JPEG, over the whole run.
    pub corrupt: u64,
    /// Well-formed frames without the probe tag.
    pub untagged: u64,
    /// Bytes received over the whole run.
    pub bytes: u64,
    pub latency: Option<Latency>,
    /// Length of the measured window, after the warm-up.
    pub seconds: f64,
    pub warmup: f64,
    /// Why the last failed attempt failed, to tell the user what is wrong.
    pub last_failure: Option<String>,
    /// Why the last corrupt part was corrupt.
    pub last_corrupt: Option<String>,
}

/// Minimum, median and maximum, or `None` for no values.
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some((sorted[0], median, sorted[n - 1]))
}

/// Nearest-rank quantile of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub(crate) fn number(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".to_owned(),
    }
}

impl Report {
    pub fn json(&self) -> String {
        let fps = spread(&self.fps);
        let ms = |pick: fn(&Latency) -> f64| number(self.latency.as_ref().map(pick), 3);
        format!(
            "{{\"clients\":{},\"stalled\":{},\"connected\":{},\"failed\":{},\"closed\":{},\"frames\":{},\
             \"fps_min\":{},\"fps_median\":{},\"fps_max\":{},\"skipped\":{},\"corrupt\":{},\"untagged\":{},\
             \"bytes\":{},\"p50_ms\":{},\"p90_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"seconds\":{}}}",
            self.clients,
            self.stalled,
            self.connected,
            self.failed,
            self.closed,
            self.frames,
            number(fps.map(|f| f.0), 2),
            number(fps.map(|f| f.1), 2),
            number(fps.map(|f| f.2), 2),
            self.skipped,
            self.corrupt,
            self.untagged,
            self.bytes,
            ms(|l| l.p50),
            ms(|l| l.p90),
            ms(|l| l.p99),
            ms(|l| l.p999),
            ms(|l| l.max),
            number(Some(self.seconds), 3),
        )
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "clients      {} reading, {} connected; {} stalled, {} holding a request open",
            self.clients, self.connected, self.stalled, self.stalled_open
        );
        let _ = write!(
            out,
            "connections  {} failed, {} closed by the server",
            self.failed, self.closed
        );
        match &self.last_failure {
            Some(why) => {
                let _ = writeln!(out, " (last failure: {why})");
            }
            None => out.push('\n'),
        }
        if let Some((min, median, max)) = spread(&self.fps) {
            let _ = writeln!(out, "fps/client   min {min:.2}  median {median:.2}  max {max:.2}");
        }
        let _ = writeln!(
            out,
            "frames       {}  skipped by the server {}  out of order {}  untagged {}",
            self.frames, self.skipped, self.backwards, self.untagged
        );
        let _ = write!(out, "corrupt      {} in the whole run", self.corrupt);
        match &self.last_corrupt {
            Some(why) => {
                let _ = writeln!(out, " (last: {why})");
            }
            None => out.push('\n'),
        }
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.samples
                );
            }
            None => out.push_str("latency ms   no samples\n"),
        }
        let _ =
            writeln!(out, "received     {} bytes ({:.1} MB)", self.bytes, self.bytes as f64 / 1e6);
        let _ = writeln!(
            out,
            "measured     {:.3} s after a {:.3} s warm-up",
            self.seconds, self.warmup
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_even_and_no_values() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn json_has_every_key_once_and_nulls_for_missing_values() {
        let report =
            Report { clients: 2, fps: vec![29.5, 30.0], seconds: 9.0, ..Report::default() };
        assert_eq!(
            report.json(),
            "{\"clients\":2,\"stalled\":0,\"connected\":0,\"failed\":0,\"closed\":0,\"frames\":0,\
             \"fps_min\":29.50,\"fps_median\":29.75,\"fps_max\":30.00,\"skipped\":0,\"corrupt\":0,\"untagged\":0,\
             \"bytes\":0,\"p50_ms\":null,\"p90_ms\":null,\"p99_ms\":null,\"p999_ms\":null,\"max_ms\":null,\
             \"seconds\":9.000}"
        );
        let latency = Latency { p50: 1.0, p90: 2.0, p99: 3.0, p999: 4.0, max: 5.5, samples: 10 };
        let report = Report { latency: Some(latency), ..Report::default() };
        let json = report.json();
        assert!(json.contains("\"fps_min\":null,"));
        assert!(json.contains("\"p50_ms\":1.000,\"p90_ms\":2.000,\"p99_ms\":3.000,\"p999_ms\":4.000,\"max_ms\":5.500,"));
    }

    #[test]
    fn human_summary_names_what_went_wrong() {
        let report = Report {
            failed: 3,
            last_failure: Some("status 404, not 200".into()),
            corrupt: 1,
            last_corrupt: Some("ends before its EOI".into()),
            ..Report::default()
        };
        let text = report.human();
        assert!(
            text.contains("3 failed, 0 closed by the server (last failure: status 404, not 200)\n")
        );
        assert!(text.contains("corrupt      1 in the whole run (last: ends before its EOI)\n"));
        assert!(text.contains("latency ms   no samples\n"));
        assert!(!text.contains("fps/client"));
    }
}
