//! The timed closed loop: N writer tasks run operations back to back through a warm-up and then
//! a measured window; the latencies of the operations that finish inside the measured window are
//! kept.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What a run produced.
pub struct Outcome {
    /// Latencies of the operations that finished inside the measured window, sorted.
    pub latencies: Vec<Duration>,
}

/// Runs `writers` tasks; task `i` calls `op(i)` repeatedly until the measured window closes.
/// Any error from an operation stops every task and is returned.
pub async fn run<Op, Fut>(
    writers: usize,
    warmup: Duration,
    measured: Duration,
    op: Op,
) -> Result<Outcome, String>
where
    Op: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + measured;

    let mut tasks = Vec::with_capacity(writers);
    for writer in 0..writers {
        let op = op.clone();
        let failed = Arc::clone(&failed);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let began = Instant::now();
                if began >= window_end {
                    break;
                }
                if let Err(err) = op(writer).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(format!("writer {writer}: {err}"));
                }
                let finished = Instant::now();
                if finished >= window_start && finished <= window_end {
                    latencies.push(finished - began);
                }
            }
            Ok(latencies)
        }));
    }

    let mut all = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(latencies)) => all.extend(latencies),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(join) => {
                first_error.get_or_insert(format!("writer task failed: {join}"));
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    all.sort_unstable();
    Ok(Outcome { latencies: all })
}

/// Nearest-rank percentile of sorted samples (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
