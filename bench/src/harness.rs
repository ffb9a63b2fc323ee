//! Timed concurrent workers: N tasks repeat one operation through a warm-up and then a measured
//! window; only operations that complete inside the window count, towards both the rate and the
//! latency percentiles.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::stats::Measurement;
use crate::Error;

/// One concurrent client: owns its state and performs one operation per call.
pub trait Worker: Send + 'static {
    fn op(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// How long and how visibly to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    pub warmup: Duration,
    pub duration: Duration,
    /// Show a progress bar on stderr (indicatif hides it anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Runs `workers` concurrently for `plan.warmup + plan.duration` and summarises the measured
/// window. The first failing operation stops every worker and is returned.
pub async fn measure<W: Worker>(
    label: &str,
    plan: &Plan,
    workers: Vec<W>,
) -> Result<Measurement, Error> {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let warmup_ops = Arc::new(AtomicU64::new(0));

    let mut tasks = JoinSet::new();
    for mut worker in workers {
        let stop = stop.clone();
        let counted = counted.clone();
        let warmup_ops = warmup_ops.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let began = Instant::now();
                if began >= window_end || stop.load(Ordering::Relaxed) {
                    return Ok(latencies);
                }
                if let Err(e) = worker.op().await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                let ended = Instant::now();
                if ended < window_start {
                    warmup_ops.fetch_add(1, Ordering::Relaxed);
                } else if ended <= window_end {
                    latencies.push(ended - began);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let bar = progress_bar(label, plan);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut latencies = Vec::new();
    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(l))) => latencies.extend(l),
                Some(Ok(Err(e))) => {
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(format!("worker task failed: {e}").into());
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(start);
                bar.set_position(elapsed.as_millis() as u64);
                if now < window_start {
                    let ops = warmup_ops.load(Ordering::Relaxed) as f64;
                    bar.set_message(format!("warm-up  {:>9.0} ops/s", ops / elapsed.as_secs_f64().max(1e-3)));
                } else {
                    let ops = counted.load(Ordering::Relaxed) as f64;
                    let measured = now.min(window_end).saturating_duration_since(window_start);
                    bar.set_message(format!("measured {:>9.0} ops/s", ops / measured.as_secs_f64().max(1e-3)));
                }
            }
        }
    }
    bar.finish_and_clear();
    match failure {
        Some(e) => Err(format!("{label}: {e}").into()),
        None => Ok(Measurement::new(latencies, plan.duration)),
    }
}

/// A progress bar for fixed work of `total` items (hidden when `progress` is false).
pub fn count_bar(label: &str, total: u64, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:<16} [{elapsed_precise}] {wide_bar} {pos:>7}/{len:7} {per_sec:>12} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_owned());
    bar
}

fn progress_bar(label: &str, plan: &Plan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let total = (plan.warmup + plan.duration).as_millis() as u64;
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:<16} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_owned());
    bar
}
