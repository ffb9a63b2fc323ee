//! `peers`: Nova's store against the rival Rust event-sourcing libraries, esrs 0.18 (`PgStore`)
//! and cqrs-es 0.5 (`postgres-es`), on the same PostgreSQL in the same run, each beside the raw
//! one-row INSERT+COMMIT rate measured at the same concurrency (ADR 0027).
//!
//! Per writer count (default 1, 8 and 64), in one fresh database and in sequence, each after a
//! warm-up:
//! - **raw**: `append::raw_baseline`;
//! - **floor**: `append::autocommit_floor`, one autocommit `INSERT` of the same row: no append
//!   that writes its event durably before answering is faster per writer, so `floor/peer` is
//!   the most Nova (or anyone) can reach over that peer at that concurrency;
//! - **new**: new-aggregate appends: each op creates a fresh aggregate with one event — Nova
//!   through `EventStore::append` (expected version 0), the peers through their command path;
//! - **history**: load + decide + append on an aggregate that already holds `--history` events,
//!   one per writer — Nova through its real command path (`ExperimentCommands::update`: the
//!   repository loads the experiment, decides, appends), the peers through theirs (they fold the
//!   whole history on every command; Nova's repository keeps states in a bounded cache checked
//!   against the store, which is the point of the comparison).
//!
//! The peers live in `bench-peers/`, a crate outside the workspace (so `cargo test --workspace`
//! never builds them and their sqlx features); this scenario runs its binary once per library,
//! scenario and writer count against the same database URL. `--peers-bin` names a built binary;
//! without it the binary is built first with `cargo build --release`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nova_commands::experiment::ExperimentCommands;
use nova_commands::{CommandContext, CommandStore};
use nova_infra::db::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::append::{autocommit_floor, raw_baseline, StoreAppender};
use crate::experiment::even_split;
use crate::harness::{count_bar, measure, Plan, Worker};
use crate::stats::{ratio, Measurement};
use crate::target::open_fresh;
use crate::Error;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Writer counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 8, 64])]
    pub writers: Vec<u32>,
    /// Length of each measured window, after a 1 s warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Events each writer's aggregate holds before the history scenario.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub history: u32,
    /// A built `nova-bench-peers` binary; without it, `bench-peers/` is built first.
    #[arg(long)]
    pub peers_bin: Option<PathBuf>,
    /// Print one JSON object with every figure instead of the table (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

const LIBRARIES: [&str; 2] = ["esrs", "cqrs-es"];

/// What the peers binary prints, one JSON object per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeerRun {
    library: String,
    library_version: String,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Scenario {
    nova: Measurement,
    nova_to_raw: Option<f64>,
    peers: Vec<PeerFigure>,
}

#[derive(Debug, Serialize)]
struct PeerFigure {
    #[serde(flatten)]
    run: PeerRun,
    to_raw: Option<f64>,
    /// Nova's rate over this peer's.
    nova_over_peer: Option<f64>,
    /// The floor's rate over this peer's: the most any durable append can reach over it
    /// (new-aggregate appends only).
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_over_peer: Option<f64>,
    /// The target of issue 14 for this ratio.
    target: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    writers: u32,
    raw: Measurement,
    floor: Measurement,
    new_aggregates: Scenario,
    history: Scenario,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    raw_operation: &'static str,
    floor_operation: &'static str,
    new_operation: &'static str,
    history_operation: String,
    warmup_secs: u64,
    duration_secs: u64,
    rows: Vec<Row>,
}

pub async fn run(args: Args) -> Result<(), Error> {
    if args.writers.is_empty() || args.writers.iter().any(|&w| w == 0 || w > 1024) {
        return Err("--writers takes counts between 1 and 1024".into());
    }
    let bin = match &args.peers_bin {
        Some(path) => path.clone(),
        None => build_peers().await?,
    };
    let plan = Plan {
        warmup: std::time::Duration::from_secs(1),
        duration: std::time::Duration::from_secs(args.duration_secs),
        progress: !args.json,
    };
    let mut rows = Vec::new();
    let mut raw_operation = "";
    for &writers in &args.writers {
        let fresh = open_fresh(Engine::Postgres).await?;
        let db = &fresh.db;
        let (raw, op) = raw_baseline(Engine::Postgres, db, writers as usize, &plan).await?;
        raw_operation = op;
        let floor = autocommit_floor(db, writers as usize, &plan).await?;

        let workers = (0..writers)
            .map(|_| NewAggregates(StoreAppender::new(&db.store)))
            .collect();
        let nova_new = measure(&format!("nova new ×{writers}"), &plan, workers).await?;

        let experiments = ExperimentCommands::new(CommandStore::new(db.store.clone()));
        let keys = fill_histories(&experiments, writers, args.history, !args.json).await?;
        let workers = keys
            .into_iter()
            .map(|key| Updates {
                experiments: experiments.clone(),
                key,
                flip: false,
            })
            .collect();
        let nova_history = measure(&format!("nova history ×{writers}"), &plan, workers).await?;

        let mut new_peers = Vec::new();
        let mut history_peers = Vec::new();
        for library in LIBRARIES {
            let common = PeerCall {
                bin: &bin,
                url: fresh.url(),
                library,
                writers,
                duration_secs: args.duration_secs,
                history: args.history,
            };
            let run = common.run("new", !args.json).await?;
            let mut new = figure(run, &nova_new, &raw, new_target(library));
            new.floor_over_peer = ratio(floor.per_sec, new.run.per_sec);
            new_peers.push(new);
            let run = common.run("history", !args.json).await?;
            history_peers.push(figure(run, &nova_history, &raw, 2.0));
        }
        rows.push(Row {
            writers,
            new_aggregates: Scenario {
                nova_to_raw: ratio(nova_new.per_sec, raw.per_sec),
                nova: nova_new,
                peers: new_peers,
            },
            history: Scenario {
                nova_to_raw: ratio(nova_history.per_sec, raw.per_sec),
                nova: nova_history,
                peers: history_peers,
            },
            raw,
            floor,
        });
        fresh.close().await;
    }
    let report = Report {
        scenario: "peers",
        raw_operation,
        floor_operation: "INSERT one row INTO bench_raw (autocommit)",
        new_operation: "one event appended to a new aggregate per op (Nova: EventStore::append; \
                        peers: their command path)",
        history_operation: format!(
            "load + decide + append one event on the writer's aggregate of {} events (Nova: \
             ExperimentCommands::update through its repository; peers: their command path)",
            args.history
        ),
        warmup_secs: plan.warmup.as_secs(),
        duration_secs: args.duration_secs,
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Issue 14's targets for new-aggregate appends: ≥ 1.4× esrs, ≥ 2× cqrs-es.
fn new_target(library: &str) -> f64 {
    if library == "esrs" {
        1.4
    } else {
        2.0
    }
}

fn figure(run: PeerRun, nova: &Measurement, raw: &Measurement, target: f64) -> PeerFigure {
    PeerFigure {
        to_raw: ratio(run.per_sec, raw.per_sec),
        nova_over_peer: ratio(nova.per_sec, run.per_sec),
        floor_over_peer: None,
        target,
        run,
    }
}

/// Builds `bench-peers/` (release) and answers the path of its binary.
async fn build_peers() -> Result<PathBuf, Error> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-peers/Cargo.toml");
    let target = std::env::var_os("NOVA_PEERS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("nova-bench-peers-target"));
    eprintln!(
        "building the peers ({}) into {} …",
        manifest.display(),
        target.display()
    );
    let status = tokio::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cannot run cargo to build the peers: {e}"))?;
    if !status.success() {
        return Err(format!("building the peers failed ({status})").into());
    }
    Ok(target.join("release/nova-bench-peers"))
}

struct PeerCall<'a> {
    bin: &'a Path,
    url: &'a str,
    library: &'static str,
    writers: u32,
    duration_secs: u64,
    history: u32,
}

impl PeerCall<'_> {
    async fn run(&self, scenario: &str, progress: bool) -> Result<PeerRun, Error> {
        if progress {
            eprintln!("{} {scenario} ×{} …", self.library, self.writers);
        }
        let output = tokio::process::Command::new(self.bin)
            .arg("--database-url")
            .arg(self.url)
            .args(["--library", self.library, "--scenario", scenario])
            .args(["--writers", &self.writers.to_string()])
            .args(["--duration-secs", &self.duration_secs.to_string()])
            .args(["--history", &self.history.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} {scenario} ×{} failed ({})",
                self.library, self.writers, output.status
            )
            .into());
        }
        serde_json::from_slice(&output.stdout).map_err(|e| {
            format!(
                "{} {scenario}: unreadable answer ({e}): {}",
                self.library,
                String::from_utf8_lossy(&output.stdout)
            )
            .into()
        })
    }
}

/// One experiment per writer, each holding `history` events (created + updates), written
/// concurrently through the command path itself. Answers the keys.
async fn fill_histories(
    experiments: &ExperimentCommands,
    writers: u32,
    history: u32,
    progress: bool,
) -> Result<Vec<String>, Error> {
    let bar = count_bar(
        "history fill",
        u64::from(writers) * u64::from(history),
        progress,
    );
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let experiments = experiments.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let key = format!("peers-{w}-{}", Uuid::now_v7().simple());
            let ctx = CommandContext::new(None, None);
            experiments
                .create(&ctx, even_split(&key))
                .await
                .map_err(|e| format!("create {key}: {e}"))?;
            bar.inc(1);
            let mut updates = Updates {
                experiments,
                key,
                flip: false,
            };
            for _ in 1..history {
                updates.op().await?;
                bar.inc(1);
            }
            Ok::<_, Error>(updates.key)
        });
    }
    let mut keys = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        keys.push(joined.map_err(|e| format!("history fill task failed: {e}"))??);
    }
    bar.finish_and_clear();
    Ok(keys)
}

/// A new aggregate with one event per op: the append scenario's appender, moved to a fresh
/// aggregate before each op.
struct NewAggregates(StoreAppender);

impl Worker for NewAggregates {
    async fn op(&mut self) -> Result<(), Error> {
        self.0.move_to_new_aggregate();
        self.0.op().await
    }
}

/// Load + decide + append on the writer's own experiment: a coverage update, alternating so
/// every op changes something.
struct Updates {
    experiments: ExperimentCommands,
    key: String,
    flip: bool,
}

impl Worker for Updates {
    async fn op(&mut self) -> Result<(), Error> {
        self.flip = !self.flip;
        let coverage = if self.flip { 0.5 } else { 0.75 };
        self.experiments
            .update(
                &CommandContext::new(None, None),
                &self.key,
                None,
                Some(coverage),
            )
            .await
            .map_err(|e| format!("update {}: {e}", self.key))?;
        Ok(())
    }
}

fn print_table(report: &Report) {
    println!(
        "peers: PostgreSQL, {} s warm-up then {} s measured per figure\n  raw:     {}\n  floor:   {} (the fastest durable append; floor/peer is the most anyone can reach over that peer)\n  new:     {}\n  history: {}",
        report.warmup_secs,
        report.duration_secs,
        report.raw_operation,
        report.floor_operation,
        report.new_operation,
        report.history_operation
    );
    let fmt = |r: Option<f64>| r.map_or("—".to_owned(), |r| format!("{r:.2}×"));
    for (name, pick) in [
        (
            "new aggregates",
            (|r: &Row| &r.new_aggregates) as fn(&Row) -> &Scenario,
        ),
        ("history", |r: &Row| &r.history),
    ] {
        println!("\n{name}:");
        println!(
            "{:>7} {:>10} | {:<8} {:>10} {:>8} {:>8} {:>8} | {:>9} {:>10} {:>7}",
            "writers",
            "raw/s",
            "store",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "×raw",
            "nova/peer",
            "floor/peer",
            "target"
        );
        for row in &report.rows {
            let s = pick(row);
            println!(
                "{:>7} {:>10.0} | {:<8} {:>10.0} {:>8.2} {:>8.2} {:>8} | {:>9} {:>10} {:>7}",
                row.writers,
                row.raw.per_sec,
                "nova",
                s.nova.per_sec,
                s.nova.latency.p50_ms,
                s.nova.latency.p99_ms,
                fmt(s.nova_to_raw),
                "",
                "",
                ""
            );
            for p in &s.peers {
                let met = match p.nova_over_peer {
                    Some(r) if r >= p.target => "met",
                    Some(_) => "NOT MET",
                    None => "—",
                };
                println!(
                    "{:>7} {:>10} | {:<8} {:>10.0} {:>8.2} {:>8.2} {:>8} | {:>9} {:>10} {:>7}",
                    "",
                    "",
                    p.run.library,
                    p.run.per_sec,
                    p.run.p50_ms,
                    p.run.p99_ms,
                    fmt(p.to_raw),
                    fmt(p.nova_over_peer),
                    p.floor_over_peer
                        .map_or(String::new(), |r| format!("{r:.2}×")),
                    format!("≥{:.1}× {met}", p.target)
                );
            }
        }
    }
}
