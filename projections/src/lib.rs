//! Projector runtime and Nova's read models.
//!
//! A projection is a pure function of events and its own tables. The runtime feeds it a
//! domain's events in position order from an [`EventSource`] and, in the same transaction as
//! the projection's writes, advances its checkpoint; an event at or below the checkpoint is
//! never applied again, so redelivery and restarts apply each event exactly once in effect.
//! The projection does not know whether its source tails the store (embedded mode) or a
//! JetStream consumer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nova_event_schemas::Domain;
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::watch;
use tracing::Instrument;

pub mod as_of;
pub mod checkpoint;
pub mod conversation_view;
pub mod experiment_results;
pub mod feed;
pub mod follow_graph;
pub mod notification;
pub mod post_view;
pub mod rebuild;
pub mod schema;
pub mod search;
pub mod status;
pub mod stream_view;
pub mod user_directory;

pub use checkpoint::Checkpoints;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read model database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event source error: {0}")]
    Source(#[from] StoreError),
    #[error("event cannot be decoded: {0}")]
    Decode(#[from] nova_event_schemas::DecodeError),
    #[error("{0}")]
    Search(nova_infra::search::SearchError),
}

/// A read model fed by events.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name; also the checkpoint key.
    fn name(&self) -> &str;
    /// The domains whose events this projection consumes.
    fn domains(&self) -> &'static [Domain];
    /// Called once at the start of every batch transaction, before any `apply` (e.g. to take a
    /// lock that serialises the projection's writers).
    async fn begin(&self, tx: &mut Transaction<'static, Any>) -> Result<(), ProjectionError> {
        let _ = tx;
        Ok(())
    }
    /// Applies a run of events (position order, all above the checkpoint) inside the runtime's
    /// transaction. The default applies them one by one; a projection may override it to write
    /// a run in fewer statements, provided the result equals applying them one by one.
    async fn apply_all(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
    /// Applies one event inside the runtime's transaction.
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
    /// The projection's tables (live names). Their schema comes from the migrations alone; a
    /// rebuild copies them as the database reports them ([`schema`]).
    fn tables(&self) -> Vec<String> {
        Vec::new()
    }
    /// The same projection writing to the `suffix`ed copy of its tables, checkpointed under
    /// `<name><suffix>`. `None` if the projection cannot be rebuilt beside itself.
    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        let _ = suffix;
        None
    }
}

pub use nova_infra::delivery::{EventSource, JetStreamSource, StoreTail};

/// Serialises a projection's writing transactions — its domains' projector tasks, in this
/// process and others — for a projection whose writes read what another domain's writes left
/// (from [`Projection::begin`]): an advisory transaction lock on PostgreSQL, keyed by `scope`
/// and `key` (a table name, so a rebuild's copy has a lock of its own). The two-key form keeps
/// it apart from the event store's one-key append locks. SQLite has one writer anyway.
pub async fn serialise_writers(
    tx: &mut Transaction<'static, Any>,
    scope: &str,
    key: &str,
) -> Result<(), ProjectionError> {
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtext($1), hashtext($2))")
            .bind(scope)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

const BATCH: i64 = 500;

/// Runs one projection for one domain until `stop` flips to true.
pub async fn run_projector(
    projection: Arc<dyn Projection>,
    domain: Domain,
    source: Arc<dyn EventSource>,
    pool: AnyPool,
    checkpoints: Checkpoints,
    mut stop: watch::Receiver<bool>,
) {
    let name = projection.name();
    let mut backoff = Duration::from_millis(100);
    let mut growth = Growth::new(checkpoints.cached(name, domain));
    loop {
        if *stop.borrow() {
            return;
        }
        match project_once(&*projection, domain, &*source, &pool, &checkpoints).await {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                if growth.due(checkpoints.cached(name, domain)) {
                    analyze(&*projection, &pool).await;
                }
            }
            Ok(false) => {
                let seen = checkpoints.cached(name, domain);
                tokio::select! {
                    _ = source.wait_for_more(domain, seen) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(projection = name, %domain, error = %e, "projector failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Spawns [`run_projector`] for each domain of `projection`, all reading `source` and stopping
/// when `stop` flips to true.
pub fn spawn_projectors(
    projection: &Arc<dyn Projection>,
    source: &Arc<dyn EventSource>,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    projection
        .domains()
        .iter()
        .map(|&domain| {
            tokio::spawn(run_projector(
                projection.clone(),
                domain,
                source.clone(),
                pool.clone(),
                checkpoints.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// When a projector has written a lot: after the first [`ANALYZE_FIRST`] positions of its
/// domain that this process applied, then each time that count doubles (at most every
/// [`ANALYZE_MOST`]). Tables filled from empty keep the planner statistics of an empty table
/// until someone analyzes them — PostgreSQL's autovacuum runs a minute or more later — and the
/// plans chosen meanwhile can be many times slower (issue 14: 232 against 1,264 feed reads/s).
#[derive(Debug)]
struct Growth {
    start: i64,
    next: i64,
}

/// Positions applied before the first statistics refresh.
pub const ANALYZE_FIRST: i64 = 1_000;
/// Longest stretch of positions between two refreshes.
pub const ANALYZE_MOST: i64 = 1_000_000;

impl Growth {
    fn new(start: i64) -> Growth {
        Growth {
            start,
            next: start + ANALYZE_FIRST,
        }
    }

    /// Whether the projector at `position` is due a refresh (and schedules the next one).
    fn due(&mut self, position: i64) -> bool {
        if position < self.next {
            return false;
        }
        let applied = position - self.start;
        self.next = position + applied.clamp(ANALYZE_FIRST, ANALYZE_MOST);
        true
    }
}

/// Refreshes the planner statistics of the projection's tables (PostgreSQL; SQLite plans well
/// without them and its `ANALYZE` would take the write lock). A failure is logged, not fatal.
async fn analyze(projection: &dyn Projection, pool: &AnyPool) {
    if !pool
        .connect_options()
        .database_url
        .scheme()
        .starts_with("postgres")
    {
        return;
    }
    for table in projection.tables() {
        if let Err(e) = sqlx::query(&format!("ANALYZE {table}")).execute(pool).await {
            tracing::warn!(projection = projection.name(), table, error = %e, "ANALYZE failed");
        }
    }
    metrics::counter!("nova_projection_analyze_total", "projection" => projection.name().to_owned())
        .increment(1);
}

/// Deletes the rows of `table` whose `column` is `id`: what a view drops of a person it must
/// forget (ADR 0025).
pub(crate) async fn delete_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &str,
    column: &str,
    id: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Applies the next batch. Returns whether anything was applied.
pub async fn project_once(
    projection: &dyn Projection,
    domain: Domain,
    source: &dyn EventSource,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<bool, ProjectionError> {
    let name = projection.name();
    let checkpoint = checkpoints.load(pool, name, domain).await?;
    let events = source.next_batch(domain, checkpoint, BATCH).await?;
    let (Some(from), Some(to)) = (events.first(), events.last()) else {
        return Ok(false);
    };
    let span = tracing::info_span!(
        "project",
        projection = name,
        %domain,
        from = from.position,
        to = to.position,
        events = events.len(),
        applied = tracing::field::Empty,
    );
    apply_batch(projection, domain, source, pool, checkpoints, &events)
        .instrument(span)
        .await?;
    Ok(true)
}

/// [`project_once`]'s transaction, in the batch's `project` span. After the commit, each
/// applied event gets a `debug!` line with its position, type and the request and correlation
/// ids of its metadata: the batch serves many requests, so these lines are where a request id
/// is followed into a projection.
async fn apply_batch(
    projection: &dyn Projection,
    domain: Domain,
    source: &dyn EventSource,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    // Re-read (and lock) the checkpoint inside the transaction: another projector process
    // may have applied this batch since.
    let mut position = Checkpoints::load_in(&mut tx, name, domain).await?;
    let fresh: Vec<&RecordedEvent> = events.iter().filter(|e| e.position > position).collect();
    let applied = fresh.len() as u64;
    if let Some(last) = fresh.last() {
        projection.begin(&mut tx).await?;
        projection.apply_all(&mut tx, &fresh).await?;
        position = last.position;
    }
    Checkpoints::save_in(&mut tx, name, domain, position).await?;
    tx.commit().await?;
    checkpoints.publish(name, domain, position);
    tracing::Span::current().record("applied", applied);
    for e in &fresh {
        tracing::debug!(
            position = e.position,
            event_type = %e.event_type,
            request_id = e.metadata.request_id.as_deref(),
            correlation_id = %e.metadata.correlation_id,
            "event applied"
        );
    }
    metrics::counter!("nova_projection_applied_events_total",
        "projection" => name.to_owned(), "domain" => domain.as_str())
    .increment(applied);
    // Only now may the source forget these events: a crash before this line means they are
    // delivered again and skipped as at-or-below the checkpoint.
    source.acknowledge(domain, position).await;
    Ok(())
}

/// Catches a projection up to the current head of its domains (used by tests and rebuilds).
pub async fn catch_up(
    projection: &dyn Projection,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<(), ProjectionError> {
    let source = StoreTail::new(store.clone());
    for &domain in projection.domains() {
        while project_once(projection, domain, &source, pool, checkpoints).await? {}
    }
    Ok(())
}

/// Every projection Nova runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(user_directory::UserDirectory::default()),
        Arc::new(notification::NotificationView::default()),
        Arc::new(follow_graph::FollowGraph::default()),
        Arc::new(post_view::PostView::default()),
        Arc::new(feed::Feed::default()),
        Arc::new(experiment_results::ExperimentResults::default()),
        Arc::new(stream_view::StreamView::default()),
        Arc::new(conversation_view::ConversationView::default()),
    ]
}

#[cfg(test)]
mod growth_tests {
    use super::*;

    #[test]
    fn statistics_are_refreshed_as_the_written_count_doubles() {
        let mut g = Growth::new(500);
        let mut refreshed = Vec::new();
        for position in (500..=40_000).step_by(250) {
            if g.due(position) {
                refreshed.push(position - 500);
            }
        }
        assert_eq!(refreshed, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
        let mut g = Growth::new(0);
        assert!(g.due(5_000_000));
        assert!(!g.due(5_999_999), "at most every million once large");
        assert!(g.due(6_000_000));
    }
}
