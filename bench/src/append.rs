//! `append`: how many events per second reach the event store, against how many single-row
//! transactions the same database commits.
//!
//! Per backend, in one fresh database and **in sequence** (raw first, then store, each after
//! its own 1 s warm-up):
//! - **raw**: N tasks each loop `BEGIN` (`BEGIN IMMEDIATE` on SQLite) / one-row `INSERT` /
//!   `COMMIT` into `bench_raw`, a table created from the `user_events` migration itself (same
//!   columns, types, constraints and indexes), through the native pool the store uses;
//! - **store**: N tasks each loop `EventStore::append` of one `user.login_failed` event to their
//!   own aggregate (expected version 0, 1, 2, ...), so the store's group commit can gather them;
//! - **locked** (PostgreSQL): the same appends with each batch decided under the domain's lock
//!   in a transaction of five round trips (`AppendMode::Locked`), the design the one-statement
//!   batch replaced (ADR 0027); with `--pg-in-flight 1,3,…` also the store with other numbers of
//!   batches in flight per domain;
//! - **plain** and **sealed**: the same with one `post.created` event (280 characters of
//!   content, one media URL: personal data, ADR 0025) per append, first on a store without data
//!   keys (stored as written), then on one with the user domain's data keys (each task's author
//!   has a key; content and URL sealed with ChaCha20-Poly1305 on the append path) — the cost of
//!   encryption, both beside the same raw limit.
//!
//! Each task writes one stream that grows for the whole run (thousands of events), so any
//! per-append cost that grows with a stream's length shows up here as a low ratio.
//!
//! Reported: events/s and p50/p99 latency of each, and each one's ratio to raw.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nova_event_schemas::post::{PostCreated, PostEvent};
use nova_event_schemas::user::{LoginFailed, UserEvent};
use nova_event_schemas::{DomainEvent, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::store::postgres::{AppendMode, PgBackend, BATCHES_IN_FLIGHT};
use nova_infra::store::EventStore;
use serde::Serialize;
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use crate::harness::{measure, Plan, Worker};
use crate::stats::{ratio, Measurement};
use crate::target::{engine_name, open_fresh, BackendChoice};
use crate::Error;

const WARMUP: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent tasks (raw inserters, then store appenders). The raw tasks share the store's
    /// pool (16 connections on PostgreSQL, 8 on SQLite); more tasks than that queue for one.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Length of each measured window, after a 1 s warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Backends to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// PostgreSQL: also measure the store with these numbers of batches in flight per domain
    /// (comma-separated), beside the default of the store.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pg_in_flight: Vec<u32>,
    /// Print one JSON object with every figure instead of the table (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    concurrency: u32,
    warmup_secs: f64,
    duration_secs: u64,
    order: &'static str,
    backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    raw_operation: &'static str,
    store_operation: &'static str,
    raw: Measurement,
    store: Measurement,
    /// store events/s divided by raw events/s (absent when raw did nothing).
    store_to_raw: Option<f64>,
    /// PostgreSQL only: the same appends with every batch decided under the lock in a
    /// transaction of five round trips (`AppendMode::Locked`, the design before ADR 0027).
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<Measurement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_to_raw: Option<f64>,
    /// PostgreSQL, `--pg-in-flight`: the store with other numbers of batches in flight.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    in_flight: Vec<InFlight>,
    personal_operation: &'static str,
    /// `post.created` appends, personal fields stored as written (no data keys).
    plain: Measurement,
    /// `post.created` appends, personal fields sealed under the author's data key.
    sealed: Measurement,
    plain_to_raw: Option<f64>,
    sealed_to_raw: Option<f64>,
    /// sealed events/s divided by plain events/s: what encryption costs the append path.
    sealed_to_plain: Option<f64>,
}

#[derive(Debug, Serialize)]
struct InFlight {
    batches_in_flight: u32,
    store: Measurement,
    to_raw: Option<f64>,
}

/// `concurrency` tasks appending one event at a time to their own growing aggregate.
async fn measure_store(
    label: &str,
    store: &EventStore,
    concurrency: usize,
    plan: &Plan,
) -> Result<Measurement, Error> {
    let workers = (0..concurrency)
        .map(|_| StoreAppender::new(store))
        .collect();
    measure(label, plan, workers).await
}

pub async fn run(args: Args) -> Result<(), Error> {
    let plan = Plan {
        warmup: WARMUP,
        duration: Duration::from_secs(args.duration_secs),
        progress: !args.json,
    };
    let mut backends = Vec::new();
    for engine in args.backend.engines() {
        let fresh = open_fresh(engine).await?;
        let result = bench_backend(
            engine,
            &fresh.db,
            args.concurrency as usize,
            &args.pg_in_flight,
            &plan,
        )
        .await;
        fresh.close().await;
        backends.push(result?);
    }
    let report = Report {
        scenario: "append",
        concurrency: args.concurrency,
        warmup_secs: WARMUP.as_secs_f64(),
        duration_secs: args.duration_secs,
        order: "in sequence per backend: raw, store, locked (PostgreSQL), plain, sealed",
        backends,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench_backend(
    engine: Engine,
    db: &Database,
    concurrency: usize,
    pg_in_flight: &[u32],
    plan: &Plan,
) -> Result<BackendReport, Error> {
    let name = engine_name(engine);
    let (raw, raw_operation) = raw_baseline(engine, db, concurrency, plan).await?;

    let store = measure_store(&format!("{name} store"), &db.store, concurrency, plan).await?;

    // PostgreSQL: the one-statement batch against the locked transaction it replaced, and other
    // numbers of batches in flight, in the same run.
    let mut locked = None;
    let mut in_flight = Vec::new();
    if let Some(pool) = db.pg_pool() {
        let tuned = |mode, n| EventStore::new(Arc::new(PgBackend::tuned(pool.clone(), mode, n)));
        let store_locked = tuned(AppendMode::Locked, BATCHES_IN_FLIGHT);
        locked =
            Some(measure_store(&format!("{name} locked"), &store_locked, concurrency, plan).await?);
        for &n in pg_in_flight {
            let label = format!("{name} store, {n} in flight");
            let m = measure_store(
                &label,
                &tuned(AppendMode::OneStatement, n as usize),
                concurrency,
                plan,
            )
            .await?;
            in_flight.push(InFlight {
                batches_in_flight: n,
                to_raw: ratio(m.per_sec, raw.per_sec),
                store: m,
            });
        }
    }

    // Personal data: the same appends of a post, as written and then sealed. The sealing store
    // is a second facade over the same backend (keys are set once per facade).
    let posts = |store: &EventStore| -> Vec<PostAppender> {
        (0..concurrency)
            .map(|_| PostAppender {
                store: store.clone(),
                aggregate_id: Uuid::now_v7(),
                author: Uuid::now_v7(),
                version: 0,
            })
            .collect()
    };
    let plain = measure(&format!("{name} plain"), plan, posts(&db.store)).await?;
    let sealing = EventStore::new(db.store.backend().clone());
    sealing.set_data_keys(std::sync::Arc::new(
        nova_commands::user::data_keys::DataKeyVault::new(db.any.clone()),
    ));
    let sealed = measure(&format!("{name} sealed"), plan, posts(&sealing)).await?;

    Ok(BackendReport {
        backend: name,
        raw_operation,
        store_operation: "EventStore::append of one event to the task's own aggregate",
        store_to_raw: ratio(store.per_sec, raw.per_sec),
        locked_to_raw: locked.as_ref().and_then(|l| ratio(l.per_sec, raw.per_sec)),
        locked,
        in_flight,
        personal_operation: "EventStore::append of one post.created (280 chars + 1 URL); \
                             plain: no data keys, sealed: the user domain's data keys",
        plain_to_raw: ratio(plain.per_sec, raw.per_sec),
        sealed_to_raw: ratio(sealed.per_sec, raw.per_sec),
        sealed_to_plain: ratio(sealed.per_sec, plain.per_sec),
        raw,
        store,
        plain,
        sealed,
    })
}

/// The events table's own migration, retargeted at `bench_raw`, so the baseline table has
/// exactly the shape (columns, types, constraints, indexes) the store writes to.
fn raw_table_ddl(user_events_migration: &str) -> String {
    user_events_migration.replace("user_events", "bench_raw")
}

/// The raw limit of `db` in this run: `concurrency` tasks each looping one-row
/// INSERT+COMMIT (`BEGIN IMMEDIATE` on SQLite) into `bench_raw`, a table made from the
/// `user_events` migration (created here: call once per database). Answers the measurement
/// and the operation's description. Other scenarios report their figures beside it.
pub(crate) async fn raw_baseline(
    engine: Engine,
    db: &Database,
    concurrency: usize,
    plan: &Plan,
) -> Result<(Measurement, &'static str), Error> {
    let name = engine_name(engine);
    let raw_label = format!("{name} raw");
    let raw = match engine {
        Engine::Postgres => {
            let pool = db
                .pg_pool()
                .ok_or("postgres database without a PostgreSQL pool")?
                .clone();
            sqlx::raw_sql(&raw_table_ddl(include_str!(
                "../../migrations/postgres/0001_user_events.sql"
            )))
            .execute(&pool)
            .await
            .map_err(|e| format!("{name}: cannot create bench_raw: {e}"))?;
            let m = measure(&raw_label, plan, RawPg::workers(&pool, concurrency, false)).await?;
            (m, "BEGIN; INSERT one row INTO bench_raw; COMMIT")
        }
        Engine::Sqlite => {
            let pool = db
                .sqlite_pool()
                .ok_or("sqlite database without a SQLite pool")?
                .clone();
            sqlx::raw_sql(&raw_table_ddl(include_str!(
                "../../migrations/sqlite/0001_user_events.sql"
            )))
            .execute(&pool)
            .await
            .map_err(|e| format!("{name}: cannot create bench_raw: {e}"))?;
            let workers = (0..concurrency)
                .map(|_| RawSqlite {
                    pool: pool.clone(),
                    row: RawRow::new(),
                })
                .collect();
            let m = measure(&raw_label, plan, workers).await?;
            (m, "BEGIN IMMEDIATE; INSERT one row INTO bench_raw; COMMIT")
        }
    };
    Ok(raw)
}

const RAW_INSERT: &str = "INSERT INTO bench_raw (event_id, aggregate_id, aggregate_type, version, \
     event_type, schema_version, payload, correlation_id, causation_id, actor_id, request_id, \
     recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// The next row one raw task writes: the values the store would write for the same event.
struct RawRow {
    aggregate_id: Uuid,
    version: i64,
}

impl RawRow {
    fn new() -> Self {
        RawRow {
            aggregate_id: Uuid::now_v7(),
            version: 0,
        }
    }
}

fn login_failed() -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        failed_at: Utc::now(),
    })
}

/// Binds one row of the events table's shape to `RAW_INSERT`; a macro because the two
/// backends' query types differ.
macro_rules! bind_row {
    ($row:expr) => {{
        let event = login_failed();
        sqlx::query(RAW_INSERT)
            .bind(Uuid::now_v7())
            .bind($row.aggregate_id)
            .bind("user")
            .bind($row.version + 1)
            .bind(event.event_type())
            .bind(event.schema_version())
            .bind(event.to_payload())
            .bind(Uuid::now_v7())
            .bind(None::<Uuid>)
            .bind(None::<Uuid>)
            .bind(None::<String>)
            .bind(Utc::now())
    }};
}

/// The floor of a durable append on PostgreSQL in this run: `concurrency` tasks each looping
/// one autocommit `INSERT` of the same row into `bench_raw` (made by [`raw_baseline`], which
/// must have run on `db`) — one round trip and one commit, no lock, no check, no `BEGIN`.
/// No append that writes its event durably before answering can be faster per writer; `peers`
/// prints it beside the peers (issue 14's one-writer targets lie at it).
pub(crate) async fn autocommit_floor(
    db: &Database,
    concurrency: usize,
    plan: &Plan,
) -> Result<Measurement, Error> {
    let pool = db
        .pg_pool()
        .ok_or("postgres database without a PostgreSQL pool")?;
    measure(
        "postgres floor",
        plan,
        RawPg::workers(pool, concurrency, true),
    )
    .await
}

struct RawPg {
    pool: PgPool,
    row: RawRow,
    /// One autocommit statement instead of `BEGIN`, the statement and `COMMIT`.
    autocommit: bool,
}

impl RawPg {
    fn workers(pool: &PgPool, n: usize, autocommit: bool) -> Vec<RawPg> {
        (0..n)
            .map(|_| RawPg {
                pool: pool.clone(),
                row: RawRow::new(),
                autocommit,
            })
            .collect()
    }
}

impl Worker for RawPg {
    async fn op(&mut self) -> Result<(), Error> {
        if self.autocommit {
            bind_row!(self.row).execute(&self.pool).await?;
        } else {
            let mut tx = self.pool.begin().await?;
            bind_row!(self.row).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        self.row.version += 1;
        Ok(())
    }
}

struct RawSqlite {
    pool: SqlitePool,
    row: RawRow,
}

impl Worker for RawSqlite {
    async fn op(&mut self) -> Result<(), Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        bind_row!(self.row).execute(&mut *tx).await?;
        tx.commit().await?;
        self.row.version += 1;
        Ok(())
    }
}

/// 280 characters, as a post may hold.
const CONTENT: &str = "Benchmark post: the quick brown fox jumps over the lazy dog while the \
     five boxing wizards jump quickly; pack my box with five dozen liquor jugs, sphinx of black \
     quartz judge my vow, how vexingly quick daft zebras jump, and the jay, pig, fox, zebra and \
     my wolves quack! Done here...";

struct PostAppender {
    store: EventStore,
    aggregate_id: Uuid,
    author: Uuid,
    version: i64,
}

impl Worker for PostAppender {
    async fn op(&mut self) -> Result<(), Error> {
        let metadata = EventMetadata {
            correlation_id: Uuid::now_v7(),
            actor_id: Some(self.author),
            ..EventMetadata::default()
        };
        let event = PostEvent::Created(PostCreated {
            post_id: self.aggregate_id,
            author_id: self.author,
            content: CONTENT.to_owned(),
            media_urls: vec!["https://media.example/bench/picture.jpg".to_owned()],
            mentions: Vec::new(),
            created_at: Utc::now(),
        });
        self.store
            .append(
                vec![(self.aggregate_id, "post", self.version, vec![event])],
                metadata,
            )
            .await?;
        self.version += 1;
        Ok(())
    }
}

/// Appends one `user.login_failed` per op to its own aggregate, which grows for the whole run.
pub(crate) struct StoreAppender {
    store: EventStore,
    aggregate_id: Uuid,
    version: i64,
}

impl StoreAppender {
    /// On a new aggregate of `store`.
    pub(crate) fn new(store: &EventStore) -> Self {
        StoreAppender {
            store: store.clone(),
            aggregate_id: Uuid::now_v7(),
            version: 0,
        }
    }

    /// Moves to a new aggregate (its next op creates it).
    pub(crate) fn move_to_new_aggregate(&mut self) {
        self.aggregate_id = Uuid::now_v7();
        self.version = 0;
    }
}

impl Worker for StoreAppender {
    async fn op(&mut self) -> Result<(), Error> {
        let metadata = EventMetadata {
            correlation_id: Uuid::now_v7(),
            ..EventMetadata::default()
        };
        self.store
            .append(
                vec![(
                    self.aggregate_id,
                    "user",
                    self.version,
                    vec![login_failed()],
                )],
                metadata,
            )
            .await?;
        self.version += 1;
        Ok(())
    }
}

fn print_table(report: &Report) {
    println!(
        "append: concurrency {}, {} s warm-up then {} s measured per row; {}",
        report.concurrency, report.warmup_secs, report.duration_secs, report.order
    );
    println!();
    println!(
        "{:<9} {:<6} {:>12} {:>9} {:>9} {:>9}  {:>9}",
        "backend", "path", "events/s", "p50 ms", "p99 ms", "max ms", "store/raw"
    );
    for b in &report.backends {
        let times = |r: Option<f64>| {
            r.map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "n/a".to_owned())
        };
        let mut rows = vec![
            ("raw", &b.raw, String::new()),
            ("store", &b.store, times(b.store_to_raw)),
        ];
        if let Some(locked) = &b.locked {
            rows.push(("locked", locked, times(b.locked_to_raw)));
        }
        let labels: Vec<String> = b
            .in_flight
            .iter()
            .map(|f| format!("{}-fly", f.batches_in_flight))
            .collect();
        for (f, label) in b.in_flight.iter().zip(&labels) {
            rows.push((label.as_str(), &f.store, times(f.to_raw)));
        }
        rows.push(("plain", &b.plain, times(b.plain_to_raw)));
        rows.push(("sealed", &b.sealed, times(b.sealed_to_raw)));
        for (path, m, vs) in rows {
            println!(
                "{:<9} {:<6} {:>12.0} {:>9.3} {:>9.3} {:>9.3}  {:>9}",
                b.backend,
                path,
                m.per_sec,
                m.latency.p50_ms,
                m.latency.p99_ms,
                m.latency.max_ms,
                vs
            );
        }
    }
    println!();
    for b in &report.backends {
        println!("{:<14}{}", format!("{} raw:", b.backend), b.raw_operation);
    }
    if let Some(b) = report.backends.first() {
        println!("{:<14}{}", "store:", b.store_operation);
        println!(
            "{:<14}PostgreSQL: the same, each batch decided under the lock (AppendMode::Locked)",
            "locked:"
        );
        println!("{:<14}{}", "plain/sealed:", b.personal_operation);
    }
    for b in &report.backends {
        println!(
            "{:<14}sealed/plain {} (the cost of sealing personal data on the append path)",
            format!("{}:", b.backend),
            b.sealed_to_plain
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "n/a".to_owned())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_table_mirrors_the_events_table() {
        for ddl in [
            raw_table_ddl(include_str!(
                "../../migrations/postgres/0001_user_events.sql"
            )),
            raw_table_ddl(include_str!("../../migrations/sqlite/0001_user_events.sql")),
        ] {
            assert!(ddl.contains("CREATE TABLE bench_raw"));
            assert!(!ddl.contains("user_events"));
        }
    }
}
