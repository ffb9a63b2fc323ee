//! PostgreSQL backend: native uuid/jsonb/timestamptz columns, one `<domain>_events` table per
//! domain, appends serialised per domain by `pg_advisory_xact_lock` so positions commit in
//! order (see the module docs of `store`).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nova_event_schemas::Domain;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    batch_aggregate_ids, batch_command_keys, decide_batch, AppendRequest, Appended, Backend,
    Decision, EventRow, KeyRecord, ReadFilter, RecordedEvent, StoreError, COLUMNS,
};

pub struct PgBackend {
    pool: PgPool,
    mode: AppendMode,
    in_flight: usize,
}

/// Batches of one domain a process keeps in flight on PostgreSQL. One: with a batch being a
/// single statement, a second batch in flight only waits for the lock with half the requests,
/// and a whole batch per commit is faster (`nova-bench append --pg-in-flight`, ADR 0027).
pub const BATCHES_IN_FLIGHT: usize = 1;

/// How a batch reaches the table (ADR 0027).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// One statement per batch (`nova_append_<domain>`): decided before the lock, checked and
    /// written under it, committed by the same statement. The default.
    OneStatement,
    /// A transaction that takes the lock, reads versions and keys, decides, inserts and commits:
    /// five to seven round trips under the lock. Every batch takes this path only when its
    /// facts kept changing under the one statement; the benchmark selects it to measure the
    /// difference in one run.
    Locked,
}

impl PgBackend {
    pub fn new(pool: PgPool) -> Self {
        Self::with_mode(pool, AppendMode::OneStatement)
    }

    pub fn with_mode(pool: PgPool, mode: AppendMode) -> Self {
        Self::tuned(pool, mode, BATCHES_IN_FLIGHT)
    }

    /// With `in_flight` batches per domain at once (at least 1), for the benchmark to compare.
    pub fn tuned(pool: PgPool, mode: AppendMode, in_flight: usize) -> Self {
        PgBackend {
            pool,
            mode,
            in_flight: in_flight.max(1),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The advisory lock key of a domain's append lock: a fixed prefix ("nova") and the
/// domain's index, so it cannot collide with per-row locks of other tools by accident.
pub fn append_lock_key(domain: Domain) -> i64 {
    let idx = Domain::ALL.iter().position(|d| *d == domain).unwrap_or(0) as i64;
    0x6e6f_7661_0000_0000 + idx
}

/// The rows a batch writes once decided: one entry per event of an accepted request (column
/// arrays for `UNNEST`), with the index of its request (`owners`), and one per command key of an
/// accepted request.
#[derive(Default)]
struct Rows {
    event_ids: Vec<Uuid>,
    aggregate_ids: Vec<Uuid>,
    aggregate_types: Vec<String>,
    versions: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<serde_json::Value>,
    correlation_ids: Vec<Uuid>,
    causation_ids: Vec<Option<Uuid>>,
    actor_ids: Vec<Option<Uuid>>,
    request_ids: Vec<Option<String>>,
    recorded_ats: Vec<DateTime<Utc>>,
    owners: Vec<i32>,
    key_names: Vec<String>,
    key_owners: Vec<i32>,
    key_streams: Vec<String>,
}

impl Rows {
    fn of(batch: &[AppendRequest], decisions: &[Result<Decision, StoreError>]) -> Self {
        let mut rows = Rows::default();
        for (i, (req, decision)) in batch.iter().zip(decisions).enumerate() {
            if !matches!(decision, Ok(Decision::Write(_))) {
                continue;
            }
            let owner = i as i32;
            for s in &req.streams {
                for (n, e) in s.events.iter().enumerate() {
                    rows.event_ids.push(e.event_id);
                    rows.aggregate_ids.push(s.aggregate_id);
                    rows.aggregate_types.push(s.aggregate_type.clone());
                    rows.versions.push(s.expected_version + 1 + n as i64);
                    rows.event_types.push(e.event_type.clone());
                    rows.schema_versions.push(e.schema_version);
                    rows.payloads.push(e.payload.clone());
                    rows.correlation_ids.push(req.metadata.correlation_id);
                    rows.causation_ids.push(req.metadata.causation_id);
                    rows.actor_ids.push(req.metadata.actor_id);
                    rows.request_ids.push(req.metadata.request_id.clone());
                    rows.recorded_ats.push(req.recorded_at);
                    rows.owners.push(owner);
                }
            }
            if let Some(key) = &req.command_key {
                rows.key_names.push(key.clone());
                rows.key_owners.push(owner);
                // The streams record holds versions only, so it is known before the insert.
                rows.key_streams.push(KeyRecord::of(req, 0).streams_json());
            }
        }
        rows
    }

    /// Binds the twelve event columns, in the order of the events table (the next twelve
    /// parameters of `query`).
    fn bind_events<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.event_ids)
            .bind(&self.aggregate_ids)
            .bind(&self.aggregate_types)
            .bind(&self.versions)
            .bind(&self.event_types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.correlation_ids)
            .bind(&self.causation_ids)
            .bind(&self.actor_ids)
            .bind(&self.request_ids)
            .bind(&self.recorded_ats)
    }

    /// The last position written for each request of a batch of `len`, from the inserted
    /// (event id, position) pairs; 0 for a request that wrote nothing.
    fn last_positions(&self, len: usize, inserted: &[(Uuid, i64)]) -> Vec<i64> {
        if let (Some(first), Some(last)) = (
            inserted.iter().map(|&(_, p)| p).min(),
            inserted.iter().map(|&(_, p)| p).max(),
        ) {
            super::record_written(inserted.len(), first, last);
        }
        let owner_of: HashMap<Uuid, usize> = self
            .event_ids
            .iter()
            .copied()
            .zip(self.owners.iter().map(|&o| o as usize))
            .collect();
        let mut last_positions = vec![0i64; len];
        for &(event_id, position) in inserted {
            if let Some(&i) = owner_of.get(&event_id) {
                last_positions[i] = last_positions[i].max(position);
            }
        }
        last_positions
    }
}

/// Each request's answer, once its batch is committed.
fn answers(
    decisions: Vec<Result<Decision, StoreError>>,
    last_positions: Vec<i64>,
) -> Vec<Result<Appended, StoreError>> {
    decisions
        .into_iter()
        .zip(last_positions)
        .map(|(d, last_position)| {
            d.map(|d| match d {
                Decision::Write(versions) => Appended::written(last_position, versions),
                Decision::Replay(original) => original,
            })
        })
        .collect()
}

/// A row of `nova_append_<domain>`'s answer: (kind, event or aggregate id, command key, position
/// or version, recorded streams); see migration 0032.
type FactRow = (i16, Option<Uuid>, Option<String>, i64, Option<String>);

/// How many times a batch is decided again after its assumed facts proved stale (another
/// process appended to the same aggregates in between) before it falls back to deciding under
/// the lock.
const STATEMENT_ATTEMPTS: usize = 4;

/// Commits a batch in one statement (`nova_append_<domain>`, migration 0032, ADR 0027): the
/// batch is decided against assumed facts — each aggregate at the version its first request
/// expects, no command key recorded — which the function checks under the domain's lock before
/// it inserts. If they were stale it answers the real ones and the batch is decided again. The
/// lock is held for the function's work and the commit only, never across a round trip.
async fn append_in_one_statement(
    pool: &PgPool,
    domain: Domain,
    batch: &[AppendRequest],
) -> Result<Option<Vec<Result<Appended, StoreError>>>, StoreError> {
    let mut current: HashMap<Uuid, i64> = HashMap::new();
    for s in batch.iter().flat_map(|r| &r.streams) {
        current.entry(s.aggregate_id).or_insert(s.expected_version);
    }
    let mut recorded: HashMap<String, KeyRecord> = HashMap::new();
    let keys = batch_command_keys(batch);
    let sql = format!(
        "SELECT * FROM nova_append_{}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        domain.as_str()
    );
    for _ in 0..STATEMENT_ATTEMPTS {
        let decisions = decide_batch(batch, current.clone(), &recorded);
        let rows = Rows::of(batch, &decisions);
        let (check_ids, check_versions): (Vec<Uuid>, Vec<i64>) =
            current.iter().map(|(id, v)| (*id, *v)).unzip();
        let head = sqlx::query_as(&sql)
            .bind(append_lock_key(domain))
            .bind(domain.as_str())
            .bind(&check_ids)
            .bind(&check_versions)
            .bind(&keys);
        let answer: Vec<FactRow> = rows
            .bind_events(head)
            .bind(&rows.owners)
            .bind(&rows.key_names)
            .bind(&rows.key_owners)
            .bind(&rows.key_streams)
            .bind(Utc::now().timestamp_millis())
            .fetch_all(pool)
            .await
            .map_err(map_insert_error)?;
        if answer.iter().all(|(kind, ..)| *kind == 0) {
            let inserted: Vec<(Uuid, i64)> = answer
                .into_iter()
                .filter_map(|(_, id, _, position, _)| id.map(|id| (id, position)))
                .collect();
            let last_positions = rows.last_positions(batch.len(), &inserted);
            return Ok(Some(answers(decisions, last_positions)));
        }
        // The facts as they are, read under the lock; decide again with them.
        recorded.clear();
        for (kind, id, key, n, streams) in answer {
            match (kind, id, key, streams) {
                (1, Some(id), ..) => {
                    current.insert(id, n);
                }
                (2, _, Some(key), Some(streams)) => {
                    recorded.insert(key, KeyRecord::parse(n, &streams)?);
                }
                _ => {}
            }
        }
    }
    Ok(None)
}

/// Locks the domain, reads current versions, inserts the accepted requests. Leaves the
/// transaction open for the caller to commit. The path of a batch whose facts kept changing
/// under [`append_in_one_statement`], and of [`Backend::append_holding`].
async fn write_batch(
    tx: &mut Transaction<'_, Postgres>,
    domain: Domain,
    batch: &[AppendRequest],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let table = domain.events_table();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(append_lock_key(domain))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db)?;

    let ids = batch_aggregate_ids(batch);
    // One backward index probe per aggregate on (aggregate_id, version); a MAX(...) with
    // GROUP BY over `= ANY` degenerates into a scan of whole streams.
    let current: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(&format!(
        "SELECT a.id, v.version FROM UNNEST($1::uuid[]) AS a(id) \
         CROSS JOIN LATERAL (SELECT version FROM {table} WHERE aggregate_id = a.id \
                             ORDER BY version DESC LIMIT 1) v"
    ))
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::db)?
    .into_iter()
    .collect();

    let keys = batch_command_keys(batch);
    let mut recorded = HashMap::new();
    if !keys.is_empty() {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT command_key, last_position, streams FROM command_keys \
             WHERE domain = $1 AND command_key = ANY($2)",
        )
        .bind(domain.as_str())
        .bind(&keys)
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::db)?;
        for (key, last_position, streams) in rows {
            recorded.insert(key, KeyRecord::parse(last_position, &streams)?);
        }
    }

    let decisions = decide_batch(batch, current, &recorded);
    let rows = Rows::of(batch, &decisions);

    let mut inserted: Vec<(Uuid, i64)> = Vec::new();
    if !rows.event_ids.is_empty() {
        let sql = format!(
            "INSERT INTO {table} (event_id, aggregate_id, aggregate_type, version, event_type, \
                 schema_version, payload, correlation_id, causation_id, actor_id, request_id, \
                 recorded_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::text[], \
                 $6::int4[], $7::jsonb[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], \
                 $12::timestamptz[]) \
             RETURNING event_id, position"
        );
        inserted = rows
            .bind_events(sqlx::query_as(&sql))
            .fetch_all(&mut **tx)
            .await
            .map_err(map_insert_error)?;
    }
    let last_positions = rows.last_positions(batch.len(), &inserted);

    // The command keys of the written requests, in the same transaction as their events.
    if !rows.key_names.is_empty() {
        let key_positions: Vec<i64> = rows
            .key_owners
            .iter()
            .map(|&o| last_positions[o as usize])
            .collect();
        sqlx::query(
            "INSERT INTO command_keys (domain, command_key, last_position, streams, recorded_at) \
             SELECT $1, k, p, s, $5 FROM UNNEST($2::text[], $3::int8[], $4::text[]) AS t(k, p, s)",
        )
        .bind(domain.as_str())
        .bind(&rows.key_names)
        .bind(&key_positions)
        .bind(&rows.key_streams)
        .bind(Utc::now().timestamp_millis())
        .execute(&mut **tx)
        .await
        .map_err(map_insert_error)?;
    }

    Ok(answers(decisions, last_positions))
}

/// A unique violation can only mean the version check was bypassed by a writer that does not
/// take the lock; report it as a conflict rather than an outage.
fn map_insert_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.code().as_deref() == Some("23505") {
            return StoreError::Conflict {
                aggregate_id: Uuid::nil(),
                expected: -1,
                actual: -1,
            };
        }
    }
    StoreError::db(e)
}

#[async_trait]
impl Backend for PgBackend {
    async fn append_batch(
        &self,
        domain: Domain,
        batch: &[AppendRequest],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        if self.mode == AppendMode::OneStatement {
            if let Some(results) = append_in_one_statement(&self.pool, domain, batch).await? {
                return Ok(results);
            }
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::db)?;
        let results = write_batch(&mut tx, domain, batch).await?;
        tx.commit().await.map_err(StoreError::db)?;
        Ok(results)
    }

    async fn load(
        &self,
        domain: Domain,
        aggregate_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM {} WHERE aggregate_id = $1 AND version > $2 ORDER BY version",
            domain.events_table()
        ))
        .bind(aggregate_id)
        .bind(after_version)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(rows.into_iter().map(|r| r.into_event(domain)).collect())
    }

    async fn read(
        &self,
        domain: Domain,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM {} WHERE position > $1 \
               AND ($2::uuid IS NULL OR aggregate_id = $2) \
               AND ($3::text IS NULL OR event_type = $3) \
             ORDER BY position LIMIT $4",
            domain.events_table()
        ))
        .bind(filter.after_position)
        .bind(filter.aggregate_id)
        .bind(filter.event_type.as_deref())
        .bind(filter.limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(rows.into_iter().map(|r| r.into_event(domain)).collect())
    }

    async fn rewrite_payload(
        &self,
        domain: Domain,
        position: i64,
        from_version: i32,
        to_version: i32,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET payload = $1, schema_version = $2 \
             WHERE position = $3 AND schema_version = $4",
            domain.events_table()
        ))
        .bind(payload)
        .bind(to_version)
        .bind(position)
        .bind(from_version)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn head(&self, domain: Domain) -> Result<i64, StoreError> {
        let (head,): (Option<i64>,) = sqlx::query_as(&format!(
            "SELECT MAX(position) FROM {}",
            domain.events_table()
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db)?;
        Ok(head.unwrap_or(0))
    }

    fn batches_in_flight(&self) -> usize {
        self.in_flight
    }

    async fn recorded(
        &self,
        domain: Domain,
        command_key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_position, streams FROM command_keys \
             WHERE domain = $1 AND command_key = $2",
        )
        .bind(domain.as_str())
        .bind(command_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db)?;
        row.map(|(p, s)| KeyRecord::parse(p, &s).map(|r| r.replay()))
            .transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::db)?;
        Ok(())
    }

    async fn append_holding(
        &self,
        domain: Domain,
        request: AppendRequest,
        written: oneshot::Sender<()>,
        release: oneshot::Receiver<()>,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::db)?;
        let mut results = write_batch(&mut tx, domain, std::slice::from_ref(&request)).await?;
        let _ = written.send(());
        let _ = release.await;
        tx.commit().await.map_err(StoreError::db)?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("empty batch".into())))
    }
}
