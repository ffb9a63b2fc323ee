//! Request extractors whose rejections all go through [`AppError`].

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nova_commands::user::Authenticated;
use nova_commands::CommandContext;
use nova_event_schemas::Domain;
use nova_projections::checkpoint::Caught;
use uuid::Uuid;

use super::error::AppError;
use super::AppState;

/// `axum::Json` with Nova's error format for bad bodies, accepting only a JSON object at the
/// top level (serde would otherwise read a struct from an array, positionally).
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == "application"
                    && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    AppError::new(StatusCode::BAD_REQUEST, "invalid_body", r.body_text())
                }
            })?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(_) => {
                return Err(AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "the body must be a JSON object",
                ))
            }
            None => {
                return Err(AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "the body is empty; expected a JSON object",
                ))
            }
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with Nova's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const POSITION: HeaderName = HeaderName::from_static("x-nova-position");
pub const MIN_POSITION: HeaderName = HeaderName::from_static("x-nova-min-position");

/// Longest a read waits for `X-Nova-Min-Position` before answering 503.
pub const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(5);

/// Namespace for correlation ids derived from non-UUID request ids.
const REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d72_6571_7565_7374_2d69_6401);

/// The command context of a request: correlation id taken from `X-Request-Id` (set by the
/// request-id layer when the client sent none).
pub struct Ctx(pub CommandContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx(context_from_headers(&parts.headers, None)))
    }
}

pub fn context_from_headers(headers: &HeaderMap, actor: Option<Uuid>) -> CommandContext {
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect::<String>());
    let mut ctx = CommandContext::new(request_id.clone(), actor);
    if let Some(rid) = &request_id {
        ctx.correlation_id = Uuid::try_parse(rid)
            .unwrap_or_else(|_| Uuid::new_v5(&REQUEST_NAMESPACE, rid.as_bytes()));
    }
    ctx
}

/// The authenticated caller (valid access token, active session).
pub struct Auth(pub Authenticated);

impl Auth {
    pub fn context(&self, headers: &HeaderMap) -> CommandContext {
        context_from_headers(headers, Some(self.0.user_id))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(&parts.headers)?.ok_or_else(AppError::unauthorized)?;
        Ok(Auth(state.users.authenticate(&token).await?))
    }
}

/// The bearer token of a request, if any; a malformed Authorization header is a 401.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AppError::invalid_token())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(AppError::invalid_token()),
    }
}

/// `X-Nova-Min-Position: <domain>:<position>` — the read waits until the projection has
/// applied that position.
pub struct MinPosition(pub Option<(Domain, i64)>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let Some(v) = parts.headers.get(MIN_POSITION) else {
            return Ok(MinPosition(None));
        };
        let bad = || {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "X-Nova-Min-Position must look like <domain>:<position>, e.g. user:42",
            )
        };
        let s = v.to_str().map_err(|_| bad())?;
        let (d, p) = s.split_once(':').ok_or_else(bad)?;
        let domain = Domain::parse(d.trim()).ok_or_else(bad)?;
        let position = p.trim().parse::<i64>().map_err(|_| bad())?;
        if position < 0 {
            return Err(bad());
        }
        Ok(MinPosition(Some((domain, position))))
    }
}

impl MinPosition {
    /// Waits for `projection` to reach the requested position (if it consumes that domain).
    pub async fn wait(
        &self,
        state: &AppState,
        projection: &str,
        consumes: &[Domain],
    ) -> Result<(), AppError> {
        let Some((domain, position)) = self.0 else {
            return Ok(());
        };
        if !consumes.contains(&domain) {
            return Ok(());
        }
        wait_for(state, projection, domain, position).await
    }
}

pub async fn wait_for(
    state: &AppState,
    projection: &str,
    domain: Domain,
    position: i64,
) -> Result<(), AppError> {
    match state
        .checkpoints
        .wait_for(
            &state.db.any,
            projection,
            domain,
            position,
            MAX_CONSISTENCY_WAIT,
        )
        .await
    {
        Ok(Caught::Up) => Ok(()),
        Ok(Caught::TimedOut) => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "projection_lagging",
            format!("{projection} has not reached {domain}:{position} yet"),
        )
        .retry_after(1)),
        Err(e) => Err(AppError::unavailable(e)),
    }
}

/// The `X-Nova-Position` header value of a command's result.
pub fn position_header(domain: Domain, position: Option<i64>) -> Option<(HeaderName, HeaderValue)> {
    let p = position?;
    HeaderValue::from_str(&format!("{domain}:{p}"))
        .ok()
        .map(|v| (POSITION, v))
}
