//! The event store: one events table per domain, two backends (PostgreSQL, SQLite) behind
//! [`Backend`], and the [`EventStore`] facade that everything else uses.
//!
//! Invariants:
//! - **optimistic**: every append names the version each aggregate must be at; a mismatch is a
//!   typed [`StoreError::Conflict`], never a raw database error;
//! - **gap-free order**: a domain's appends commit one batch at a time (a transaction-scoped
//!   advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so positions become visible in
//!   increasing order and a reader that resumes "after position N" never skips a late commit;
//! - **group commit**: concurrent appends to one domain are gathered by a per-domain appender
//!   task and committed together in one transaction (one fsync for many commands), each still
//!   checked against its own expected version;
//! - **typed ownership**: appends take a domain's event enum ([`DomainEvent`]), so the table is
//!   chosen by the type of the events, not by a string a caller could get wrong.
//!
//! Each committed batch runs in an `append` span (domain, batch size, streams, the positions
//! written, and the request ids of its appends). The batch serves many callers, so the span is
//! a root that *follows from* each caller's span (the command) rather than a child of one of
//! them; the `request_ids` field is what a reader of JSON logs joins on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use nova_event_schemas::{Domain, DomainEvent, EventMetadata};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::personal::DataKeys;

pub mod esrs_adapter;
pub mod postgres;
pub mod sqlite;

/// An event about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
}

/// Events for one aggregate, valid only if the aggregate is at `expected_version`
/// (0 = the aggregate must not exist yet).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
}

/// One atomic append: all streams are written, or none.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub streams: Vec<StreamAppend>,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    /// The command's key (an opaque string from the command path, e.g. a keyed hash of a
    /// client's `Idempotency-Key`). Recorded in the same transaction as the events; an
    /// append whose key is already recorded in the domain writes nothing and answers the
    /// original append ([`Appended::replayed`]).
    pub command_key: Option<String>,
}

/// What an accepted append produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position of the last event written (0 if the request held no events).
    pub last_position: i64,
    /// New version of each stream, in request order.
    pub versions: Vec<(Uuid, i64)>,
    /// Set when the request's command key had already been recorded: nothing was written and
    /// this describes the original append — each stream's (aggregate id, first version, last
    /// version). The original's aggregate ids may differ from the request's (a retried
    /// command that generated a fresh id).
    pub replayed: Option<Vec<(Uuid, i64, i64)>>,
}

impl Appended {
    pub(crate) fn written(last_position: i64, versions: Vec<(Uuid, i64)>) -> Self {
        Appended {
            last_position,
            versions,
            replayed: None,
        }
    }
}

/// A command key as recorded with the append it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct KeyRecord {
    pub last_position: i64,
    /// (aggregate id, first version, last version) of each stream.
    pub streams: Vec<(Uuid, i64, i64)>,
}

impl KeyRecord {
    pub(crate) fn parse(last_position: i64, streams: &str) -> Result<Self, StoreError> {
        let streams = serde_json::from_str(streams)
            .map_err(|e| StoreError::Invalid(format!("stored command key: {e}")))?;
        Ok(KeyRecord {
            last_position,
            streams,
        })
    }

    pub(crate) fn of(req: &AppendRequest, last_position: i64) -> Self {
        KeyRecord {
            last_position,
            streams: req
                .streams
                .iter()
                .map(|s| {
                    (
                        s.aggregate_id,
                        s.expected_version + 1,
                        s.expected_version + s.events.len() as i64,
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn streams_json(&self) -> String {
        serde_json::to_string(&self.streams).unwrap_or_else(|_| "[]".to_owned())
    }

    pub(crate) fn replay(&self) -> Appended {
        Appended {
            last_position: self.last_position,
            versions: self.streams.iter().map(|(id, _, v)| (*id, *v)).collect(),
            replayed: Some(self.streams.clone()),
        }
    }
}

/// The distinct command keys of a batch (for the lookup of recorded ones).
pub(crate) fn batch_command_keys(batch: &[AppendRequest]) -> Vec<String> {
    let mut keys: Vec<String> = batch.iter().filter_map(|r| r.command_key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// How a request of a batch is answered.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Written, with these new stream versions.
    Write(Vec<(Uuid, i64)>),
    /// Its command key is already recorded: nothing is written, the original is answered.
    Replay(Appended),
}

/// An event as stored (and, serialized, as it travels over JetStream).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedEvent {
    pub domain: Domain,
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes (and upcasts) the payload into the domain's event enum.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, nova_event_schemas::DecodeError> {
        E::from_stored(&self.event_type, self.schema_version, self.payload.clone())
    }
}

impl Default for ReadFilter {
    /// From the beginning, one page of 100.
    fn default() -> Self {
        ReadFilter {
            after_position: 0,
            limit: 100,
            aggregate_id: None,
            event_type: None,
        }
    }
}

pub(crate) const COLUMNS: &str = "position, event_id, aggregate_id, aggregate_type, version, \
     event_type, schema_version, payload, correlation_id, causation_id, actor_id, request_id, \
     recorded_at";

/// A row of any events table, on either backend.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    position: i64,
    event_id: Uuid,
    aggregate_id: Uuid,
    aggregate_type: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: serde_json::Value,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    request_id: Option<String>,
    recorded_at: DateTime<Utc>,
}

impl EventRow {
    pub(crate) fn into_event(self, domain: Domain) -> RecordedEvent {
        RecordedEvent {
            domain,
            position: self.position,
            event_id: self.event_id,
            aggregate_id: self.aggregate_id,
            aggregate_type: self.aggregate_type,
            version: self.version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: EventMetadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                actor_id: self.actor_id,
                request_id: self.request_id,
            },
            recorded_at: self.recorded_at,
        }
    }
}

/// Filters for reading a domain's history (replay, export, projections).
#[derive(Debug, Clone)]
pub struct ReadFilter {
    pub after_position: i64,
    pub limit: i64,
    pub aggregate_id: Option<Uuid>,
    pub event_type: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("aggregate {aggregate_id} is at version {actual}, not {expected}")]
    Conflict {
        aggregate_id: Uuid,
        expected: i64,
        actual: i64,
    },
    /// The database could not be reached or failed; the append may be retried later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("event store rejected the request: {0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn db(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// A storage engine for the events tables. Backends hold no per-domain state: the facade
/// serialises each domain's appends through one appender task per process, and the backend
/// serialises across processes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Commits the accepted requests of `batch` in one transaction. Each request is checked
    /// against the versions as they stand after the requests before it in the batch; the
    /// result for each request is its own.
    async fn append_batch(
        &self,
        domain: Domain,
        batch: &[AppendRequest],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError>;

    /// Events of one aggregate with version > `after_version`, in version order.
    async fn load(
        &self,
        domain: Domain,
        aggregate_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// A domain's events in position order.
    async fn read(
        &self,
        domain: Domain,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The highest committed position of a domain (0 when empty).
    async fn head(&self, domain: Domain) -> Result<i64, StoreError>;

    /// The append recorded under a command key in a domain, if any (as a replay).
    async fn recorded(
        &self,
        domain: Domain,
        command_key: &str,
    ) -> Result<Option<Appended>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Replaces the payload of the event at `position` if it is still at schema version
    /// `from_version`; true if it was replaced. The one kind of history rewrite the design
    /// allows: removing data that must not stay (secrets moved out of events, ADR 0016).
    /// Everything else about the event (id, type, position, metadata) stays.
    async fn rewrite_payload(
        &self,
        domain: Domain,
        position: i64,
        from_version: i32,
        to_version: i32,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// Batches of one domain this process may have in flight at once. They still commit one
    /// at a time (the domain lock); a second one would let the next batch's lock request
    /// overlap the previous batch's commit, at the price of halving the batches.
    fn batches_in_flight(&self) -> usize {
        1
    }

    /// Test hook: appends one request in its own transaction, signals `written` once its rows
    /// are inserted (the domain's append lock is held from then on) and waits for `release`
    /// before committing.
    #[doc(hidden)]
    async fn append_holding(
        &self,
        domain: Domain,
        request: AppendRequest,
        written: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> Result<Appended, StoreError>;
}

/// Decides a batch in memory: given the current versions of the aggregates it touches, which
/// requests are accepted. Shared by both backends so the rule is written once.
pub(crate) fn decide_batch(
    batch: &[AppendRequest],
    mut current: HashMap<Uuid, i64>,
    recorded: &HashMap<String, KeyRecord>,
) -> Vec<Result<Decision, StoreError>> {
    let mut keys_in_batch = std::collections::HashSet::new();
    batch
        .iter()
        .map(|req| {
            if let Some(key) = &req.command_key {
                if let Some(r) = recorded.get(key) {
                    return Ok(Decision::Replay(r.replay()));
                }
                if !keys_in_batch.insert(key.as_str()) {
                    // The same command twice in one batch (a retry racing its original): the
                    // later one conflicts; its retry finds the key recorded.
                    let s = req.streams.first();
                    return Err(StoreError::Conflict {
                        aggregate_id: s.map_or(Uuid::nil(), |s| s.aggregate_id),
                        expected: s.map_or(0, |s| s.expected_version),
                        actual: -1,
                    });
                }
            }
            for s in &req.streams {
                let actual = current.get(&s.aggregate_id).copied().unwrap_or(0);
                if actual != s.expected_version {
                    return Err(StoreError::Conflict {
                        aggregate_id: s.aggregate_id,
                        expected: s.expected_version,
                        actual,
                    });
                }
            }
            let mut versions = Vec::with_capacity(req.streams.len());
            for s in &req.streams {
                let v = s.expected_version + s.events.len() as i64;
                current.insert(s.aggregate_id, v);
                versions.push((s.aggregate_id, v));
            }
            Ok(Decision::Write(versions))
        })
        .collect()
}

/// Every aggregate id a batch touches (for the version lookup).
pub(crate) fn batch_aggregate_ids(batch: &[AppendRequest]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|r| r.streams.iter().map(|s| s.aggregate_id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A request waiting for the appender, with its reply channel and the caller's span.
type Pending = (
    AppendRequest,
    oneshot::Sender<Result<Appended, StoreError>>,
    tracing::Span,
);

/// Upper bound of requests committed in one transaction.
const MAX_BATCH: usize = 512;

/// The event store used by the rest of Nova.
#[derive(Clone)]
pub struct EventStore {
    backend: Arc<dyn Backend>,
    appenders: Arc<HashMap<Domain, mpsc::Sender<Pending>>>,
    heads: Arc<HashMap<Domain, watch::Sender<i64>>>,
    /// Seals personal fields on append and opens them on read (ADR 0025); without it they
    /// are stored and read as they come.
    keys: Arc<std::sync::OnceLock<Arc<dyn DataKeys>>>,
}

impl EventStore {
    /// Wraps a backend and starts one appender task per domain. Must be called inside a
    /// tokio runtime.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let mut appenders = HashMap::new();
        let mut heads = HashMap::new();
        for domain in Domain::ALL {
            let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
            let (head_tx, _) = watch::channel(0i64);
            tokio::spawn(run_appender(backend.clone(), domain, rx, head_tx.clone()));
            appenders.insert(domain, tx);
            heads.insert(domain, head_tx);
        }
        EventStore {
            backend,
            appenders: Arc::new(appenders),
            heads: Arc::new(heads),
            keys: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Hands the store the source of data keys (once, where the application is assembled;
    /// every clone shares it). From then on personal fields are sealed on append and opened on
    /// read (ADR 0025). A second call changes nothing and answers false.
    pub fn set_data_keys(&self, keys: Arc<dyn DataKeys>) -> bool {
        self.keys.set(keys).is_ok()
    }

    /// Opens the personal fields of events read elsewhere than through this store (JetStream):
    /// the plaintext, or `"[erased]"` where the owner's key is gone.
    pub async fn open(&self, events: &mut [RecordedEvent]) -> Result<(), StoreError> {
        match self.keys.get() {
            Some(keys) => crate::personal::open_events(&**keys, events).await,
            None => Ok(()),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Appends typed events of one domain atomically across the given streams.
    pub async fn append<E: DomainEvent>(
        &self,
        streams: Vec<(Uuid, &'static str, i64, Vec<E>)>,
        metadata: EventMetadata,
    ) -> Result<Appended, StoreError> {
        self.append_keyed(streams, metadata, None).await
    }

    /// [`append`](Self::append) under a command key: the key is recorded in the same
    /// transaction as the events, and if it is already recorded in this domain nothing is
    /// written and the original append is answered (`Appended::replayed`).
    pub async fn append_keyed<E: DomainEvent>(
        &self,
        streams: Vec<(Uuid, &'static str, i64, Vec<E>)>,
        metadata: EventMetadata,
        command_key: Option<String>,
    ) -> Result<Appended, StoreError> {
        let streams = streams
            .into_iter()
            .map(
                |(aggregate_id, aggregate_type, expected_version, events)| StreamAppend {
                    aggregate_id,
                    aggregate_type: aggregate_type.to_owned(),
                    expected_version,
                    events: events
                        .iter()
                        .map(|e| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: e.event_type().to_owned(),
                            schema_version: e.schema_version(),
                            payload: e.to_payload(),
                        })
                        .collect(),
                },
            )
            .collect();
        let mut request = AppendRequest {
            streams,
            metadata,
            recorded_at: Utc::now(),
            command_key,
        };
        if let Some(keys) = self.keys.get() {
            crate::personal::seal_request(&**keys, E::DOMAIN, &mut request).await?;
        }
        self.append_raw(E::DOMAIN, request).await
    }

    /// Appends already-encoded events. Crate-private so that only typed appends (whose
    /// domain follows from the event type) are possible outside the store and its tests.
    pub(crate) async fn append_raw(
        &self,
        domain: Domain,
        request: AppendRequest,
    ) -> Result<Appended, StoreError> {
        let (tx, rx) = oneshot::channel();
        let appender = self
            .appenders
            .get(&domain)
            .ok_or_else(|| StoreError::Invalid(format!("no appender for {domain}")))?;
        appender
            .send((request, tx, tracing::Span::current()))
            .await
            .map_err(|_| StoreError::Unavailable("appender stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the append was interrupted".into()))?
    }

    pub async fn load(
        &self,
        domain: Domain,
        aggregate_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self
            .backend
            .load(domain, aggregate_id, after_version)
            .await?;
        self.open(&mut events).await?;
        Ok(events)
    }

    /// A domain's events in position order, personal fields opened.
    pub async fn read(
        &self,
        domain: Domain,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.backend.read(domain, filter).await?;
        self.open(&mut events).await?;
        Ok(events)
    }

    /// [`read`](Self::read) with the personal fields as stored (sealed): what the relay
    /// publishes to JetStream, and what upgrade steps rewrite.
    pub async fn read_sealed(
        &self,
        domain: Domain,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.backend.read(domain, filter).await
    }

    pub async fn head(&self, domain: Domain) -> Result<i64, StoreError> {
        self.backend.head(domain).await
    }

    /// The append already recorded under `command_key` in `domain`, if any (its
    /// `replayed` is set). Lets a command answer a retry before deciding anew; the check
    /// inside the append transaction closes the race with a concurrent attempt.
    pub async fn recorded(
        &self,
        domain: Domain,
        command_key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        self.backend.recorded(domain, command_key).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// See [`Backend::rewrite_payload`]. Only code that owns the domain's events calls it
    /// (through `nova_commands::CommandStore::rewrite`).
    pub async fn rewrite_payload(
        &self,
        domain: Domain,
        position: i64,
        from_version: i32,
        to_version: i32,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.backend
            .rewrite_payload(domain, position, from_version, to_version, payload)
            .await
    }

    /// Wakes when this process appends to `domain` (appends by other processes are seen by
    /// polling `head`).
    pub fn subscribe(&self, domain: Domain) -> watch::Receiver<i64> {
        match self.heads.get(&domain) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(0).1,
        }
    }
}

async fn run_appender(
    backend: Arc<dyn Backend>,
    domain: Domain,
    mut rx: mpsc::Receiver<Pending>,
    head: watch::Sender<i64>,
) {
    let in_flight = backend.batches_in_flight();
    if in_flight <= 1 {
        // One batch at a time: commit it in this task (no hop to another task), while the next
        // requests gather in the channel for the next batch.
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // The callers of the last batch were just woken and are sending their next
            // requests: let them run once before this batch is closed, so it holds all of them
            // rather than the first one or two.
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            // A panic ends this batch — its callers' replies are dropped, so they are answered
            // `Unavailable` — and not the domain's appender, which serves every later append.
            let batch = std::mem::take(&mut batch);
            let committed = AssertUnwindSafe(commit_batch(&*backend, domain, batch, &head))
                .catch_unwind()
                .await;
            if committed.is_err() {
                tracing::error!(%domain, "append batch panicked; its callers were answered unavailable");
            }
        }
        return;
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let backend = backend.clone();
        let head = head.clone();
        tokio::spawn(async move {
            commit_batch(&*backend, domain, batch, &head).await;
            drop(slot);
        });
    }
}

/// The `append` span of a batch: a root span (the appender task serves many callers) that
/// follows from each caller's span. `first_position`/`last_position` are recorded by the
/// backend once it has written.
fn append_span(domain: Domain, batch: &[Pending]) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "append",
        %domain,
        batch_size = batch.len(),
        streams = batch.iter().map(|(r, ..)| r.streams.len()).sum::<usize>(),
        events = tracing::field::Empty,
        first_position = tracing::field::Empty,
        last_position = tracing::field::Empty,
        request_ids = %RequestIds(batch),
    );
    if !span.is_disabled() {
        for (_, _, caller) in batch {
            span.follows_from(caller);
        }
    }
    span
}

/// Records on the current span (a batch's `append` span) what a backend wrote: the number of
/// events and the first and last of their positions.
pub(crate) fn record_written(events: usize, first_position: i64, last_position: i64) {
    let span = tracing::Span::current();
    span.record("events", events);
    span.record("first_position", first_position);
    span.record("last_position", last_position);
}

/// The request ids of a batch, comma-separated (a run of one request's appends named once);
/// written only when the span's fields are formatted, so nothing when the span is disabled.
struct RequestIds<'a>(&'a [Pending]);

impl std::fmt::Display for RequestIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last: Option<&str> = None;
        for (r, ..) in self.0 {
            let Some(id) = r.metadata.request_id.as_deref() else {
                continue;
            };
            if last == Some(id) {
                continue;
            }
            if last.is_some() {
                f.write_str(",")?;
            }
            f.write_str(id)?;
            last = Some(id);
        }
        Ok(())
    }
}

async fn commit_batch(
    backend: &dyn Backend,
    domain: Domain,
    batch: Vec<Pending>,
    head: &watch::Sender<i64>,
) {
    let span = append_span(domain, &batch);
    commit_batch_in(backend, domain, batch, head)
        .instrument(span)
        .await
}

async fn commit_batch_in(
    backend: &dyn Backend,
    domain: Domain,
    batch: Vec<Pending>,
    head: &watch::Sender<i64>,
) {
    let requests: Vec<AppendRequest> = batch.iter().map(|(r, ..)| r.clone()).collect();
    match backend.append_batch(domain, &requests).await {
        Ok(results) => {
            let mut max = 0;
            for ((_, reply, _), result) in batch.into_iter().zip(results) {
                if let Ok(a) = &result {
                    max = max.max(a.last_position);
                }
                let _ = reply.send(result);
            }
            if max > 0 {
                head.send_if_modified(|h| {
                    let grew = max > *h;
                    *h = (*h).max(max);
                    grew
                });
            }
            tracing::debug!("batch committed");
        }
        Err(e) if batch.len() > 1 => {
            // One bad request must not fail its neighbours: retry each on its own.
            tracing::warn!(%domain, error = %e, size = batch.len(), "append batch failed; retrying singly");
            for pending in batch {
                Box::pin(commit_batch(backend, domain, vec![pending], head)).await;
            }
        }
        Err(e) => {
            tracing::warn!(%domain, error = %e, "append failed");
            for (_, reply, _) in batch {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: Uuid, expected: i64, n: usize) -> AppendRequest {
        AppendRequest {
            streams: vec![StreamAppend {
                aggregate_id: id,
                aggregate_type: "t".into(),
                expected_version: expected,
                events: (0..n)
                    .map(|_| NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "x".into(),
                        schema_version: 1,
                        payload: serde_json::json!({}),
                    })
                    .collect(),
            }],
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
            command_key: None,
        }
    }

    #[test]
    fn batch_decisions_see_earlier_requests_of_the_same_batch() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let current = HashMap::from([(b, 3)]);
        let out = decide_batch(
            &[req(a, 0, 2), req(a, 0, 1), req(a, 2, 1), req(b, 3, 1)],
            current,
            &HashMap::new(),
        );
        let written = |d: &Result<Decision, StoreError>| match d {
            Ok(Decision::Write(v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(written(&out[0]), vec![(a, 2)]);
        assert!(matches!(
            out[1],
            Err(StoreError::Conflict {
                expected: 0,
                actual: 2,
                ..
            })
        ));
        assert_eq!(written(&out[2]), vec![(a, 3)]);
        assert_eq!(written(&out[3]), vec![(b, 4)]);
    }

    #[test]
    fn a_recorded_command_key_is_replayed_and_a_repeated_one_conflicts() {
        let (a, b, orig) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let keyed = |id, k: &str| AppendRequest {
            command_key: Some(k.to_owned()),
            ..req(id, 0, 1)
        };
        let recorded = HashMap::from([(
            "k1".to_owned(),
            KeyRecord {
                last_position: 7,
                streams: vec![(orig, 1, 1)],
            },
        )]);
        let out = decide_batch(
            &[keyed(a, "k1"), keyed(b, "k2"), keyed(a, "k2")],
            HashMap::new(),
            &recorded,
        );
        match &out[0] {
            Ok(Decision::Replay(r)) => {
                assert_eq!(r.last_position, 7);
                assert_eq!(r.versions, vec![(orig, 1)]);
                assert_eq!(r.replayed, Some(vec![(orig, 1, 1)]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(out[1], Ok(Decision::Write(_))));
        assert!(matches!(out[2], Err(StoreError::Conflict { .. })));
    }
}
