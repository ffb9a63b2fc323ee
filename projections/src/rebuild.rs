//! Zero-downtime rebuild: a fresh copy of a projection's tables is built from the event store
//! (the source of truth, not JetStream) while the live copy keeps serving, then swapped in
//! atomically.
//!
//! 1. The copy (`<table>__rebuild`, made from the live table as the database reports it, every
//!    index included: [`crate::schema`]) and its checkpoint (`<name>__rebuild`) are created if
//!    absent — so an interrupted rebuild resumes where it stopped.
//! 2. The copy catches up to the store's head in batches, reporting progress.
//! 3. Swap, in one transaction: lock the live checkpoint row (the live projector cannot commit
//!    meanwhile), apply the last few events to the copy, rename live → `__retired` and copy →
//!    live, carry the copy's checkpoint over to the live name, drop the retired tables.
//!    Readers see the old table until the commit and the new one after; they never see a
//!    missing table or a half-built one.
//!
//! Only one process rebuilds a projection at a time: a rebuild holds a lease row in
//! `rebuild_leases` ([`Lease`]), renewed after every batch and checked inside the swap
//! transaction; a second rebuild of the same projection is refused ([`RebuildError::Busy`])
//! while the lease is held, and may take it over once a crashed holder's lease has expired.

use std::sync::Arc;

use nova_event_schemas::Domain;
use nova_infra::store::EventStore;
use serde::Serialize;
use sqlx::AnyPool;

use crate::{project_once, Checkpoints, Projection, ProjectionError, StoreTail};

pub const SUFFIX: &str = "__rebuild";
const RETIRED: &str = "__retired";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub domain: Domain,
    /// Position the copy has reached.
    pub position: i64,
    /// The domain's head when this batch was read.
    pub head: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub projection: String,
    /// Position per domain at the swap.
    pub positions: Vec<(Domain, i64)>,
    /// Whether an earlier, interrupted rebuild was resumed.
    pub resumed: bool,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("unknown projection {0}")]
    Unknown(String),
    #[error("projection {0} cannot be rebuilt beside itself")]
    NotRebuildable(String),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("rebuild bookkeeping: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot copy the live tables: {0}")]
    Schema(#[from] crate::schema::SchemaError),
    #[error("{0} is in the future: a view cannot be shown as it will stand")]
    InFuture(chrono::DateTime<chrono::Utc>),
    #[error("no as-of copy {0}")]
    NoSuchCopy(String),
    #[error("corrupt bookkeeping: {0}")]
    Corrupt(String),
    #[error("a rebuild of {0} is already running")]
    Busy(String),
    #[error("the rebuild of {0} lost its lease to another process")]
    LeaseLost(String),
}

/// How long a rebuild's lease holds without renewal (it is renewed after every batch).
pub const LEASE_MS: i64 = 30_000;

/// The right to rebuild one projection: a row in `rebuild_leases` naming this holder.
#[derive(Debug)]
pub struct Lease {
    projection: String,
    owner: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Lease {
    /// Takes the lease of `projection`, or refuses with [`RebuildError::Busy`] while another
    /// holder's lease is live.
    pub async fn take(pool: &AnyPool, projection: &str) -> Result<Lease, RebuildError> {
        let lease = Lease {
            projection: projection.to_owned(),
            owner: uuid::Uuid::now_v7().to_string(),
        };
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO rebuild_leases (projection, owner, lease_until) VALUES ($1, $2, $3) \
             ON CONFLICT (projection) DO UPDATE \
             SET owner = excluded.owner, lease_until = excluded.lease_until \
             WHERE rebuild_leases.lease_until < $4",
        )
        .bind(&lease.projection)
        .bind(&lease.owner)
        .bind(now + LEASE_MS)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
        if taken == 1 {
            Ok(lease)
        } else {
            Err(RebuildError::Busy(projection.to_owned()))
        }
    }

    /// Extends the lease; [`RebuildError::LeaseLost`] if another holder took it over.
    pub(crate) async fn renew<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    ) -> Result<(), RebuildError> {
        let renewed = sqlx::query(
            "UPDATE rebuild_leases SET lease_until = $3 WHERE projection = $1 AND owner = $2",
        )
        .bind(&self.projection)
        .bind(&self.owner)
        .bind(now_ms() + LEASE_MS)
        .execute(executor)
        .await?
        .rows_affected();
        if renewed == 1 {
            Ok(())
        } else {
            Err(RebuildError::LeaseLost(self.projection.clone()))
        }
    }

    /// Gives the lease up (best effort: an unreleased lease expires).
    pub async fn release(self, pool: &AnyPool) {
        let released =
            sqlx::query("DELETE FROM rebuild_leases WHERE projection = $1 AND owner = $2")
                .bind(&self.projection)
                .bind(&self.owner)
                .execute(pool)
                .await;
        if let Err(e) = released {
            tracing::warn!(projection = %self.projection, error = %e, "rebuild lease not released");
        }
    }
}

/// The live projection with this name.
pub fn find(name: &str) -> Result<Arc<dyn Projection>, RebuildError> {
    crate::all()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| RebuildError::Unknown(name.to_owned()))
}

/// What a rebuild by name rebuilds: a view's SQL tables (a copy swapped in), or the search
/// index (a new generation beside the served one, ADR 0013).
pub enum Target {
    Tables(Arc<dyn Projection>),
    Search,
}

/// The rebuild target with this name.
pub fn target(name: &str) -> Result<Target, RebuildError> {
    if name == crate::search::NAME {
        return Ok(Target::Search);
    }
    find(name).map(Target::Tables)
}

/// Rebuilds `target` holding `lease` (released at the end, done or failed); the search index
/// lives under `search`.
pub async fn rebuild_target(
    lease: Lease,
    target: Target,
    search: &nova_infra::search::SearchRoot,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    progress: impl Fn(Progress) + Sync,
) -> Result<Report, RebuildError> {
    match target {
        Target::Tables(live) => {
            rebuild_leased(lease, live, store, pool, checkpoints, progress).await
        }
        Target::Search => crate::search::rebuild_leased(lease, search, store, pool, progress).await,
    }
}

/// Where an unfinished rebuild stands (its copy's checkpoint per domain), if one exists.
pub async fn pending(
    live: &dyn Projection,
    pool: &AnyPool,
) -> Result<Option<Vec<(Domain, i64)>>, sqlx::Error> {
    let name = format!("{}{SUFFIX}", live.name());
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT domain, position FROM projection_checkpoints WHERE projection = $1")
            .bind(&name)
            .fetch_all(pool)
            .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|(d, p)| Domain::parse(&d).map(|d| (d, p)))
            .collect(),
    ))
}

async fn table_exists(pool: &AnyPool, table: &str) -> Result<bool, sqlx::Error> {
    // Works on both engines: a zero-row probe fails iff the table is missing.
    Ok(sqlx::query(&format!("SELECT 1 FROM {table} WHERE 1 = 0"))
        .fetch_optional(pool)
        .await
        .is_ok())
}

/// Rebuilds `live` into a fresh copy and swaps it in, holding its [`Lease`] (refused with
/// [`RebuildError::Busy`] while another process rebuilds it). `progress` is called after every
/// batch.
pub async fn rebuild(
    live: Arc<dyn Projection>,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    progress: impl Fn(Progress),
) -> Result<Report, RebuildError> {
    let lease = Lease::take(pool, live.name()).await?;
    rebuild_leased(lease, live, store, pool, checkpoints, progress).await
}

/// [`rebuild`] with a lease already taken (e.g. before answering that the rebuild started);
/// releases it at the end, done or failed.
pub async fn rebuild_leased(
    lease: Lease,
    live: Arc<dyn Projection>,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    progress: impl Fn(Progress),
) -> Result<Report, RebuildError> {
    let result = rebuild_holding(&lease, live, store, pool, checkpoints, progress).await;
    lease.release(pool).await;
    result
}

async fn rebuild_holding(
    lease: &Lease,
    live: Arc<dyn Projection>,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    progress: impl Fn(Progress),
) -> Result<Report, RebuildError> {
    let started = std::time::Instant::now();
    let copy = live
        .shadow(SUFFIX)
        .ok_or_else(|| RebuildError::NotRebuildable(live.name().to_owned()))?;

    // 1. Create the copy, or resume the one an interrupted rebuild left.
    let resumed = table_exists(pool, &format!("{}{SUFFIX}", live.tables()[0])).await?;
    if !resumed {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
            .bind(copy.name())
            .execute(&mut *tx)
            .await?;
        // The copy is the live tables as the database reports them, indexes included (read
        // after the DELETE above, which took the write lock on SQLite).
        crate::schema::create_copies_in(&mut tx, &live.tables(), SUFFIX).await?;
        tx.commit().await?;
    }

    // 2. Catch the copy up, from the store.
    let source = StoreTail::new(store.clone());
    let own = Checkpoints::default();
    for &domain in live.domains() {
        while project_once(&*copy, domain, &source, pool, &own).await? {
            lease.renew(pool).await?;
            progress(Progress {
                domain,
                position: own.cached(copy.name(), domain),
                head: store.head(domain).await.map_err(ProjectionError::from)?,
            });
        }
    }

    // Fresh tables have no planner statistics yet; without them the first reads after the
    // swap can pick poor plans until autovacuum (PostgreSQL) gets round to them.
    for table in copy.tables() {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await?;
    }

    // 3. Swap (retried: on PostgreSQL it gives up waiting for table locks after a moment
    // rather than queueing every reader behind a long-running one).
    let mut attempt = 0;
    let positions = loop {
        attempt += 1;
        match swap(lease, &*live, &*copy, store, pool).await {
            Ok(p) => break p,
            Err(e @ RebuildError::LeaseLost(_)) => return Err(e),
            Err(e) if attempt < 5 => {
                tracing::warn!(projection = live.name(), error = %e, "rebuild swap failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    for (domain, position) in &positions {
        checkpoints.publish(live.name(), *domain, *position);
    }
    Ok(Report {
        projection: live.name().to_owned(),
        positions,
        resumed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The swap transaction: catch the copy up under the live checkpoint's lock, rename, carry
/// the position over.
async fn swap(
    lease: &Lease,
    live: &dyn Projection,
    copy: &dyn Projection,
    store: &EventStore,
    pool: &AnyPool,
) -> Result<Vec<(Domain, i64)>, RebuildError> {
    let mut tx = pool.begin().await?;
    // Still ours, and held until commit: a holder whose lease expired while it was paused
    // must not swap over a newer rebuild.
    lease.renew(&mut *tx).await?;
    // PostgreSQL only (SQLite rejects the statement, harmlessly: it has no lock queue).
    let _ = sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await;
    let mut positions = Vec::new();
    for &domain in live.domains() {
        // Locks the live projector out until commit.
        Checkpoints::load_in(&mut tx, live.name(), domain).await?;
        let mut position = Checkpoints::load_in(&mut tx, copy.name(), domain).await?;
        loop {
            let events = store
                .read(
                    domain,
                    &nova_infra::store::ReadFilter {
                        after_position: position,
                        limit: 500,
                        ..Default::default()
                    },
                )
                .await
                .map_err(ProjectionError::from)?;
            let Some(last) = events.last().map(|e| e.position) else {
                break;
            };
            for event in &events {
                copy.apply(&mut tx, event).await?;
            }
            position = last;
        }
        Checkpoints::save_in(&mut tx, live.name(), domain, position).await?;
        positions.push((domain, position));
    }
    for table in live.tables() {
        sqlx::query(&format!("ALTER TABLE {table} RENAME TO {table}{RETIRED}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {table}{SUFFIX} RENAME TO {table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE {table}{RETIRED}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(copy.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(positions)
}
