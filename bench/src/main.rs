//! Nova's benchmarks. The rule: **every figure is printed beside the raw limit measured in the
//! same run, as a ratio.** A throughput on its own says as much about the machine, the disk and
//! whatever else ran at the time as about Nova; so each scenario first measures what the
//! database underneath can do at its simplest (for appends: single-row `INSERT` + `COMMIT` into
//! a table of the events table's shape, on the same database, with the same concurrency), then
//! measures the same work through Nova, and reports `nova / raw`. Only the ratio is comparable
//! across machines and runs.
//!
//! Every run works in a fresh private database ([`nova_infra::testing::TestDb`]) that is removed
//! when the run ends, so benchmarking leaves nothing behind. PostgreSQL is reached through
//! `NOVA_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); SQLite uses a
//! file in the temporary directory.
//!
//! The delivery scenarios (`relay`, `project`) also need the NATS server with JetStream named by
//! `NOVA_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); each measurement publishes to a fresh
//! namespace of streams that is deleted when it ends.
//!
//! Scenarios are subcommands, one module each; shared machinery lives in [`harness`] (timed
//! concurrent workers, warm-up, progress), [`stats`] (latency percentiles, rates, ratios) and
//! [`target`] (the databases benchmarked).

mod append;
mod conversation;
mod experiment;
mod export;
mod feed;
mod harness;
mod http;
mod mix;
mod notification;
mod peers;
mod project;
mod relay;
mod search;
mod stats;
mod stream;
mod target;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errors end a run with a message on stderr and exit code 1.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "nova-bench",
    about = "Benchmarks of Nova, each figure reported beside the raw database limit measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Event appends: raw single-row INSERT+COMMIT vs `EventStore::append` (group commit).
    Append(append::Args),
    /// Relay to JetStream: raw pipelined async publishes vs `Relay::relay_once` draining.
    Relay(relay::Args),
    /// Projections: raw batched INSERTs vs `catch_up`; end-to-end lag append → read model
    /// through the relay and JetStream at a steady rate.
    Project(project::Args),
    /// Home timelines at social-network shape: fan-out rows/s vs raw inserts, rebuild time of
    /// the feed projection, feed read latency vs a primary-key lookup.
    Feed(feed::Args),
    /// Search index: indexing rate vs raw tantivy add_document+commit; query p50/p99.
    Search(search::Args),
    /// Experiments over HTTP: assignment reads/s vs `GET /healthz` at the same concurrency;
    /// results read p99 at 1,000,000 exposures vs `GET /healthz` p99.
    Experiment(experiment::Args),
    /// The real server under a mix of posts, likes, follows, feed and notification reads at N
    /// connections: req/s and p50/p99 per route beside `GET /healthz` at the same concurrency,
    /// and commit-to-visible lag under that load.
    Http(mix::Args),
    /// Event export: NDJSON `GET /v1/events` events/s vs a raw `SELECT` of the same rows, and
    /// the peak RSS growth while streaming 1,000,000 events (memory stays flat).
    Export(export::Args),
    /// Live streams over HTTP: viewer heartbeats/s at N concurrent viewers vs `GET /healthz`
    /// and vs raw presence upserts of the same database; live-list read p99 vs `/healthz` p99.
    Stream(stream::Args),
    /// Notification reads at 100,000 notifications of one user: unread count, first page and
    /// first unread page p50/p99 beside raw index reads of the same rows.
    Notification(notification::Args),
    /// Messaging over HTTP: messages/s through `POST …/messages` at N concurrent senders and
    /// one-time-key claims/s with N clients contending for one device, beside the raw
    /// INSERT+COMMIT rate of the same database in the same run.
    Conversation(conversation::Args),
    /// Nova's store beside esrs 0.18 and cqrs-es 0.5 on the same PostgreSQL: new-aggregate
    /// appends and load + decide + append on long histories at 1, 8 and 64 writers, each as a
    /// ratio to the raw INSERT+COMMIT rate of the same run (the peers are built from
    /// `bench-peers/`, outside the workspace).
    Peers(peers::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nova-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let run = async {
            match cli.scenario {
                Scenario::Append(args) => append::run(args).await,
                Scenario::Relay(args) => relay::run(args).await,
                Scenario::Project(args) => project::run(args).await,
                Scenario::Feed(args) => feed::run(args).await,
                Scenario::Search(args) => search::run(args).await,
                Scenario::Experiment(args) => experiment::run(args).await,
                Scenario::Http(args) => mix::run(args).await,
                Scenario::Export(args) => export::run(args).await,
                Scenario::Stream(args) => stream::run(args).await,
                Scenario::Conversation(args) => conversation::run(args).await,
                Scenario::Notification(args) => notification::run(args).await,
                Scenario::Peers(args) => peers::run(args).await,
            }
        };
        tokio::select! {
            result = run => Some(result),
            // Dropping the run drops its databases, so an interrupted run cleans up too.
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Workers of an interrupted run may still hold connections; don't wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("nova-bench: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("nova-bench: interrupted");
            ExitCode::from(130)
        }
    }
}
