//! `Idempotency-Key` for every command (POST/PUT/PATCH/DELETE): the first answer to a key is
//! stored, keyed by (caller, key); a retry with the same key and the same request gets that
//! answer back and appends nothing; the same key with a different request is refused (422);
//! a retry while the first is still running gets 409.
//!
//! Routes that answer with secrets (login, refresh) are not stored — persisting issued tokens
//! in plaintext would defeat storing them hashed; retrying those is harmless (a second session).
//! Answers that depend on the moment (5xx, 401, 408, 409, 429) are not stored either, so a
//! retry runs anew. The layer wraps matched routes only, so unknown paths store nothing.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nova_infra::idempotency as store;
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
    let pool = state.db.any.clone();

    if !store::claim(&pool, &actor, &key, &request_hash, now)
        .await
        .map_err(AppError::unavailable)?
    {
        let Some(stored) = store::get(&pool, &actor, &key)
            .await
            .map_err(AppError::unavailable)?
        else {
            return Err(in_progress());
        };
        if stored.request_hash != request_hash {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        match stored.status {
            Some(status) => return Ok(replay(status, stored.headers, stored.body)),
            None if now - stored.created_at < STALE_CLAIM_MS => return Err(in_progress()),
            None => {
                // The first attempt died before answering; take the claim over.
                if !store::take_over(&pool, &actor, &key, stored.created_at, now)
                    .await
                    .map_err(AppError::unavailable)?
                {
                    return Err(in_progress());
                }
            }
        }
    }

    // Run the command and record its answer in a task of its own: a client that disconnects
    // mid-request must not cancel the bookkeeping after the command took effect, or its
    // retry would run the command a second time.
    let req = Request::from_parts(parts, Body::from(bytes));
    let task = tokio::spawn(async move {
        let res = next.run(req).await;
        let status = res.status();
        if !worth_replaying(status) {
            let _ = store::release(&pool, &actor, &key).await;
            return Ok(res);
        }
        let (rparts, rbody) = res.into_parts();
        let rbytes = to_bytes(rbody, usize::MAX)
            .await
            .map_err(AppError::internal)?;
        let headers = stored_headers(&rparts.headers);
        let body_text = String::from_utf8_lossy(&rbytes).into_owned();
        store::complete(&pool, &actor, &key, status.as_u16(), &headers, &body_text)
            .await
            .map_err(AppError::unavailable)?;
        Ok(Response::from_parts(rparts, Body::from(rbytes)))
    });
    task.await.map_err(AppError::internal)?
}

/// Answers that a retry should get again. Not: server errors and answers that depend on the
/// moment (auth, rate limits, concurrent conflicts, in-progress) — a retry should run anew.
fn worth_replaying(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::CONFLICT
                | StatusCode::TOO_MANY_REQUESTS
        ))
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
    store::purge_before(pool, chrono::Utc::now().timestamp_millis() - RETENTION_MS).await
}
