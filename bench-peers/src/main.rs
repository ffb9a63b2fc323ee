//! `nova-bench-peers` measures two rival Rust event-sourcing libraries, esrs (`PgStore` +
//! `AggregateManager`) and cqrs-es (`CqrsFramework` over postgres-es), against PostgreSQL with
//! the same trivial "account" aggregate, so that Nova's benchmark harness (`nova-bench peers`)
//! can run it as a subprocess next to Nova's own store and compare ratios on the same machine.
//! Scenario `new` opens a brand-new aggregate per operation; scenario `history` loads, decides
//! and appends on aggregates that already hold a long history. It prints exactly one JSON object
//! on stdout; progress and errors go to stderr, and any failed operation exits non-zero. It is a
//! crate of its own workspace so that the project's `cargo test --workspace` never builds it.

mod account;
mod cqrs_peer;
mod driver;
mod esrs_peer;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Library {
    /// esrs with its Postgres store.
    Esrs,
    /// cqrs-es with the postgres-es repository.
    CqrsEs,
}

impl Library {
    fn name(self) -> &'static str {
        match self {
            Library::Esrs => "esrs",
            Library::CqrsEs => "cqrs-es",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Library::Esrs => env!("PEER_ESRS_VERSION"),
            Library::CqrsEs => env!("PEER_CQRS_ES_VERSION"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Each operation executes `Open` on a brand-new aggregate (one event appended).
    New,
    /// Each writer executes `Touch` on its own aggregate holding `--history` events
    /// (load all events, decide, append one).
    History,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::New => "new",
            Scenario::History => "history",
        }
    }
}

/// Measure a peer event-sourcing library against PostgreSQL; prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(name = "nova-bench-peers", version)]
struct Cli {
    /// PostgreSQL URL of a database this run may own (tables are created and emptied there).
    #[arg(long)]
    database_url: String,
    /// Library to measure.
    #[arg(long, value_enum)]
    library: Library,
    /// Workload.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent writer tasks.
    #[arg(long)]
    writers: usize,
    /// Length of the measured window, in seconds.
    #[arg(long)]
    duration_secs: f64,
    /// Warm-up before the measured window, in seconds (operations not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Events already held by each writer's aggregate in the `history` scenario.
    #[arg(long, default_value_t = 1000)]
    history: u32,
    /// Maximum connections of the PostgreSQL pool.
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
}

/// What every scenario needs to know about the timed run.
pub struct RunSpec {
    pub writers: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The one JSON object printed on stdout.
#[derive(Debug, Serialize)]
struct Report {
    library: &'static str,
    library_version: &'static str,
    scenario: &'static str,
    writers: usize,
    duration_secs: f64,
    ops: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    history: Option<u32>,
}

fn seconds(name: &str, value: f64, allow_zero: bool) -> Result<Duration, String> {
    let ok = value.is_finite() && (value > 0.0 || (allow_zero && value == 0.0));
    if !ok {
        let want = if allow_zero { ">= 0" } else { "> 0" };
        return Err(format!(
            "--{name} must be a finite number {want}, got {value}"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{name} {value}: {e}"))
}

fn validate(cli: &Cli) -> Result<RunSpec, String> {
    if cli.writers == 0 {
        return Err("--writers must be at least 1".to_string());
    }
    if cli.pool_size == 0 {
        return Err("--pool-size must be at least 1".to_string());
    }
    if cli.scenario == Scenario::History && cli.history == 0 {
        return Err("--history must be at least 1 (the Opened event)".to_string());
    }
    Ok(RunSpec {
        writers: cli.writers,
        warmup: seconds("warmup-secs", cli.warmup_secs, true)?,
        duration: seconds("duration-secs", cli.duration_secs, false)?,
    })
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn ms(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0, 3)
}

async fn run(cli: Cli) -> Result<Report, String> {
    let spec = validate(&cli)?;
    // The pool settings of Nova's store (16 connections, no ping before every acquire), so the
    // comparison is between the libraries, not between pool configurations.
    let pool = PgPoolOptions::new()
        .max_connections(cli.pool_size)
        .test_before_acquire(false)
        .connect(&cli.database_url)
        .await
        .map_err(|e| format!("connecting to the database failed: {e}"))?;
    eprintln!(
        "{} {}: scenario {}, {} writers, pool {}, {:.1} s warm-up then {:.1} s measured{}",
        cli.library.name(),
        cli.library.version(),
        cli.scenario.name(),
        spec.writers,
        cli.pool_size,
        spec.warmup.as_secs_f64(),
        spec.duration.as_secs_f64(),
        match cli.scenario {
            Scenario::History => format!(", history {}", cli.history),
            Scenario::New => String::new(),
        }
    );

    let outcome = match (cli.library, cli.scenario) {
        (Library::Esrs, Scenario::New) => esrs_peer::run_new(&pool, &spec).await,
        (Library::Esrs, Scenario::History) => {
            esrs_peer::run_history(&pool, &spec, cli.history).await
        }
        (Library::CqrsEs, Scenario::New) => cqrs_peer::run_new(&pool, &spec).await,
        (Library::CqrsEs, Scenario::History) => {
            cqrs_peer::run_history(&pool, &spec, cli.history).await
        }
    };
    pool.close().await;
    let outcome = outcome?;

    let latencies = &outcome.latencies;
    let ops = latencies.len() as u64;
    let measured = spec.duration.as_secs_f64();
    Ok(Report {
        library: cli.library.name(),
        library_version: cli.library.version(),
        scenario: cli.scenario.name(),
        writers: spec.writers,
        duration_secs: measured,
        ops,
        per_sec: round(ops as f64 / measured, 1),
        p50_ms: ms(driver::percentile(latencies, 50.0)),
        p99_ms: ms(driver::percentile(latencies, 99.0)),
        history: match cli.scenario {
            Scenario::History => Some(cli.history),
            Scenario::New => None,
        },
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match run(cli).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("nova-bench-peers: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("nova-bench-peers: error: encoding the report failed: {err}");
            ExitCode::FAILURE
        }
    }
}
