//! As-of copies (ADR 0024): a side copy of a view as it stood at an instant, built beside the
//! live one and never swapped in — for analysts who ask what a view showed then.
//!
//! Built like a rebuild's copy ([`crate::rebuild`]): the live tables copied as the database
//! reports them ([`crate::schema`]), then the projection's own code fed from the store with the
//! normal runtime ([`crate::project_once`], checkpoint in the same transaction), except that
//! the source holds back every event recorded after the instant. Each copy is registered in
//! `projection_as_of` under a small integer id; its tables are `<table>__asof<id>` and its
//! checkpoint `<name>__asof<id>`. An interrupted build resumes when asked again for the same
//! projection and instant. Dropping a copy drops its tables, checkpoint and registration.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use nova_event_schemas::Domain;
use nova_infra::readmodel::{parse_ts, ts};
use nova_infra::store::{EventStore, ReadFilter, RecordedEvent, StoreError};
use serde::Serialize;
use sqlx::AnyPool;

use crate::rebuild::{find, Progress, RebuildError};
use crate::{project_once, Checkpoints, EventSource, Projection, ProjectionError};

/// Tables and checkpoint of copy `id` carry this suffix followed by the id.
pub const SUFFIX: &str = "__asof";

pub fn suffix(id: i64) -> String {
    format!("{SUFFIX}{id}")
}

/// A registered as-of copy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AsOfCopy {
    pub id: i64,
    pub projection: String,
    /// The instant the copy shows (inclusive), to the microsecond.
    pub as_of: DateTime<Utc>,
    /// `building` (interrupted or in progress; resumed by the same rebuild) or `ready`.
    pub state: String,
    /// The copy's tables, beside the live ones.
    pub tables: Vec<String>,
    /// Per consumed domain, the position of the last event the copy applied.
    pub positions: Vec<(Domain, i64)>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    #[serde(flatten)]
    pub copy: AsOfCopy,
    /// Whether an earlier build of the same copy was resumed (or found ready).
    pub resumed: bool,
    pub seconds: f64,
}

/// Replays a domain from the store, holding back events recorded after `until`. Positions and
/// recorded times are not in the same order across processes (the time is taken when a command
/// appends, the position when its batch commits), so later events are skipped, not taken as
/// the end: the copy has exactly the events recorded at or before the instant, in position
/// order — what the export's `until` filter returns.
struct Cut {
    store: EventStore,
    until: DateTime<Utc>,
    /// Position read up to (for progress).
    scanned: AtomicI64,
}

#[async_trait]
impl EventSource for Cut {
    async fn next_batch(
        &self,
        domain: Domain,
        after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut after = after.max(self.scanned.load(Ordering::Relaxed));
        loop {
            let page = self
                .store
                .read(
                    domain,
                    &ReadFilter {
                        after_position: after,
                        limit: max,
                        ..Default::default()
                    },
                )
                .await?;
            let Some(last) = page.last().map(|e| e.position) else {
                return Ok(Vec::new());
            };
            self.scanned.store(last, Ordering::Relaxed);
            let kept: Vec<RecordedEvent> = page
                .into_iter()
                .filter(|e| e.recorded_at <= self.until)
                .collect();
            if !kept.is_empty() {
                return Ok(kept);
            }
            after = last;
        }
    }

    async fn wait_for_more(&self, _domain: Domain, _seen: i64) {}
}

/// The instant as a copy keeps it (read models store microseconds).
pub fn normalize(as_of: DateTime<Utc>) -> DateTime<Utc> {
    as_of.trunc_subsecs(6)
}

/// Builds (or resumes, or finds ready) the copy of `live` as of `as_of`.
pub async fn build(
    live: Arc<dyn Projection>,
    store: &EventStore,
    pool: &AnyPool,
    as_of: DateTime<Utc>,
    progress: impl Fn(Progress),
) -> Result<Report, RebuildError> {
    let started = std::time::Instant::now();
    let as_of = normalize(as_of);
    if as_of > Utc::now() {
        return Err(RebuildError::InFuture(as_of));
    }
    if live.shadow(SUFFIX).is_none() {
        return Err(RebuildError::NotRebuildable(live.name().to_owned()));
    }

    // 1. Register the copy and create its tables, or find the registration.
    let existing = lookup(pool, live.name(), as_of).await?;
    let resumed = existing.is_some();
    let id = match existing {
        Some(id) => id,
        None => register(&*live, pool, as_of).await?,
    };
    let copy = live
        .shadow(&suffix(id))
        .ok_or_else(|| RebuildError::NotRebuildable(live.name().to_owned()))?;

    if get(pool, id).await?.is_some_and(|c| c.state != "ready") {
        // 2. Catch the copy up with the history cut at the instant.
        let own = Checkpoints::default();
        for &domain in live.domains() {
            let source = Cut {
                store: store.clone(),
                until: as_of,
                scanned: AtomicI64::new(0),
            };
            while project_once(&*copy, domain, &source, pool, &own).await? {
                progress(Progress {
                    domain,
                    position: source.scanned.load(Ordering::Relaxed),
                    head: store.head(domain).await.map_err(ProjectionError::from)?,
                });
            }
        }
        for table in copy.tables() {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(pool)
                .await?;
        }
        sqlx::query("UPDATE projection_as_of SET state = 'ready' WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
    }
    let copy = get(pool, id)
        .await?
        .ok_or_else(|| RebuildError::NoSuchCopy(id.to_string()))?;
    Ok(Report {
        copy,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn lookup(
    pool: &AnyPool,
    projection: &str,
    as_of: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM projection_as_of WHERE projection = $1 AND as_of = $2")
            .bind(projection)
            .bind(ts(as_of))
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id,)| id))
}

/// Registers the copy under the next id and creates its tables, in one transaction (a crash
/// leaves either both or neither).
async fn register(
    live: &dyn Projection,
    pool: &AnyPool,
    as_of: DateTime<Utc>,
) -> Result<i64, RebuildError> {
    let mut tx = pool.begin().await?;
    // Written first: on SQLite the transaction then holds the write lock before it reads.
    sqlx::query(
        "INSERT INTO projection_as_of (id, projection, as_of, state, created_at) \
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2, 'building', $3 FROM projection_as_of",
    )
    .bind(live.name())
    .bind(ts(as_of))
    .bind(ts(Utc::now()))
    .execute(&mut *tx)
    .await?;
    let (id,): (i64,) =
        sqlx::query_as("SELECT id FROM projection_as_of WHERE projection = $1 AND as_of = $2")
            .bind(live.name())
            .bind(ts(as_of))
            .fetch_one(&mut *tx)
            .await?;
    let copy_name = format!("{}{}", live.name(), suffix(id));
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(&copy_name)
        .execute(&mut *tx)
        .await?;
    crate::schema::create_copies_in(&mut tx, &live.tables(), &suffix(id)).await?;
    tx.commit().await?;
    Ok(id)
}

type Row = (i64, String, String, String, String);

async fn describe(pool: &AnyPool, row: Row) -> Result<AsOfCopy, RebuildError> {
    let (id, projection, as_of, state, created_at) = row;
    let corrupt = |what: &str| RebuildError::Corrupt(format!("projection_as_of {id}: {what}"));
    let (tables, domains) = match find(&projection) {
        Ok(live) => (
            live.tables()
                .iter()
                .map(|t| format!("{t}{}", suffix(id)))
                .collect(),
            live.domains(),
        ),
        // A projection Nova no longer has: listed, so that it can be dropped.
        Err(_) => (Vec::new(), &[][..]),
    };
    let checkpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT domain, position FROM projection_checkpoints WHERE projection = $1")
            .bind(format!("{projection}{}", suffix(id)))
            .fetch_all(pool)
            .await?;
    let positions = domains
        .iter()
        .map(|&d| {
            let p = checkpoints
                .iter()
                .find(|(name, _)| name == d.as_str())
                .map_or(0, |(_, p)| *p);
            (d, p)
        })
        .collect();
    Ok(AsOfCopy {
        id,
        projection,
        as_of: parse_ts(&as_of).ok_or_else(|| corrupt("as_of"))?,
        state,
        tables,
        positions,
        created_at: parse_ts(&created_at).ok_or_else(|| corrupt("created_at"))?,
    })
}

const SELECT: &str = "SELECT id, projection, as_of, state, created_at FROM projection_as_of";

/// Copy `id`, if registered.
pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<AsOfCopy>, RebuildError> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(Some(describe(pool, row).await?)),
        None => Ok(None),
    }
}

/// Every registered copy, oldest first.
pub async fn list(pool: &AnyPool) -> Result<Vec<AsOfCopy>, RebuildError> {
    let rows: Vec<Row> = sqlx::query_as(&format!("{SELECT} ORDER BY id"))
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(describe(pool, row).await?);
    }
    Ok(out)
}

/// Which copy: by id, or by projection and instant.
#[derive(Debug, Clone)]
pub enum Which {
    Id(i64),
    At(String, DateTime<Utc>),
}

/// Drops a copy: its tables, its checkpoint and its registration, in one transaction.
pub async fn drop_copy(pool: &AnyPool, which: Which) -> Result<AsOfCopy, RebuildError> {
    let id = match &which {
        Which::Id(id) => Some(*id),
        Which::At(name, at) => lookup(pool, name, normalize(*at)).await?,
    };
    let unknown = || {
        RebuildError::NoSuchCopy(match &which {
            Which::Id(id) => format!("id {id}"),
            Which::At(name, at) => format!("{name} as of {}", ts(normalize(*at))),
        })
    };
    let copy = match id {
        Some(id) => get(pool, id).await?.ok_or_else(unknown)?,
        None => return Err(unknown()),
    };
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM projection_as_of WHERE id = $1")
        .bind(copy.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(format!("{}{}", copy.projection, suffix(copy.id)))
        .execute(&mut *tx)
        .await?;
    for table in &copy.tables {
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(copy)
}
