//! The one error type of the HTTP edge. Every failure — extractor rejections included — leaves
//! as `{"error": {"code", "message", "details"}}` with the status API.md prescribes. Domain
//! refusals become 4xx, store/dependency trouble 503 with `Retry-After`, anything else a
//! logged 500 with an opaque body: no SQL, no stack trace in a response.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nova_aggregates::conversation::ConversationError;
use nova_aggregates::experiment::ExperimentError;
use nova_aggregates::follow::FollowError;
use nova_aggregates::post::PostError;
use nova_aggregates::stream::StreamError;
use nova_aggregates::user::UserError;
use nova_commands::conversation::keys::KeyError;
use nova_commands::user::AuthError;
use nova_commands::CommandError;
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

/// How a domain's refusal is answered at the edge: its status and its stable code (API.md
/// error format). Every domain's refusal type implements it once, here; the one
/// `From<CommandError<R>>` below does the rest, so a new domain adds one `impl Refusal`.
/// A refusal whose status is a 5xx is a bug (the aggregate refused what the handler should
/// have prevented): logged and answered as an opaque 500.
pub trait Refusal: std::error::Error {
    fn status(&self) -> StatusCode;
    fn code(&self) -> &'static str;
    /// The human sentence; the refusal's own text unless a clearer one is needed.
    fn message(&self) -> String {
        self.to_string()
    }
    /// Seconds after which a retry may succeed (`Retry-After`), if that is known.
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

impl<R: Refusal> From<CommandError<R>> for AppError {
    fn from(e: CommandError<R>) -> Self {
        match e {
            CommandError::Invalid { field, message } => {
                AppError::invalid_field(field, format!("{field} {message}"))
            }
            CommandError::Refused(r) if r.status().is_server_error() => AppError::internal(r),
            CommandError::Refused(r) => {
                let answer = AppError::new(r.status(), r.code(), r.message());
                match r.retry_after() {
                    Some(secs) => answer.retry_after(secs),
                    None => answer,
                }
            }
            CommandError::Conflict => AppError::new(
                StatusCode::CONFLICT,
                "version_conflict",
                "the resource changed concurrently; retry",
            ),
            CommandError::Busy => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too much work of this kind in progress; retry shortly",
            )
            .retry_after(1),
            CommandError::Unavailable(m) => AppError::unavailable(m),
            CommandError::Internal(m) => AppError::internal(m),
        }
    }
}

impl Refusal for UserError {
    fn status(&self) -> StatusCode {
        use StatusCode as S;
        match self {
            UserError::UsernameTaken | UserError::AlreadyRegistered => S::CONFLICT,
            UserError::NotFound | UserError::NotificationNotFound => S::NOT_FOUND,
            UserError::Deactivated | UserError::NotDeactivated => S::UNPROCESSABLE_ENTITY,
            UserError::WrongPassword => S::FORBIDDEN,
            UserError::Locked { .. } => S::TOO_MANY_REQUESTS,
            UserError::SessionInactive
            | UserError::InvalidCredentials
            | UserError::InvalidRefreshToken
            | UserError::RefreshTokenReused => S::UNAUTHORIZED,
            UserError::InvalidPasswordHash | UserError::SessionIdInUse => S::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            UserError::UsernameTaken => "username_taken",
            UserError::AlreadyRegistered => "already_registered",
            UserError::NotFound | UserError::NotificationNotFound => "not_found",
            UserError::Deactivated => "account_deactivated",
            UserError::NotDeactivated => "account_active",
            UserError::WrongPassword => "wrong_password",
            UserError::Locked { .. } => "account_locked",
            UserError::SessionInactive => "invalid_token",
            UserError::InvalidCredentials => "invalid_credentials",
            UserError::InvalidRefreshToken => "invalid_refresh_token",
            UserError::RefreshTokenReused => "refresh_token_reused",
            UserError::InvalidPasswordHash | UserError::SessionIdInUse => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            UserError::NotFound => "user not found".into(),
            UserError::NotificationNotFound => "notification not found".into(),
            UserError::Locked { .. } => "too many failed logins; try again later".into(),
            UserError::SessionInactive => "the access token is invalid, expired or revoked".into(),
            UserError::InvalidRefreshToken => {
                "the refresh token is invalid, expired or revoked".into()
            }
            UserError::RefreshTokenReused => {
                "the refresh token was already used; the session has been revoked".into()
            }
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            UserError::Locked { until } => {
                Some((*until - chrono::Utc::now()).num_seconds().max(1) as u64)
            }
            _ => None,
        }
    }
}

impl Refusal for FollowError {
    fn status(&self) -> StatusCode {
        match self {
            FollowError::UnknownUser => StatusCode::NOT_FOUND,
            FollowError::SelfFollow | FollowError::SelfBlock | FollowError::Blocked => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            FollowError::WrongPair => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            FollowError::UnknownUser => "not_found",
            FollowError::SelfFollow => "self_follow",
            FollowError::SelfBlock => "self_block",
            // The same answer whichever of the two blocks the other.
            FollowError::Blocked => "blocked",
            FollowError::WrongPair => "internal",
        }
    }
}

impl Refusal for PostError {
    fn status(&self) -> StatusCode {
        match self {
            PostError::NotFound | PostError::CommentNotFound => StatusCode::NOT_FOUND,
            PostError::Forbidden => StatusCode::FORBIDDEN,
            PostError::Deleted | PostError::Blocked => StatusCode::UNPROCESSABLE_ENTITY,
            PostError::AlreadyExists => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            PostError::NotFound | PostError::CommentNotFound => "not_found",
            PostError::Forbidden => "forbidden",
            PostError::Deleted => "post_deleted",
            PostError::Blocked => "blocked",
            PostError::AlreadyExists => "already_exists",
        }
    }

    fn message(&self) -> String {
        match self {
            PostError::NotFound => "post not found".into(),
            PostError::CommentNotFound => "comment not found".into(),
            other => other.to_string(),
        }
    }
}

impl Refusal for ExperimentError {
    fn status(&self) -> StatusCode {
        match self {
            ExperimentError::NotFound => StatusCode::NOT_FOUND,
            ExperimentError::AlreadyExists => StatusCode::CONFLICT,
            ExperimentError::Stopped
            | ExperimentError::NotStarted
            | ExperimentError::NotRunning
            | ExperimentError::VariantsChanged => StatusCode::UNPROCESSABLE_ENTITY,
            ExperimentError::WrongParticipant => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ExperimentError::NotFound => "not_found",
            ExperimentError::AlreadyExists => "already_exists",
            ExperimentError::Stopped => "experiment_stopped",
            ExperimentError::NotStarted => "experiment_not_started",
            ExperimentError::NotRunning => "experiment_not_running",
            ExperimentError::VariantsChanged => "variants_changed",
            ExperimentError::WrongParticipant => "internal",
        }
    }
}

impl Refusal for StreamError {
    fn status(&self) -> StatusCode {
        match self {
            StreamError::NotFound => StatusCode::NOT_FOUND,
            StreamError::AlreadyExists => StatusCode::CONFLICT,
            StreamError::NotBroadcaster | StreamError::KeyRefused => StatusCode::FORBIDDEN,
            StreamError::Ended | StreamError::NotLive | StreamError::Disabled => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }

    fn code(&self) -> &'static str {
        match self {
            StreamError::NotFound => "not_found",
            StreamError::AlreadyExists => "already_exists",
            StreamError::NotBroadcaster => "not_broadcaster",
            StreamError::KeyRefused => "key_refused",
            StreamError::Ended => "stream_ended",
            StreamError::NotLive => "stream_not_live",
            StreamError::Disabled => "stream_disabled",
        }
    }
}

impl Refusal for ConversationError {
    fn status(&self) -> StatusCode {
        use ConversationError as E;
        match self {
            E::NotFound | E::MessageNotFound | E::UnknownUser => StatusCode::NOT_FOUND,
            E::AlreadyExists => StatusCode::CONFLICT,
            E::NotMember | E::NotAdmin | E::NotSender => StatusCode::FORBIDDEN,
            E::Recalled
            | E::RequestDeclined
            | E::NoRequest
            | E::DirectMembership
            | E::Blocked
            | E::BeyondLastMessage => StatusCode::UNPROCESSABLE_ENTITY,
            E::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn code(&self) -> &'static str {
        use ConversationError as E;
        match self {
            E::NotFound | E::MessageNotFound | E::UnknownUser => "not_found",
            E::AlreadyExists => "already_exists",
            E::NotMember => "not_member",
            E::NotAdmin => "not_admin",
            E::NotSender => "not_sender",
            E::Recalled => "message_recalled",
            E::RequestDeclined => "request_declined",
            E::NoRequest => "no_request",
            E::DirectMembership => "direct_membership",
            E::Blocked => "blocked",
            E::BeyondLastMessage => "beyond_last_message",
            E::TooLarge => "payload_too_large",
        }
    }
}

impl Refusal for KeyError {
    fn status(&self) -> StatusCode {
        match self {
            KeyError::BadSignature(_) => StatusCode::BAD_REQUEST,
            KeyError::UnknownDevice | KeyError::NoOneTimeKey => StatusCode::NOT_FOUND,
            KeyError::DeviceExists | KeyError::KeyIdReused(_) => StatusCode::CONFLICT,
            KeyError::TooManyKeys => StatusCode::UNPROCESSABLE_ENTITY,
            KeyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            KeyError::BadSignature(_) => "invalid_signature",
            KeyError::UnknownDevice => "unknown_device",
            KeyError::NoOneTimeKey => "no_one_time_key",
            KeyError::DeviceExists => "device_exists",
            KeyError::KeyIdReused(_) => "key_exists",
            KeyError::TooManyKeys => "too_many_one_time_keys",
            KeyError::TooLarge(_) => "payload_too_large",
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
