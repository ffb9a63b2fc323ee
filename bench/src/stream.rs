//! Live streams over HTTP: viewer heartbeats/s at N concurrent viewers (each its own user, all
//! watching one live stream, each sending heartbeats back to back), beside two raw limits
//! measured in the same run: `GET /healthz` at the same concurrency (the HTTP stack), and
//! single-row presence upserts (`INSERT … ON CONFLICT DO UPDATE`, autocommit) straight into the
//! same database at the same concurrency — what writing every heartbeat through would cost;
//! and, for scale, the same clients' authenticated `GET /v1/users/me` (a heartbeat carries a
//! token too, and authenticating it is most of its cost).
//! Then the live list's read p99 with `--streams` live streams (written into the view and the
//! audience table in bulk, not through events) beside the p99 of `GET /healthz`.

use chrono::Utc;
use clap::Parser;
use nova_infra::db::{Database, Engine};
use nova_infra::readmodel::ts;
use nova_infra::testing::TestDb;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::{fmt_ratio, latencies, rate, setup, throughput, user};
use crate::stats::ratio;
use crate::target::{engine_name, BackendChoice};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    backend: BackendChoice,
    /// Concurrent viewers' clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Live streams in the list.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Live-list reads timed (sequential).
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
}

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

/// Single-row upserts/s into a presence-shaped scratch table, `clients` at once.
async fn raw_upserts(db: &Database, clients: usize, seconds: u64) -> Result<f64, Error> {
    sqlx::query(
        "CREATE TABLE bench_raw_presence (stream_id TEXT NOT NULL, viewer_id TEXT NOT NULL, \
         last_seen TEXT NOT NULL, PRIMARY KEY (stream_id, viewer_id))",
    )
    .execute(&db.any)
    .await?;
    let stream = Uuid::now_v7().to_string();
    let viewers: Vec<String> = (0..clients).map(|_| Uuid::now_v7().to_string()).collect();
    let pool = db.any.clone();
    rate(clients, seconds, move |i| {
        let query = sqlx::query(
            "INSERT INTO bench_raw_presence (stream_id, viewer_id, last_seen) \
             VALUES ($1, $2, $3) ON CONFLICT (stream_id, viewer_id) \
             DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(stream.clone())
        .bind(viewers[i].clone())
        .bind(ts(Utc::now()));
        let pool = pool.clone();
        async move {
            query.execute(&pool).await?;
            Ok(())
        }
    })
    .await
}

/// `n` live streams with 0–999 viewers each, straight into the view and the audience table.
async fn bulk_live(db: &Database, n: usize) -> Result<(), Error> {
    let now = ts(Utc::now());
    let broadcaster = Uuid::now_v7().to_string();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut view = String::from(
            "INSERT INTO stream_view (stream_id, broadcaster_id, title, description, status, \
             disabled, created_at, started_at, last_version) VALUES ",
        );
        let mut audience = String::from(
            "INSERT INTO stream_audience (stream_id, viewers, peak_viewers, unique_viewers, \
             counted_at) VALUES ",
        );
        for (j, i) in chunk.iter().enumerate() {
            let id = Uuid::now_v7();
            let viewers = (i * 7919) % 1000;
            let sep = if j == 0 { "" } else { ", " };
            view.push_str(&format!(
                "{sep}('{id}', '{broadcaster}', 'stream {i}', NULL, 'live', 0, '{now}', '{now}', 2)"
            ));
            audience.push_str(&format!(
                "{sep}('{id}', {viewers}, {viewers}, {viewers}, '{now}')"
            ));
        }
        sqlx::query(&view).execute(&db.any).await?;
        sqlx::query(&audience).execute(&db.any).await?;
    }
    Ok(())
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let testdb = TestDb::new(engine).await;
    let (server, db, client) = setup(&testdb, args.clients).await?;
    let base = server.base.clone();

    let mut tokens = Vec::new();
    for i in 0..args.clients {
        tokens.push(user(&client, &base, &format!("viewer_{i}")).await?);
    }
    let res = client
        .post(format!("{base}/v1/streams"))
        .bearer_auth(&tokens[0])
        .json(&json!({"title": "bench"}))
        .send()
        .await?;
    let created: Value = res.json().await?;
    let id = created["stream_id"]
        .as_str()
        .ok_or("no stream id")?
        .to_owned();
    let res = client
        .post(format!("{base}/v1/streams/{id}/start"))
        .bearer_auth(&tokens[0])
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("start: {}", res.status()).into());
    }
    let join_url = format!("{base}/v1/streams/{id}/viewers");
    let health_url = format!("{base}/healthz");
    // Warm-up: every viewer's join, and the connections.
    throughput(&client, Method::POST, &join_url, &tokens, 1).await?;
    let raw_http = throughput(&client, Method::GET, &health_url, &tokens, args.seconds).await?;
    // The same clients' authenticated read of their own profile: what any request with a
    // token costs (a heartbeat is one).
    let me_url = format!("{base}/v1/users/me");
    let authed = throughput(&client, Method::GET, &me_url, &tokens, args.seconds).await?;
    let heartbeats = throughput(&client, Method::POST, &join_url, &tokens, args.seconds).await?;
    let raw_db = raw_upserts(&db, args.clients, args.seconds).await?;
    let viewers: Value = client
        .get(format!("{base}/v1/streams/{id}"))
        .bearer_auth(&tokens[0])
        .send()
        .await?
        .json()
        .await?;

    bulk_live(&db, args.streams).await?;
    if engine == Engine::Postgres {
        // What autovacuum would soon do after a bulk load: without statistics the planner
        // takes the freshly filled tables for empty ones.
        sqlx::query("ANALYZE stream_view").execute(&db.any).await?;
        sqlx::query("ANALYZE stream_audience")
            .execute(&db.any)
            .await?;
    }
    let live_url = format!("{base}/v1/streams/live");
    let raw_lat = latencies(&client, &health_url, &tokens[0], args.reads).await?;
    let me_lat = latencies(&client, &me_url, &tokens[0], args.reads).await?;
    let live_lat = latencies(&client, &live_url, &tokens[0], args.reads).await?;

    println!("stream [{}] clients={}", engine_name(engine), args.clients);
    println!(
        "  heartbeats/s           {:>10.1}   raw GET /healthz/s {:>10.1}   ratio {}",
        heartbeats,
        raw_http,
        fmt_ratio(ratio(heartbeats, raw_http))
    );
    println!(
        "  heartbeats/s           {:>10.1}   GET /v1/users/me/s {:>10.1}   ratio {}",
        heartbeats,
        authed,
        fmt_ratio(ratio(heartbeats, authed))
    );
    println!(
        "  heartbeats/s           {:>10.1}   raw presence upserts/s {:>6.1}   ratio {}   \
         (viewers counted: {})",
        heartbeats,
        raw_db,
        fmt_ratio(ratio(heartbeats, raw_db)),
        viewers["viewers"]
    );
    println!(
        "  live list read p99 (ms) {:>9.3}   raw GET /healthz p99 {:>8.3}   ratio {}   \
         (p50 {:.3} / {:.3}; {} live streams, first page of 20, {} reads)",
        live_lat.p99_ms,
        raw_lat.p99_ms,
        fmt_ratio(ratio(live_lat.p99_ms, raw_lat.p99_ms)),
        live_lat.p50_ms,
        raw_lat.p50_ms,
        args.streams + 1,
        args.reads
    );
    println!(
        "  live list read p99 (ms) {:>9.3}   GET /v1/users/me p99 {:>8.3}   ratio {}   \
         (p50 {:.3} / {:.3})",
        live_lat.p99_ms,
        me_lat.p99_ms,
        fmt_ratio(ratio(live_lat.p99_ms, me_lat.p99_ms)),
        live_lat.p50_ms,
        me_lat.p50_ms,
    );
    server.stop().await;
    db.close().await;
    drop(testdb);
    Ok(())
}
