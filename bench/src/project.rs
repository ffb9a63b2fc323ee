//! `project`: how fast the projector runtime applies events to a read model, against how fast
//! the database takes the same rows; and how long an event takes, under a steady load, from
//! its append to being visible in the read model when it travels through the relay and
//! JetStream.
//!
//! Per backend:
//! - **(a) apply rate**, in one fresh database holding N `user.registered` events (each on its
//!   own aggregate, appended first and not timed), in sequence:
//!   - **raw**: the N rows `user_directory` would receive (values prepared before the clock
//!     starts) are inserted one statement each, with the projection's own `INSERT`, into
//!     `user_directory_bench_raw` — a copy of the migrated table, indexes included (as rebuilds
//!     do) — committing every 500 rows (the runtime's batch size), through the same `AnyPool`;
//!   - **projector**: `catch_up(&UserDirectory, ...)` from an empty read model (read 500 events
//!     from the store, lock the checkpoint, decode and apply each, save the checkpoint, commit;
//!     repeat).
//! - **(b) end-to-end lag**, in a second fresh database and a fresh stream namespace: a
//!   [`Relay`] task (`Relay::run`) and a projector on a [`JetStreamSource`] (`run_projector`
//!   with `UserDirectory`) run while one `user.registered` is appended per tick of a
//!   `tokio::time::interval` at `--rate` per second (open loop: each append is its own task, so
//!   a slow append does not delay the next tick), first for a 1 s warm-up (not counted), then
//!   for `--duration-secs`. For every append, the time from the append's return (commit) until
//!   the in-memory checkpoint `Checkpoints::cached("user_directory", user)` reaches its position
//!   is measured by a watcher that polls every millisecond; the same watcher also records when
//!   the relay's checkpoint (`RelayStats::checkpoint`: acknowledged by JetStream and saved)
//!   passes it, which splits the lag into relay and projector parts.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::db::{Database, Engine};
use nova_infra::relay::{Relay, RelayStats};
use nova_projections::user_directory::{self, ts, UserDirectory};
use nova_projections::{catch_up, run_projector, Checkpoints, JetStreamSource, Projection};
use serde::Serialize;
use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::harness::count_bar;
use crate::stats::{print_throughput_table, ratio, Percentiles, Throughput};
use crate::target::{connect_nats, engine_name, open_fresh, BackendChoice, Nats};
use crate::workload::{append_registered, pre_append, read_all};
use crate::Error;

/// Rows per transaction of the raw baseline: the projector runtime's batch size.
const RAW_BATCH: usize = 500;
const WARMUP: Duration = Duration::from_secs(1);
/// How often the lag watcher looks at the checkpoints.
const POLL: Duration = Duration::from_millis(1);
/// After the last append, how long the watcher waits for stragglers before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events appended first and then applied by each path of (a).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub events: u64,
    /// Appends per second during (b).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Length of the measured window of (b), after a 1 s warm-up at the same rate.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Backends to benchmark.
    #[arg(long, value_enum, default_value_t = BackendChoice::Both)]
    pub backend: BackendChoice,
    /// Print one JSON object with every figure instead of the tables (and no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    events: u64,
    rate: u64,
    warmup_secs: f64,
    duration_secs: u64,
    backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    apply: ApplyReport,
    lag: LagReport,
}

#[derive(Debug, Serialize)]
struct ApplyReport {
    raw_operation: &'static str,
    projector_operation: &'static str,
    raw: Throughput,
    projector: Throughput,
    /// projector events/s divided by raw rows/s (absent when raw did nothing).
    projector_to_raw: Option<f64>,
}

#[derive(Debug, Serialize)]
struct LagReport {
    target_per_sec: u64,
    /// Measured appends divided by the time from the first measured tick to the last measured
    /// append's return.
    achieved_per_sec: f64,
    appended: u64,
    /// Append return → relay checkpoint (acknowledged by JetStream, checkpoint saved).
    published: Percentiles,
    /// Append return → `user_directory` checkpoint (the row is committed and visible).
    projected: Percentiles,
    /// Measured events the projection had not reached `DRAIN_TIMEOUT` after the last append.
    unobserved: u64,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let nats = connect_nats().await?;
    let mut backends = Vec::new();
    for engine in args.backend.engines() {
        let name = engine_name(engine);
        let fresh = open_fresh(engine).await?;
        let apply = bench_apply(engine, &fresh.db, &args).await;
        fresh.close().await;
        let apply = apply.map_err(|e| format!("{name} apply: {e}"))?;

        let fresh = open_fresh(engine).await?;
        let lag = bench_lag(name, &fresh.db, &nats, &args).await;
        fresh.close().await;
        let lag = lag.map_err(|e| format!("{name} lag: {e}"))?;
        backends.push(BackendReport {
            backend: name,
            apply,
            lag,
        });
    }
    let report = Report {
        scenario: "project",
        events: args.events,
        rate: args.rate,
        warmup_secs: WARMUP.as_secs_f64(),
        duration_secs: args.duration_secs,
        backends,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (a) apply rate

/// Suffix of the raw baseline's copy of the read model's table.
const RAW_SUFFIX: &str = "_bench_raw";
/// The copy's name.
const RAW_TABLE: &str = "user_directory_bench_raw";

/// `UserDirectory`'s statement for `user.registered`, on the copy.
const RAW_INSERT: &str = "INSERT INTO user_directory_bench_raw (user_id, username, display_name, \
     status, profile_picture_url, active, created_at, updated_at, last_version) \
     VALUES ($1, $2, $3, NULL, NULL, 1, $4, $4, $5) ON CONFLICT (user_id) DO NOTHING";

/// The values `UserDirectory` writes for one registration.
struct Row {
    user_id: String,
    username: String,
    display_name: Option<String>,
    created_at: String,
    version: i64,
}

async fn bench_apply(engine: Engine, db: &Database, args: &Args) -> Result<ApplyReport, Error> {
    let name = engine_name(engine);
    let progress = !args.json;
    let head = pre_append(&db.store, args.events, &format!("{name} append"), progress).await?;

    // A copy of the projection's table as the migrations made it (what rebuilds create).
    nova_projections::schema::create_copies(
        &db.any,
        &UserDirectory::default().tables(),
        RAW_SUFFIX,
    )
    .await
    .map_err(|e| format!("cannot create {RAW_TABLE}: {e}"))?;
    let rows = read_all(&db.store)
        .await?
        .into_iter()
        .map(|event| match event.decode::<UserEvent>()? {
            UserEvent::Registered(r) => Ok(Row {
                user_id: event.aggregate_id.to_string(),
                username: r.username,
                display_name: r.display_name,
                created_at: ts(r.registered_at),
                version: event.version,
            }),
            other => Err(format!("unexpected event {other:?}").into()),
        })
        .collect::<Result<Vec<Row>, Error>>()?;
    let raw = insert_raw(&db.any, &rows, &format!("{name} raw insert"), progress).await?;
    let copied = count(&db.any, RAW_TABLE).await?;
    if copied != rows.len() as i64 {
        return Err(format!("{RAW_TABLE} holds {copied} rows, expected {}", rows.len()).into());
    }

    let elapsed = timed_catch_up(
        &UserDirectory::default(),
        Domain::User,
        db,
        &format!("{name} catch_up"),
        head.max(0) as u64,
        progress,
    )
    .await?;
    let projected = count(&db.any, "user_directory").await?;
    if projected != args.events as i64 {
        return Err(format!(
            "user_directory holds {projected} rows, expected {}",
            args.events
        )
        .into());
    }

    let projector = Throughput::new(args.events, elapsed);
    Ok(ApplyReport {
        raw_operation: "one INSERT per row into user_directory_bench_raw (the projection's \
                        statement), COMMIT every 500 rows",
        projector_operation: "catch_up(UserDirectory) from scratch: batches of 500 read from \
                              the store, decoded, applied, checkpoint saved, committed",
        projector_to_raw: ratio(projector.per_sec, raw.per_sec),
        raw,
        projector,
    })
}

/// How long `catch_up(projection)` takes from fresh checkpoints, behind a progress bar of
/// `total` positions of `domain`.
pub(crate) async fn timed_catch_up(
    projection: &dyn Projection,
    domain: Domain,
    db: &Database,
    label: &str,
    total: u64,
    progress: bool,
) -> Result<Duration, Error> {
    let checkpoints = Checkpoints::default();
    let bar = count_bar(label, total, progress);
    let ticker = {
        let (bar, checkpoints) = (bar.clone(), checkpoints.clone());
        let name = projection.name().to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                bar.set_position(checkpoints.cached(&name, domain).max(0) as u64);
            }
        })
    };
    let started = Instant::now();
    let caught = catch_up(projection, &db.store, &db.any, &checkpoints).await;
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    caught?;
    Ok(elapsed)
}

async fn insert_raw(
    pool: &AnyPool,
    rows: &[Row],
    label: &str,
    progress: bool,
) -> Result<Throughput, Error> {
    let bar = count_bar(label, rows.len() as u64, progress);
    let started = Instant::now();
    for chunk in rows.chunks(RAW_BATCH) {
        let mut tx = pool.begin().await?;
        for row in chunk {
            sqlx::query(RAW_INSERT)
                .bind(&row.user_id)
                .bind(&row.username)
                .bind(&row.display_name)
                .bind(&row.created_at)
                .bind(row.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        bar.inc(chunk.len() as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Throughput::new(rows.len() as u64, elapsed))
}

async fn count(pool: &AnyPool, table: &str) -> Result<i64, Error> {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await?;
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// (b) end-to-end lag

/// One append for the watcher: its position, when it returned, whether it is measured.
type Appended = (i64, Instant, bool);

async fn bench_lag(
    name: &'static str,
    db: &Database,
    nats: &Nats,
    args: &Args,
) -> Result<LagReport, Error> {
    let ns = nats.namespace().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let checkpoints = Checkpoints::default();

    let relay = Relay::new(
        db.store.clone(),
        ns.js().clone(),
        ns.names().clone(),
        db.any.clone(),
        Domain::User,
    );
    let relay_stats = relay.stats.clone();
    let relay_task = tokio::spawn(relay.run(stop_rx.clone()));
    let source = JetStreamSource::new(
        ns.js().clone(),
        ns.names().clone(),
        db.store.clone(),
        user_directory::NAME,
    );
    let projector_task = tokio::spawn(run_projector(
        Arc::new(UserDirectory::default()),
        Domain::User,
        Arc::new(source),
        db.any.clone(),
        checkpoints.clone(),
        stop_rx,
    ));

    let result = drive_load(name, db, args, &checkpoints, &relay_stats).await;

    let _ = stop_tx.send(true);
    for task in [relay_task, projector_task] {
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    ns.delete().await;
    let report = result?;
    let projected = count(&db.any, "user_directory").await?;
    let appended = report.appended + args.rate * WARMUP.as_secs();
    if report.unobserved == 0 && projected != appended as i64 {
        return Err(format!("user_directory holds {projected} rows, expected {appended}").into());
    }
    Ok(report)
}

/// Appends at the target rate (warm-up, then measured) and collects the lags.
async fn drive_load(
    name: &str,
    db: &Database,
    args: &Args,
    checkpoints: &Checkpoints,
    relay_stats: &Arc<RelayStats>,
) -> Result<LagReport, Error> {
    let warmup_ticks = args.rate * WARMUP.as_secs();
    let measured_ticks = args.rate * args.duration_secs;
    let (tx, rx) = mpsc::unbounded_channel::<Appended>();
    let watcher = tokio::spawn(watch_lag(rx, checkpoints.clone(), relay_stats.clone()));

    let bar = count_bar(
        &format!("{name} lag"),
        warmup_ticks + measured_ticks,
        !args.json,
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut appends: JoinSet<Result<Option<Instant>, Error>> = JoinSet::new();
    let mut measured_start = None;
    let mut last_return = None;
    let mut failure = None;
    for i in 0..warmup_ticks + measured_ticks {
        tick.tick().await;
        let measured = i >= warmup_ticks;
        if measured && measured_start.is_none() {
            measured_start = Some(Instant::now());
        }
        let store = db.store.clone();
        let tx = tx.clone();
        appends.spawn(async move {
            let position = append_registered(&store).await?;
            let returned = Instant::now();
            let _ = tx.send((position, returned, measured));
            Ok(measured.then_some(returned))
        });
        while let Some(done) = appends.try_join_next() {
            note(done, &mut last_return, &mut failure);
        }
        if i % 64 == 0 {
            bar.set_position(i);
        }
        if failure.is_some() {
            break;
        }
    }
    drop(tx);
    while let Some(done) = appends.join_next().await {
        note(done, &mut last_return, &mut failure);
    }
    bar.finish_and_clear();
    if let Some(e) = failure {
        watcher.abort();
        return Err(e);
    }
    let lags = watcher
        .await
        .map_err(|e| format!("lag watcher failed: {e}"))?;

    let achieved = match (measured_start, last_return) {
        (Some(start), Some(end)) => Throughput::new(measured_ticks, end - start).per_sec,
        _ => 0.0,
    };
    Ok(LagReport {
        target_per_sec: args.rate,
        achieved_per_sec: achieved,
        appended: measured_ticks,
        published: Percentiles::new(lags.published),
        projected: Percentiles::new(lags.projected),
        unobserved: lags.unobserved,
    })
}

type AppendOutcome = Result<Result<Option<Instant>, Error>, tokio::task::JoinError>;

/// Takes in one finished append task: the latest measured return, or the first failure.
fn note(done: AppendOutcome, last_return: &mut Option<Instant>, failure: &mut Option<Error>) {
    match done {
        Ok(Ok(Some(t))) => *last_return = (*last_return).max(Some(t)),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            failure.get_or_insert(e);
        }
        Err(e) => {
            failure.get_or_insert(format!("append task failed: {e}").into());
        }
    }
}

struct Lags {
    published: Vec<Duration>,
    projected: Vec<Duration>,
    unobserved: u64,
}

/// Positions waiting for a checkpoint to reach them: when each append returned, and whether
/// it is measured.
#[derive(Default)]
struct Waiting(BTreeMap<i64, (Instant, bool)>);

impl Waiting {
    /// Records the lag of every measured position at or below `checkpoint`.
    fn reached(&mut self, checkpoint: i64, now: Instant, lags: &mut Vec<Duration>) {
        let rest = self.0.split_off(&(checkpoint + 1));
        for (_, (returned, measured)) in std::mem::replace(&mut self.0, rest) {
            if measured {
                lags.push(now.saturating_duration_since(returned));
            }
        }
    }

    fn measured(&self) -> u64 {
        self.0.values().filter(|(_, m)| *m).count() as u64
    }
}

/// Polls the relay's and the projection's in-memory checkpoints every millisecond and records,
/// per append, when each passed its position. Ends when every append was seen by both (after
/// the sender closed), or `DRAIN_TIMEOUT` after it closed.
async fn watch_lag(
    mut rx: mpsc::UnboundedReceiver<Appended>,
    checkpoints: Checkpoints,
    relay_stats: Arc<RelayStats>,
) -> Lags {
    let mut lags = Lags {
        published: Vec::new(),
        projected: Vec::new(),
        unobserved: 0,
    };
    let mut to_publish = Waiting::default();
    let mut to_project = Waiting::default();
    let mut deadline: Option<Instant> = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        poll.tick().await;
        loop {
            match rx.try_recv() {
                Ok((position, returned, measured)) => {
                    to_publish.0.insert(position, (returned, measured));
                    to_project.0.insert(position, (returned, measured));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
                    break;
                }
            }
        }
        let relayed = relay_stats.checkpoint.load(Ordering::Relaxed);
        let projected = checkpoints.cached(user_directory::NAME, Domain::User);
        let now = Instant::now();
        to_publish.reached(relayed, now, &mut lags.published);
        to_project.reached(projected, now, &mut lags.projected);
        if let Some(deadline) = deadline {
            if to_project.0.is_empty() && to_publish.0.is_empty() {
                return lags;
            }
            if now >= deadline {
                lags.unobserved = to_project.measured();
                return lags;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn print_tables(report: &Report) {
    println!(
        "project (a) apply rate: {} user.registered events (one aggregate each), from an empty \
         read model; raw first, then the projector",
        report.events
    );
    println!();
    print_throughput_table(
        "projector",
        report.backends.iter().map(|b| {
            (
                b.backend,
                &b.apply.raw,
                &b.apply.projector,
                b.apply.projector_to_raw,
            )
        }),
    );
    println!();
    if let Some(b) = report.backends.first() {
        println!("{:<11}{}", "raw:", b.apply.raw_operation);
        println!("{:<11}{}", "projector:", b.apply.projector_operation);
    }
    println!();
    println!(
        "project (b) end-to-end lag: {} appends/s for {} s after a {} s warm-up; relay + \
         JetStream projector; lag from append return (ms)",
        report.rate, report.duration_secs, report.warmup_secs
    );
    println!();
    println!(
        "{:<9} {:>10} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "backend", "achieved/s", "  until", "events", "p50", "p95", "p99", "max"
    );
    for b in &report.backends {
        let l = &b.lag;
        for (stage, p) in [("published", &l.published), ("projected", &l.projected)] {
            println!(
                "{:<9} {:>10.1} {:<10} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                b.backend,
                l.achieved_per_sec,
                format!("  {stage}"),
                p.samples,
                p.p50_ms,
                p.p95_ms,
                p.p99_ms,
                p.max_ms
            );
        }
        if l.unobserved > 0 {
            println!(
                "{:<9} {} of {} events not projected within {} s of the last append",
                b.backend,
                l.unobserved,
                l.appended,
                DRAIN_TIMEOUT.as_secs()
            );
        }
    }
    println!();
    println!("published: relay checkpoint passed it (acknowledged by JetStream, checkpoint saved)");
    println!("projected: user_directory checkpoint passed it (row committed, visible to reads)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_copy_is_the_projections_own_table() {
        let t = nova_infra::testing::TestDb::new(Engine::Sqlite).await;
        let db = t.open().await;
        let mut conn = db.any.acquire().await.unwrap();
        let ddl =
            nova_projections::schema::copy_statements(&mut conn, user_directory::NAME, RAW_SUFFIX)
                .await
                .unwrap();
        drop(conn);
        db.close().await;
        assert!(ddl[0].contains(&format!("CREATE TABLE {RAW_TABLE} (")));
        assert!(RAW_INSERT.contains(&format!("INSERT INTO {RAW_TABLE} (")));
    }

    #[test]
    fn waiting_positions_resolve_up_to_the_checkpoint() {
        let t = Instant::now();
        let mut w = Waiting::default();
        w.0.insert(1, (t, false));
        w.0.insert(2, (t, true));
        w.0.insert(5, (t, true));
        let mut lags = Vec::new();
        w.reached(3, t + Duration::from_millis(7), &mut lags);
        assert_eq!(lags, vec![Duration::from_millis(7)]);
        assert_eq!(w.measured(), 1);
    }
}
