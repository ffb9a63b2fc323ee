//! Event export for analysts (issue 13): the NDJSON stream of `GET /v1/events` over a store of
//! `--events` events (default 1,000,000), read by a client that counts lines, beside a raw
//! `SELECT` of the same rows (every column cast to text, streamed by the driver) in the same
//! run: events/s and their ratio. And memory: the process's peak resident set (`VmHWM`, reset
//! through `/proc/self/clear_refs` before each phase; server and client are this process)
//! above the resident set at the phase's start, for a tenth of the history and for all of it —
//! flat means the two are about the same, whatever the history's size.

use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use nova::app::Components;
use nova_commands::user::credentials::{Argon2Config, Passwords, Tokens};
use nova_commands::user::UserCommands;
use nova_commands::{CommandContext, CommandStore};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::testing::TestDb;
use secrecy::SecretString;
use sqlx::Row;

use crate::http::{serve, user};
use crate::stats::ratio;
use crate::target::{engine_name, BackendChoice};
use crate::workload::{fill_untimed, registered};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendChoice,
    /// Events in the store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Print one JSON object per backend instead of the table.
    #[arg(long)]
    json: bool,
}

/// Streams (aggregates) per append while filling: one transaction each.
const FILL_BATCH: u64 = 1000;
const FILL_CONCURRENCY: usize = 4;

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

/// `VmHWM` and `VmRSS` of this process, in KiB.
fn memory_kib() -> Result<(u64, u64), Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64, Error> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/self/status").into())
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// Resets the peak resident set to the current one (Linux: "5" to `clear_refs`); answers the
/// resident set at that moment.
fn reset_peak() -> Result<u64, Error> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("cannot reset VmHWM through /proc/self/clear_refs: {e}"))?;
    Ok(memory_kib()?.1)
}

/// One phase's figures.
struct Phase {
    events: u64,
    bytes: u64,
    seconds: f64,
    /// Peak resident set above the phase's starting one, KiB.
    peak_growth_kib: u64,
    /// Peak resident set of the process during the phase, KiB.
    peak_kib: u64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

async fn fill(db: &Database, n: u64, progress: bool) -> Result<(), Error> {
    let batches = n.div_ceil(FILL_BATCH);
    let appends = futures::stream::iter(0..batches).map(|b| {
        let store = db.store.clone();
        let size = FILL_BATCH.min(n - b * FILL_BATCH);
        async move {
            let streams = (0..size)
                .map(|_| {
                    let (id, event) = registered();
                    (id, "user", 0, vec![event])
                })
                .collect();
            let metadata = EventMetadata {
                correlation_id: uuid::Uuid::now_v7(),
                ..EventMetadata::default()
            };
            store.append(streams, metadata).await?;
            Ok::<u64, Error>(size)
        }
    });
    fill_untimed(appends, n, FILL_CONCURRENCY, "fill", progress).await
}

/// The raw limit: the same rows and columns, streamed in position order by one query.
async fn raw_select(db: &Database) -> Result<Phase, Error> {
    let start_rss = reset_peak()?;
    let started = Instant::now();
    // The columns the store reads, as text (ids: hex on SQLite, where they are blobs).
    let sql = match db.engine {
        Engine::Sqlite => {
            "SELECT hex(event_id), hex(aggregate_id), aggregate_type, event_type, payload, \
                    hex(correlation_id), hex(causation_id), hex(actor_id), request_id, \
                    recorded_at, position, version, schema_version \
             FROM user_events ORDER BY position"
        }
        Engine::Postgres => {
            "SELECT CAST(event_id AS TEXT), CAST(aggregate_id AS TEXT), aggregate_type, \
                    event_type, CAST(payload AS TEXT), CAST(correlation_id AS TEXT), \
                    CAST(causation_id AS TEXT), CAST(actor_id AS TEXT), request_id, \
                    CAST(recorded_at AS TEXT), position, version, \
                    CAST(schema_version AS BIGINT) \
             FROM user_events ORDER BY position"
        }
    };
    let mut rows = sqlx::query(sql).fetch(&db.any);
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(row) = rows.try_next().await? {
        for i in 0..10 {
            bytes += row
                .try_get::<Option<String>, _>(i)?
                .map_or(0, |s| s.len() as u64);
        }
        for i in 10..13 {
            bytes += row.try_get::<i64, _>(i)?.to_string().len() as u64;
        }
        events += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(rows);
    Ok(Phase {
        events,
        bytes,
        seconds,
        peak_growth_kib: memory_kib()?.0.saturating_sub(start_rss),
        peak_kib: memory_kib()?.0,
    })
}

/// `GET /v1/events?domain=user` as NDJSON, `limit` events (all when `None`), lines counted as
/// the body arrives.
async fn export(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    limit: Option<u64>,
) -> Result<Phase, Error> {
    let start_rss = reset_peak()?;
    let started = Instant::now();
    let mut url = format!("{base}/v1/events?domain=user");
    if let Some(l) = limit {
        url.push_str(&format!("&limit={l}"));
    }
    let res = client
        .get(url)
        .bearer_auth(token)
        .header("Accept", "application/x-ndjson")
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("export: {}", res.status()).into());
    }
    let mut res = res;
    let (mut events, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = res.chunk().await? {
        bytes += chunk.len() as u64;
        events += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok(Phase {
        events,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        peak_growth_kib: memory_kib()?.0.saturating_sub(start_rss),
        peak_kib: memory_kib()?.0,
    })
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let testdb = TestDb::new(engine).await;
    let db = Database::connect(&testdb.url).await?;
    db.migrate().await?;
    let progress = !args.json;
    let fill_started = Instant::now();
    fill(&db, args.events, progress).await?;
    let fill_secs = fill_started.elapsed().as_secs_f64();

    // The API alone: no projector competes with the export for the two cores.
    let server = serve(&testdb, |s| {
        s.components = Components {
            api: true,
            relay: false,
            projections: Some(Vec::new()),
        }
    })
    .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let token = user(&client, &server.base, "bench_analyst").await?;
    let users = UserCommands::new(
        CommandStore::new(db.store.clone()),
        nova_commands::user::vault::Vault::new(db.any.clone()),
        Passwords::new(Argon2Config::default())?,
        Tokens::new(
            &SecretString::from(uuid::Uuid::new_v4().to_string()),
            chrono::Duration::minutes(15),
            chrono::Duration::days(1),
        ),
    );
    users
        .grant_role(
            &CommandContext::new(None, None),
            "bench_analyst",
            nova_event_schemas::user::Role::Analyst,
        )
        .await?;
    let head = db.store.head(Domain::User).await?;

    let raw = raw_select(&db).await?;
    let tenth = export(&client, &server.base, &token, Some(args.events / 10)).await?;
    let full = export(&client, &server.base, &token, None).await?;
    server.stop().await;
    db.close().await;
    drop(testdb);
    if full.events as i64 != head || raw.events as i64 != head {
        return Err(format!(
            "export returned {} events and the raw SELECT {}, of {head}",
            full.events, raw.events
        )
        .into());
    }

    let r = ratio(full.rate(), raw.rate());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "export",
                "backend": engine_name(engine),
                "events": full.events,
                "fill_seconds": fill_secs,
                "export_events_per_sec": full.rate(),
                "export_bytes": full.bytes,
                "raw_select_events_per_sec": raw.rate(),
                "raw_select_bytes": raw.bytes,
                "ratio": r,
                "export_peak_rss_growth_kib": full.peak_growth_kib,
                "export_tenth_peak_rss_growth_kib": tenth.peak_growth_kib,
                "raw_select_peak_rss_growth_kib": raw.peak_growth_kib,
                "export_peak_rss_kib": full.peak_kib,
            })
        );
        return Ok(());
    }
    println!(
        "export ({}, {} events, filled in {:.1}s)",
        engine_name(engine),
        full.events,
        fill_secs
    );
    println!(
        "  NDJSON export events/s {:>12.0}   raw SELECT events/s {:>12.0}   ratio {}",
        full.rate(),
        raw.rate(),
        r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"))
    );
    println!(
        "  bytes                  {:>12}   raw SELECT bytes    {:>12}",
        full.bytes, raw.bytes
    );
    println!(
        "  peak RSS growth (MiB)  {:>12.1}   ({:.1} for {} events; raw SELECT {:.1}; \
         peak RSS of the process while exporting {:.1} MiB)",
        full.peak_growth_kib as f64 / 1024.0,
        tenth.peak_growth_kib as f64 / 1024.0,
        tenth.events,
        raw.peak_growth_kib as f64 / 1024.0,
        full.peak_kib as f64 / 1024.0
    );
    Ok(())
}
