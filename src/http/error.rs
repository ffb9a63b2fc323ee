//! The one error type of the HTTP edge. Every failure — extractor rejections included — leaves
//! as `{"error": {"code", "message", "details"}}` with the status API.md prescribes. Domain
//! refusals become 4xx, store/dependency trouble 503 with `Retry-After`, anything else a
//! logged 500 with an opaque body: no SQL, no stack trace in a response.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nova_aggregates::follow::FollowError;
use nova_aggregates::post::PostError;
use nova_aggregates::user::UserError;
use nova_commands::follow::FollowCommandError;
use nova_commands::post::PostCommandError;
use nova_commands::user::notifications::NotificationCommandError;
use nova_commands::user::{AuthError, UserCommandError};
use nova_queries::QueryError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

/// The error body, as documented in the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_field", message)
            .with_details(serde_json::json!({ "field": field }))
    }

    pub fn not_found(what: &str) -> Self {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized() -> Self {
        AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an access token is required (Authorization: Bearer <token>)",
        )
    }

    pub fn invalid_token() -> Self {
        AppError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is invalid, expired or revoked",
        )
    }

    /// Dependency trouble: logged with its cause, answered without it.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a dependency is unavailable; retry shortly",
        )
        .retry_after(1)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                let text = e.body_text();
                let detail = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, rest)| rest)
                    .to_owned();
                AppError::invalid_field(&field_of(&detail), detail)
            }
            JsonRejection::JsonSyntaxError(e) => AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {}", source_text(&e)),
            ),
            JsonRejection::MissingJsonContentType(_) => AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ),
            other => AppError::new(StatusCode::BAD_REQUEST, "invalid_body", other.body_text()),
        }
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The field a serde error is about: `missing field `x``, or the `path: message` prefix that
/// serde_path_to_error puts in front.
fn field_of(message: &str) -> String {
    if let Some(rest) = message.split("missing field `").nth(1) {
        return rest.split('`').next().unwrap_or("").to_owned();
    }
    if let Some(rest) = message.split("unknown field `").nth(1) {
        return rest.split('`').next().unwrap_or("").to_owned();
    }
    match message.split_once(": ") {
        Some((path, _)) if !path.contains(' ') && path != "." => path.to_owned(),
        _ => String::new(),
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl From<QueryError> for AppError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unavailable(_) => AppError::unavailable(e),
            // A stored value that does not decode is a bug or a corrupt read model, not
            // something a retry fixes: logged as an error, answered 500, never hidden.
            QueryError::Corrupt(_) => AppError::internal(e),
        }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken => AppError::invalid_token(),
            AuthError::Unavailable(m) => AppError::unavailable(m),
        }
    }
}

impl From<UserCommandError> for AppError {
    fn from(e: UserCommandError) -> Self {
        use StatusCode as S;
        match e {
            UserCommandError::Invalid { field, message } => {
                AppError::invalid_field(field, format!("{field} {message}"))
            }
            UserCommandError::InvalidCredentials => AppError::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "invalid username or password",
            ),
            UserCommandError::Locked { until } => {
                let secs = (until - chrono::Utc::now()).num_seconds().max(1) as u64;
                AppError::new(
                    S::TOO_MANY_REQUESTS,
                    "account_locked",
                    "too many failed logins; try again later",
                )
                .retry_after(secs)
            }
            UserCommandError::InvalidRefreshToken => AppError::new(
                S::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is invalid, expired or revoked",
            ),
            UserCommandError::RefreshTokenReused => AppError::new(
                S::UNAUTHORIZED,
                "refresh_token_reused",
                "the refresh token was already used; the session has been revoked",
            ),
            UserCommandError::Domain(d) => match d {
                UserError::UsernameTaken => AppError::new(
                    S::CONFLICT,
                    "username_taken",
                    "the username is already taken",
                ),
                UserError::AlreadyRegistered => {
                    AppError::new(S::CONFLICT, "already_registered", d.to_string())
                }
                UserError::NotFound => AppError::not_found("user"),
                UserError::Deactivated => AppError::new(
                    S::UNPROCESSABLE_ENTITY,
                    "account_deactivated",
                    d.to_string(),
                ),
                UserError::WrongPassword => AppError::new(
                    S::FORBIDDEN,
                    "wrong_password",
                    "the current password is wrong",
                ),
                UserError::SessionInactive => AppError::invalid_token(),
                UserError::Locked { .. }
                | UserError::InvalidRefreshToken
                | UserError::InvalidPasswordHash
                | UserError::SessionIdInUse => AppError::internal(d),
            },
            UserCommandError::Conflict => AppError::new(
                S::CONFLICT,
                "version_conflict",
                "the resource changed concurrently; retry",
            ),
            UserCommandError::Unavailable(m) => AppError::unavailable(m),
            UserCommandError::Busy => AppError::new(
                S::SERVICE_UNAVAILABLE,
                "busy",
                "too many password checks in progress; retry shortly",
            )
            .retry_after(1),
            UserCommandError::Internal(m) => AppError::internal(m),
        }
    }
}

impl From<NotificationCommandError> for AppError {
    fn from(e: NotificationCommandError) -> Self {
        match e {
            NotificationCommandError::NotificationNotFound => AppError::not_found("notification"),
            NotificationCommandError::Domain(d) => UserCommandError::Domain(d).into(),
            NotificationCommandError::Conflict => UserCommandError::Conflict.into(),
            NotificationCommandError::Unavailable(m) => AppError::unavailable(m),
            NotificationCommandError::Internal(m) => AppError::internal(m),
        }
    }
}

impl From<FollowCommandError> for AppError {
    fn from(e: FollowCommandError) -> Self {
        use StatusCode as S;
        match e {
            FollowCommandError::NotFound => AppError::not_found("user"),
            FollowCommandError::Domain(d) => match d {
                FollowError::SelfFollow => {
                    AppError::new(S::UNPROCESSABLE_ENTITY, "self_follow", d.to_string())
                }
                FollowError::SelfBlock => {
                    AppError::new(S::UNPROCESSABLE_ENTITY, "self_block", d.to_string())
                }
                // The same answer whichever of the two blocks the other.
                FollowError::Blocked => {
                    AppError::new(S::UNPROCESSABLE_ENTITY, "blocked", d.to_string())
                }
                FollowError::WrongPair => AppError::internal(d),
            },
            FollowCommandError::Conflict => AppError::new(
                S::CONFLICT,
                "version_conflict",
                "the resource changed concurrently; retry",
            ),
            FollowCommandError::Unavailable(m) => AppError::unavailable(m),
            FollowCommandError::Internal(m) => AppError::internal(m),
        }
    }
}

impl From<PostCommandError> for AppError {
    fn from(e: PostCommandError) -> Self {
        use StatusCode as S;
        match e {
            PostCommandError::Invalid { field, message } => {
                AppError::invalid_field(field, format!("{field} {message}"))
            }
            PostCommandError::Domain(d) => match d {
                PostError::NotFound => AppError::not_found("post"),
                PostError::CommentNotFound => AppError::not_found("comment"),
                PostError::Forbidden => {
                    AppError::new(S::FORBIDDEN, "forbidden", "only the author may do this")
                }
                PostError::Deleted => AppError::new(
                    S::UNPROCESSABLE_ENTITY,
                    "post_deleted",
                    "the post was deleted or hidden",
                ),
                PostError::AlreadyExists => {
                    AppError::new(S::CONFLICT, "already_exists", d.to_string())
                }
            },
            PostCommandError::Conflict => AppError::new(
                S::CONFLICT,
                "version_conflict",
                "the resource changed concurrently; retry",
            ),
            PostCommandError::Unavailable(m) => AppError::unavailable(m),
            PostCommandError::Internal(m) => AppError::internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn finds_the_field_in_serde_messages() {
        assert_eq!(
            field_of("missing field `username` at line 1 column 2"),
            "username"
        );
        assert_eq!(
            field_of("password: invalid type: integer `5`, expected a string at line 1"),
            "password"
        );
        assert_eq!(field_of("unknown field `nick`, expected one of"), "nick");
        assert_eq!(field_of("invalid type: map, expected a string"), "");
    }
}
