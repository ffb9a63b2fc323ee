//! `Idempotency-Key` for every command (POST/PUT/PATCH/DELETE): the first answer to a key is
//! stored, keyed by (caller, key); a retry with the same key and the same request gets that
//! answer back and appends nothing; the same key with a different request is refused (422);
//! a retry while the first is still running gets 409.
//!
//! Routes that answer with secrets (login, refresh) are not stored — persisting issued tokens
//! in plaintext would defeat storing them hashed; retrying those is harmless (a second session).
//! 5xx answers are not stored either, so the client can retry them.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::AppError;
use super::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const MAX_KEY_LEN: usize = 255;
/// A claimed key whose first request never finished (crash) can be taken over after this.
const STALE_CLAIM_MS: i64 = 60_000;
/// Stored answers are kept this long.
pub const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Response headers worth replaying.
const REPLAYED: [&str; 3] = ["content-type", "x-nova-position", "location"];
const NOT_STORED: [&str; 2] = ["/v1/sessions", "/v1/sessions/refresh"];

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_command = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    if !is_command || NOT_STORED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    match handle(state, key, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    key: HeaderValue,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?
        .to_owned();
    let actor = caller(&state, req.headers());
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    })?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path());
    h.update([0]);
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());
    let now = chrono::Utc::now().timestamp_millis();
    let pool = &state.db.any;

    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (actor, idem_key, request_hash, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (actor, idem_key) DO NOTHING",
    )
    .bind(&actor)
    .bind(&key)
    .bind(&request_hash)
    .bind(now)
    .execute(pool)
    .await
    .map_err(AppError::unavailable)?
    .rows_affected()
        == 1;

    if !claimed {
        type Stored = (String, Option<i64>, Option<String>, Option<String>, i64);
        let row: Option<Stored> = sqlx::query_as(
            "SELECT request_hash, status, headers, body, created_at FROM idempotency_keys \
             WHERE actor = $1 AND idem_key = $2",
        )
        .bind(&actor)
        .bind(&key)
        .fetch_optional(pool)
        .await
        .map_err(AppError::unavailable)?;
        let Some((stored_hash, status, headers, body, created_at)) = row else {
            return Err(in_progress());
        };
        if stored_hash != request_hash {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        match status {
            Some(status) => return Ok(replay(status, headers, body)),
            None if now - created_at < STALE_CLAIM_MS => return Err(in_progress()),
            None => {
                // The first attempt died before answering; take the claim over.
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET created_at = $3 \
                     WHERE actor = $1 AND idem_key = $2 AND status IS NULL AND created_at = $4",
                )
                .bind(&actor)
                .bind(&key)
                .bind(now)
                .bind(created_at)
                .execute(pool)
                .await
                .map_err(AppError::unavailable)?
                .rows_affected()
                    == 1;
                if !taken {
                    return Err(in_progress());
                }
            }
        }
    }

    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = res.status();
    if status.is_server_error() {
        let _ = sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND idem_key = $2")
            .bind(&actor)
            .bind(&key)
            .execute(pool)
            .await;
        return Ok(res);
    }
    let (rparts, rbody) = res.into_parts();
    let rbytes = to_bytes(rbody, usize::MAX)
        .await
        .map_err(AppError::internal)?;
    let headers = stored_headers(&rparts.headers);
    let body_text = String::from_utf8_lossy(&rbytes).into_owned();
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 \
         WHERE actor = $1 AND idem_key = $2",
    )
    .bind(&actor)
    .bind(&key)
    .bind(i64::from(status.as_u16()))
    .bind(&headers)
    .bind(&body_text)
    .execute(pool)
    .await
    .map_err(AppError::unavailable)?;
    Ok(Response::from_parts(rparts, Body::from(rbytes)))
}

/// Keys are per caller: the user of a valid access token, else anonymous.
fn caller(state: &AppState, headers: &HeaderMap) -> String {
    super::extract::bearer(headers)
        .ok()
        .flatten()
        .and_then(|t| state.users.token_subject(&t))
        .map_or_else(|| "anonymous".to_owned(), |u| u.to_string())
}

fn in_progress() -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still being processed",
    )
}

fn stored_headers(h: &HeaderMap) -> String {
    let pairs: Vec<(String, String)> = REPLAYED
        .iter()
        .filter_map(|name| {
            h.get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*name).to_owned(), v.to_owned()))
        })
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

fn replay(status: i64, headers: Option<String>, body: Option<String>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut res = Response::new(Body::from(body.unwrap_or_default()));
    *res.status_mut() = status;
    let pairs: Vec<(String, String)> = headers
        .and_then(|h| serde_json::from_str(&h).ok())
        .unwrap_or_default();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            res.headers_mut().insert(k, v);
        }
    }
    res.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    res
}

/// Deletes stored answers older than [`RETENTION_MS`].
pub async fn purge_expired(pool: &sqlx::AnyPool) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now().timestamp_millis() - RETENTION_MS;
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
