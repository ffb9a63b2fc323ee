//! SQLite backend, the embedded default: one file in WAL mode. Appends run in
//! `BEGIN IMMEDIATE` transactions, which take SQLite's single write lock up front, so a
//! domain's positions (AUTOINCREMENT) commit in order.

use std::collections::HashMap;

use async_trait::async_trait;
use nova_event_schemas::Domain;
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    batch_command_keys, decide_batch, AppendRequest, Appended, Backend, Decision, EventRow,
    KeyRecord, ReadFilter, RecordedEvent, StoreError, COLUMNS,
};

pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteBackend { pool }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn write_batch(
    tx: &mut Transaction<'_, Sqlite>,
    domain: Domain,
    batch: &[AppendRequest],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let table = domain.events_table();
    let mut current = HashMap::new();
    for req in batch {
        for s in &req.streams {
            if current.contains_key(&s.aggregate_id) {
                continue;
            }
            let (v,): (Option<i64>,) = sqlx::query_as(&format!(
                "SELECT MAX(version) FROM {table} WHERE aggregate_id = $1"
            ))
            .bind(s.aggregate_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::db)?;
            current.insert(s.aggregate_id, v.unwrap_or(0));
        }
    }
    let mut recorded = HashMap::new();
    for key in batch_command_keys(batch) {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_position, streams FROM command_keys \
             WHERE domain = $1 AND command_key = $2",
        )
        .bind(domain.as_str())
        .bind(&key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::db)?;
        if let Some((last_position, streams)) = row {
            recorded.insert(key, KeyRecord::parse(last_position, &streams)?);
        }
    }
    let decisions = decide_batch(batch, current, &recorded);
    let insert = format!(
        "INSERT INTO {table} (event_id, aggregate_id, aggregate_type, version, event_type, \
             schema_version, payload, correlation_id, causation_id, actor_id, request_id, \
             recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING position"
    );
    let mut out = Vec::with_capacity(batch.len());
    // (events, first position, last position) written by the whole batch.
    let mut written = (0, 0, 0);
    for (req, decision) in batch.iter().zip(decisions) {
        let versions = match decision {
            Ok(Decision::Write(v)) => v,
            Ok(Decision::Replay(original)) => {
                out.push(Ok(original));
                continue;
            }
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let mut last_position = 0;
        for s in &req.streams {
            for (n, e) in s.events.iter().enumerate() {
                let (position,): (i64,) = sqlx::query_as(&insert)
                    .bind(e.event_id)
                    .bind(s.aggregate_id)
                    .bind(&s.aggregate_type)
                    .bind(s.expected_version + 1 + n as i64)
                    .bind(&e.event_type)
                    .bind(e.schema_version)
                    .bind(&e.payload)
                    .bind(req.metadata.correlation_id)
                    .bind(req.metadata.causation_id)
                    .bind(req.metadata.actor_id)
                    .bind(req.metadata.request_id.as_deref())
                    .bind(req.recorded_at)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(StoreError::db)?;
                last_position = position;
                if written.0 == 0 {
                    written.1 = position;
                }
                written = (written.0 + 1, written.1, position);
            }
        }
        if let Some(key) = &req.command_key {
            // In the same transaction as the events: both commit, or neither.
            sqlx::query(
                "INSERT INTO command_keys (domain, command_key, last_position, streams, \
                     recorded_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(domain.as_str())
            .bind(key)
            .bind(last_position)
            .bind(KeyRecord::of(req, last_position).streams_json())
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db)?;
        }
        out.push(Ok(Appended::written(last_position, versions)));
    }
    if written.0 > 0 {
        super::record_written(written.0, written.1, written.2);
    }
    Ok(out)
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn append_batch(
        &self,
        domain: Domain,
        batch: &[AppendRequest],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
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
               AND ($2 IS NULL OR aggregate_id = $2) \
               AND ($3 IS NULL OR event_type = $3) \
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db)?;
        let mut results = write_batch(&mut tx, domain, std::slice::from_ref(&request)).await?;
        let _ = written.send(());
        let _ = release.await;
        tx.commit().await.map_err(StoreError::db)?;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("empty batch".into())))
    }
}
