//! Experiments over HTTP: assignment reads/s at N concurrent clients beside `GET /healthz` at
//! the same concurrency (the raw limit of the HTTP stack in this run), and the p99 of results
//! reads with 1,000,000 exposures in the view beside the p99 of `GET /healthz` read the same
//! way.
//!
//! The exposures are written into the `experiment_results` tables in bulk (one SQL statement),
//! not appended as events: projecting a million events would measure the projector, which the
//! `project` scenario does; what this measures is that a results read is a handful of counter
//! rows, whatever the number of exposures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nova_commands::experiment::{ExperimentCommands, NewExperiment};
use nova_commands::{CommandContext, CommandStore};
use nova_event_schemas::experiment::Variant;
use nova_infra::db::{Database, Engine};
use nova_infra::testing::TestDb;
use reqwest::Method;
use serde_json::Value;

use crate::http::{fmt_ratio, latencies, setup, throughput, user};
use crate::stats::ratio;
use crate::target::{engine_name, BackendChoice};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    backend: BackendChoice,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Exposures in the results view.
    #[arg(long, default_value_t = 1_000_000)]
    exposures: u64,
    /// Results reads timed (sequential).
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
}

const KEY: &str = "bench";

/// An experiment `key` with two variants, `control` and `treatment`, at 50 % each.
pub(crate) fn even_split(key: &str) -> NewExperiment {
    NewExperiment {
        key: key.to_owned(),
        variants: ["control", "treatment"]
            .map(|name| Variant {
                name: name.into(),
                weight: 50.0,
            })
            .into(),
        coverage: None,
        seed: None,
    }
}

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

/// Writes `n` exposures (half per variant, a tenth of each converting) into the view.
async fn bulk_exposures(db: &Database, n: u64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO experiment_participants (experiment_key, user_id, variant, excluded) \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1) \
         SELECT 'bench', 'bench-user-' || CAST(i AS TEXT), \
                CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END, 0 FROM s",
    )
    .bind(n as i64)
    .execute(&db.any)
    .await?;
    let half = (n / 2) as i64;
    for (variant, users, conversions) in [
        ("control", half, half / 10),
        ("treatment", n as i64 - half, (n as i64 - half) / 9),
    ] {
        sqlx::query(
            "INSERT INTO experiment_variant_users (experiment_key, variant, users) \
             VALUES ('bench', $1, $2) ON CONFLICT (experiment_key, variant) \
             DO UPDATE SET users = experiment_variant_users.users + excluded.users",
        )
        .bind(variant)
        .bind(users)
        .execute(&db.any)
        .await?;
        sqlx::query(
            "INSERT INTO experiment_metric_conversions \
                 (experiment_key, variant, metric, conversions) VALUES ('bench', $1, 'buy', $2)",
        )
        .bind(variant)
        .bind(conversions)
        .execute(&db.any)
        .await?;
    }
    Ok(())
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let testdb = TestDb::new(engine).await;
    let (server, db, client) = setup(&testdb, args.clients).await?;
    let base = server.base.clone();

    let experiments = ExperimentCommands::new(CommandStore::new(db.store.clone()));
    let ctx = CommandContext::new(None, None);
    experiments
        .create(&ctx, even_split(KEY))
        .await
        .map_err(|e| e.to_string())?;
    experiments
        .start(&ctx, KEY)
        .await
        .map_err(|e| e.to_string())?;

    let mut tokens = Vec::new();
    for i in 0..args.clients {
        tokens.push(user(&client, &base, &format!("bench_{i}")).await?);
    }
    let tokens = Arc::new(tokens);
    let assign_url = format!("{base}/v1/experiments/{KEY}/assignment");
    let health_url = format!("{base}/healthz");
    // Warm-up: every client's first read (its exposure), and the connections.
    throughput(&client, Method::GET, &assign_url, &tokens, 1).await?;
    let raw = throughput(&client, Method::GET, &health_url, &tokens, args.seconds).await?;
    let assign = throughput(&client, Method::GET, &assign_url, &tokens, args.seconds).await?;

    // Results at `exposures` exposures.
    let results_url = format!("{base}/v1/experiments/{KEY}/results");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = client
            .get(&results_url)
            .bearer_auth(&tokens[0])
            .send()
            .await?;
        if res.status().is_success() {
            break;
        }
        if Instant::now() > deadline {
            return Err("the results view never listed the experiment".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    bulk_exposures(&db, args.exposures).await?;
    let load_secs = t.elapsed().as_secs_f64();
    let check: Value = client
        .get(&results_url)
        .bearer_auth(&tokens[0])
        .send()
        .await?
        .json()
        .await?;
    let users: i64 = check["variants"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["users"].as_i64()).sum())
        .unwrap_or(0);
    let raw_lat = latencies(&client, &health_url, &tokens[0], args.reads).await?;
    let results_lat = latencies(&client, &results_url, &tokens[0], args.reads).await?;

    println!(
        "experiment [{}] clients={}",
        engine_name(engine),
        args.clients
    );
    println!(
        "  assignment reads/s     {:>10.1}   raw GET /healthz/s {:>10.1}   ratio {}",
        assign,
        raw,
        fmt_ratio(ratio(assign, raw))
    );
    println!(
        "  results read p99 (ms)  {:>10.3}   raw GET /healthz p99 {:>8.3}   ratio {}   \
         (p50 {:.3} / {:.3}; {} users in the view, {} reads; bulk load {:.1}s)",
        results_lat.p99_ms,
        raw_lat.p99_ms,
        fmt_ratio(ratio(results_lat.p99_ms, raw_lat.p99_ms)),
        results_lat.p50_ms,
        raw_lat.p50_ms,
        users,
        args.reads,
        load_secs
    );
    server.stop().await;
    db.close().await;
    drop(testdb);
    Ok(())
}
