//! `Idempotency-Key` for every command (POST/PUT/PATCH/DELETE): the first answer to a key is
//! stored, keyed by (caller, key); a retry with the same key and the same request gets that
//! answer back and appends nothing; the same key with a different request is refused (422);
//! a retry while the first is still running gets 409.
//!
//! Routes that answer with secrets (login, refresh, a stream's key) are not stored — persisting issued tokens
//! in plaintext would defeat storing them hashed; retrying those is harmless (a second session).
//! Answers that depend on the moment (5xx, 401, 408, 409, 429) are not stored either, so a
//! retry runs anew. The layer wraps matched routes only, so unknown paths store nothing.
//!
//! ADR 0012:
//! - the request fingerprint is an HMAC-SHA256 under a server key (derived from the JWT
//!   secret), never a plain hash: bodies carry passwords, and a plain hash of them is a
//!   password hash without argon2;
//! - a bearer token is authenticated (signature **and** live session) before anything is
//!   looked up, so a revoked token never gets a stored answer; callers without a valid token
//!   are scoped by the request fingerprint itself, so one anonymous client's answer is never
//!   another's;
//! - the request runs inside an idempotency scope (`nova_commands::idempotency`): each of its
//!   commands records a command key in the same transaction as its events, so a retry after a
//!   crash — when the stored claim has no answer and is taken over — appends nothing new and
//!   answers what the first run created.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use nova_commands::user::AuthError;
use nova_infra::idempotency as store;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::error::AppError;
use super::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const MAX_KEY_LEN: usize = 255;
/// Default of [`Settings::takeover`]: a claimed key whose first request never answered (its
/// process died) can be taken over after this.
pub const DEFAULT_TAKEOVER: Duration = Duration::from_secs(60);
/// Stored answers are kept this long.
pub const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Response headers worth replaying.
const REPLAYED: [&str; 3] = ["content-type", "x-nova-position", "location"];
/// Routes (as matched) whose answers carry secrets: tokens, stream keys.
/// Commands whose answers are never stored (they carry secrets, or are never repeated); the
/// header is ignored on them and the OpenAPI document does not offer it.
pub const NOT_STORED: [&str; 4] = [
    "/v1/sessions",
    "/v1/sessions/refresh",
    "/v1/streams",
    "/v1/streams/{id}/key/rotate",
];

/// Idempotency settings of the API.
#[derive(Clone)]
pub struct Settings {
    /// Key of the request fingerprints (HMAC-SHA256).
    key: Arc<SecretString>,
    /// After how long a claim without an answer may be taken over by a retry.
    pub takeover: Duration,
}

impl Settings {
    /// The fingerprint key is derived from the JWT secret (configured, or generated and kept
    /// in the data directory), so it is stable across restarts and never stored.
    pub fn new(jwt_secret: &SecretString, takeover: Duration) -> Self {
        let mut mac = hmac_with(jwt_secret.expose_secret().as_bytes());
        mac.update(b"nova/idempotency-fingerprint/v1");
        let key = hex::encode(mac.finalize().into_bytes());
        Settings {
            key: Arc::new(SecretString::from(key)),
            takeover,
        }
    }

    /// HMAC-SHA256 of `parts`, each followed by a 0 byte, as hex.
    fn fingerprint(&self, parts: &[&[u8]]) -> String {
        let mut mac = hmac_with(self.key.expose_secret().as_bytes());
        for p in parts {
            mac.update(p);
            mac.update(&[0]);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The stored fingerprint of a request: keyed, so a word list cannot find a password
    /// that was in the body.
    pub fn request_fingerprint(&self, method: &str, path: &str, body: &[u8]) -> String {
        self.fingerprint(&[method.as_bytes(), path.as_bytes(), body])
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// The commands that honour `Idempotency-Key`: the operations the OpenAPI document declares it
/// on (`openapi::EdgeResponses`: every `/v1` command but [`NOT_STORED`]), so the document and
/// the middleware cannot disagree. A request with a method its route does not serve is not
/// one of them: it gets its 405, and its key is not claimed.
#[derive(Clone, Default)]
pub struct Commands(Arc<HashSet<(Method, String)>>);

impl Commands {
    pub fn of(doc: &utoipa::openapi::OpenApi) -> Commands {
        let mut set = HashSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                let declared = op.as_ref().is_some_and(|op| {
                    op.parameters
                        .iter()
                        .flatten()
                        .any(|p| p.name.eq_ignore_ascii_case(HEADER.as_str()))
                });
                if declared {
                    set.insert((method, path.clone()));
                }
            }
        }
        Commands(Arc::new(set))
    }

    fn contains(&self, method: &Method, route: &str) -> bool {
        self.0.contains(&(method.clone(), route.to_owned()))
    }
}

pub async fn middleware(
    State((state, commands)): State<(AppState, Commands)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path(), |m| m.as_str());
    if !commands.contains(req.method(), route) {
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
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?
        .to_owned();
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    })?;
    let settings = state.idempotency.clone();
    let request_hash =
        settings.request_fingerprint(parts.method.as_str(), parts.uri.path(), &bytes);
    // Authenticated before anything stored is looked at: a revoked token gets no replay.
    let actor = caller(&state, &parts.headers, &request_hash).await?;
    // The request's commands record keys derived from this in their append transactions.
    let request_key = settings.fingerprint(&[b"command", actor.as_bytes(), key.as_bytes()]);
    let stale_ms = i64::try_from(settings.takeover.as_millis()).unwrap_or(i64::MAX);
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
            None if now - stored.created_at < stale_ms => return Err(in_progress()),
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
        let res = nova_commands::idempotency::scope(request_key, next.run(req)).await;
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

/// Keys are per caller: the user of a valid access token whose session is live. Anyone else
/// is scoped by the request itself (its keyed fingerprint): two anonymous clients share a key
/// space only when they send the very same request — for registration, the same username and
/// password. The client address is deliberately not part of it (ADR 0012).
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    request_hash: &str,
) -> Result<String, AppError> {
    let token = super::extract::bearer(headers).ok().flatten();
    if let Some(token) = token {
        match state.users.authenticate(&token).await {
            Ok(who) => return Ok(who.user_id.to_string()),
            // Not a caller: the handler answers 401 on routes that need one.
            Err(AuthError::InvalidToken) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("anonymous:{request_hash}"))
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
