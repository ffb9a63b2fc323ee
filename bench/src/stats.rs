//! Figures of one measurement: rate over the measured window and latency percentiles, plus the
//! ratio against a raw baseline.

use std::time::Duration;

use serde::Serialize;

/// What one measurement produced.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Operations completed inside the measured window (warm-up excluded).
    pub ops: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// `ops / seconds`.
    pub per_sec: f64,
    pub latency: Latency,
}

/// Latency of the operations completed inside the measured window, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Measurement {
    /// Summarises the latencies of `window`'s operations (in any order).
    pub fn new(mut latencies: Vec<Duration>, window: Duration) -> Measurement {
        latencies.sort_unstable();
        let ops = latencies.len() as u64;
        let seconds = window.as_secs_f64();
        Measurement {
            ops,
            seconds,
            per_sec: if seconds > 0.0 {
                round(ops as f64 / seconds, 1)
            } else {
                0.0
            },
            latency: Latency {
                p50_ms: ms(percentile(&latencies, 50.0)),
                p99_ms: ms(percentile(&latencies, 99.0)),
                max_ms: ms(latencies.last().copied().unwrap_or_default()),
            },
        }
    }
}

/// Nearest-rank percentile of sorted samples (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles of a set of samples that are not tied to a timed window (for example the
/// end-to-end lag of every event of a run), in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises `samples` (in any order).
    pub fn new(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort_unstable();
        Percentiles {
            samples: samples.len() as u64,
            p50_ms: ms(percentile(&samples, 50.0)),
            p95_ms: ms(percentile(&samples, 95.0)),
            p99_ms: ms(percentile(&samples, 99.0)),
            max_ms: ms(samples.last().copied().unwrap_or_default()),
        }
    }
}

/// Fixed work timed from start to end: `count` items in `elapsed`.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub events: u64,
    pub seconds: f64,
    pub per_sec: f64,
}

impl Throughput {
    pub fn new(events: u64, elapsed: Duration) -> Throughput {
        let seconds = elapsed.as_secs_f64();
        Throughput {
            events,
            seconds: round(seconds, 6),
            per_sec: if seconds > 0.0 {
                round(events as f64 / seconds, 1)
            } else {
                0.0
            },
        }
    }
}

/// `measured / raw`, or `None` when the raw baseline did nothing.
pub fn ratio(measured: f64, raw: f64) -> Option<f64> {
    (raw > 0.0).then(|| round(measured / raw, 3))
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 3)
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Prints the header and the "raw" and measured rows of a throughput comparison:
/// `backend  path  events  seconds  events/s  <measured>/raw`.
pub fn print_throughput_table<'a>(
    measured: &str,
    rows: impl IntoIterator<Item = (&'a str, &'a Throughput, &'a Throughput, Option<f64>)>,
) {
    let width = measured.len().max(4);
    println!(
        "{:<9} {:<width$} {:>9} {:>9} {:>12}  {:>9}",
        "backend",
        "path",
        "events",
        "seconds",
        "events/s",
        format!("{measured}/raw")
    );
    for (backend, raw, value, vs) in rows {
        let vs = vs
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "n/a".to_owned());
        for (path, t, vs) in [("raw", raw, String::new()), (measured, value, vs)] {
            println!(
                "{:<9} {:<width$} {:>9} {:>9.3} {:>12.0}  {:>9}",
                backend, path, t.events, t.seconds, t.per_sec, vs
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_samples(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = ms_samples(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(5));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(10));
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn measurement_rate_and_ratio() {
        let m = Measurement::new(ms_samples(&[3, 1, 2, 4]), Duration::from_secs(2));
        assert_eq!(m.ops, 4);
        assert_eq!(m.per_sec, 2.0);
        assert_eq!(m.latency.max_ms, 4.0);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
    }

    #[test]
    fn percentiles_and_throughput() {
        let p = Percentiles::new(ms_samples(&(1..=100).rev().collect::<Vec<_>>()));
        assert_eq!(p.samples, 100);
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        let t = Throughput::new(500, Duration::from_millis(250));
        assert_eq!(t.per_sec, 2000.0);
        assert_eq!(Throughput::new(5, Duration::ZERO).per_sec, 0.0);
    }
}
