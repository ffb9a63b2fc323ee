//! Storage of `Idempotency-Key` answers (table `idempotency_keys`, owned by the HTTP platform
//! layer). The HTTP middleware decides what to store; this module only keeps the SQL.

use sqlx::AnyPool;

/// A stored key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub request_hash: String,
    pub status: Option<i64>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub created_at: i64,
}

/// Claims `(actor, key)` for a new request; false if the key already exists.
pub async fn claim(
    pool: &AnyPool,
    actor: &str,
    key: &str,
    request_hash: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO idempotency_keys (actor, idem_key, request_hash, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (actor, idem_key) DO NOTHING",
    )
    .bind(actor)
    .bind(key)
    .bind(request_hash)
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub async fn get(pool: &AnyPool, actor: &str, key: &str) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, status, headers, body, created_at FROM idempotency_keys \
         WHERE actor = $1 AND idem_key = $2",
    )
    .bind(actor)
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// Takes over a claim whose request never answered (its process died); false if someone else
/// did first.
pub async fn take_over(
    pool: &AnyPool,
    actor: &str,
    key: &str,
    claimed_at: i64,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE idempotency_keys SET created_at = $3 \
         WHERE actor = $1 AND idem_key = $2 AND status IS NULL AND created_at = $4",
    )
    .bind(actor)
    .bind(key)
    .bind(now_ms)
    .bind(claimed_at)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub async fn complete(
    pool: &AnyPool,
    actor: &str,
    key: &str,
    status: u16,
    headers: &str,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 \
         WHERE actor = $1 AND idem_key = $2",
    )
    .bind(actor)
    .bind(key)
    .bind(i64::from(status))
    .bind(headers)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets a key (its answer is not worth replaying, e.g. a 5xx): the client may retry.
pub async fn release(pool: &AnyPool, actor: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2")
        .bind(actor)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes keys created before `cutoff_ms`, and the command keys the event store recorded
/// for them (table `command_keys`, same retention).
pub async fn purge_before(pool: &AnyPool, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
    let answers = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(cutoff_ms)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM command_keys WHERE recorded_at < $1")
        .bind(cutoff_ms)
        .execute(pool)
        .await?;
    Ok(answers)
}
