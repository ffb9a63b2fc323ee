//! PostgreSQL backend: native uuid/jsonb/timestamptz columns, one `<domain>_events` table per
//! domain, appends serialised per domain by `pg_advisory_xact_lock` so positions commit in
//! order (see the module docs of `store`).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nova_event_schemas::Domain;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    batch_aggregate_ids, batch_command_keys, decide_batch, AppendRequest, Appended, Backend,
    Decision, EventRow, KeyRecord, ReadFilter, RecordedEvent, StoreError, COLUMNS,
};

pub struct PgBackend {
    pool: PgPool,
}

impl PgBackend {
    pub fn new(pool: PgPool) -> Self {
        PgBackend { pool }
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

/// Locks the domain, reads current versions, inserts the accepted requests. Leaves the
/// transaction open for the caller to commit.
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

    // Column arrays for one multi-row INSERT ... SELECT FROM UNNEST.
    let mut event_ids = Vec::new();
    let mut aggregate_ids = Vec::new();
    let mut aggregate_types = Vec::new();
    let mut versions = Vec::new();
    let mut event_types = Vec::new();
    let mut schema_versions = Vec::new();
    let mut payloads = Vec::new();
    let mut correlation_ids = Vec::new();
    let mut causation_ids: Vec<Option<Uuid>> = Vec::new();
    let mut actor_ids: Vec<Option<Uuid>> = Vec::new();
    let mut request_ids: Vec<Option<String>> = Vec::new();
    let mut recorded_ats: Vec<DateTime<Utc>> = Vec::new();
    // Index of the request each row belongs to, to hand back positions.
    let mut owners = Vec::new();
    for (i, (req, decision)) in batch.iter().zip(&decisions).enumerate() {
        if !matches!(decision, Ok(Decision::Write(_))) {
            continue;
        }
        for s in &req.streams {
            for (n, e) in s.events.iter().enumerate() {
                event_ids.push(e.event_id);
                aggregate_ids.push(s.aggregate_id);
                aggregate_types.push(s.aggregate_type.clone());
                versions.push(s.expected_version + 1 + n as i64);
                event_types.push(e.event_type.clone());
                schema_versions.push(e.schema_version);
                payloads.push(e.payload.clone());
                correlation_ids.push(req.metadata.correlation_id);
                causation_ids.push(req.metadata.causation_id);
                actor_ids.push(req.metadata.actor_id);
                request_ids.push(req.metadata.request_id.clone());
                recorded_ats.push(req.recorded_at);
                owners.push(i);
            }
        }
    }

    let mut last_positions = vec![0i64; batch.len()];
    if !event_ids.is_empty() {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "INSERT INTO {table} (event_id, aggregate_id, aggregate_type, version, event_type, \
                 schema_version, payload, correlation_id, causation_id, actor_id, request_id, \
                 recorded_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::text[], \
                 $6::int4[], $7::jsonb[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], \
                 $12::timestamptz[]) \
             RETURNING event_id, position"
        ))
        .bind(&event_ids)
        .bind(&aggregate_ids)
        .bind(&aggregate_types)
        .bind(&versions)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&correlation_ids)
        .bind(&causation_ids)
        .bind(&actor_ids)
        .bind(&request_ids)
        .bind(&recorded_ats)
        .fetch_all(&mut **tx)
        .await
        .map_err(map_insert_error)?;
        if let (Some(first), Some(last)) = (
            rows.iter().map(|&(_, p)| p).min(),
            rows.iter().map(|&(_, p)| p).max(),
        ) {
            super::record_written(rows.len(), first, last);
        }
        let owner_of: HashMap<Uuid, usize> = event_ids.iter().copied().zip(owners).collect();
        for (event_id, position) in rows {
            if let Some(&i) = owner_of.get(&event_id) {
                last_positions[i] = last_positions[i].max(position);
            }
        }
    }

    // The command keys of the written requests, in the same transaction as their events.
    let mut key_names = Vec::new();
    let mut key_positions = Vec::new();
    let mut key_streams = Vec::new();
    for ((req, decision), &last_position) in batch.iter().zip(&decisions).zip(&last_positions) {
        if let (Some(key), Ok(Decision::Write(_))) = (&req.command_key, decision) {
            key_names.push(key.clone());
            key_positions.push(last_position);
            key_streams.push(KeyRecord::of(req, last_position).streams_json());
        }
    }
    if !key_names.is_empty() {
        sqlx::query(
            "INSERT INTO command_keys (domain, command_key, last_position, streams, recorded_at) \
             SELECT $1, k, p, s, $5 FROM UNNEST($2::text[], $3::int8[], $4::text[]) AS t(k, p, s)",
        )
        .bind(domain.as_str())
        .bind(&key_names)
        .bind(&key_positions)
        .bind(&key_streams)
        .bind(Utc::now().timestamp_millis())
        .execute(&mut **tx)
        .await
        .map_err(map_insert_error)?;
    }

    Ok(decisions
        .into_iter()
        .zip(last_positions)
        .map(|(d, last_position)| {
            d.map(|d| match d {
                Decision::Write(versions) => Appended::written(last_position, versions),
                Decision::Replay(original) => original,
            })
        })
        .collect())
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
        2
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
