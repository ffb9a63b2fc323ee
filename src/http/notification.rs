//! Routes of the `notification` area (API.md "Read views"): the caller's notifications, the
//! read marker and per-kind preferences. The list is read from the `notification` projection
//! (eventually consistent, `X-Nova-Min-Position` honoured); the settings are the user's own
//! commands.

use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse};
use nova_commands::user::notifications::Preferences;
use nova_event_schemas::user::NotificationKind;
use nova_event_schemas::Domain;
use nova_projections::notification::NAME;
use nova_queries::notification::{self as notifications, Cursor, NotificationPage};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{position_header, wait_for, Auth, Json, MinPosition};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
        .routes(routes!(get_preferences, put_preferences))
}

/// The domains the notification view consumes: a min-position in any of them is waited for.
const CONSUMES: &[Domain] = &[Domain::User, Domain::Follow, Domain::Post];

/// `axum::extract::Query` with Nova's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
struct Query<T>(T);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// 1–100, default 20.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only notifications not yet read.
    unread_only: Option<bool>,
}

/// The caller's visible notifications, newest first, with the unread count.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListParams,
           ("X-Nova-Min-Position" = Option<String>, Header, description = "e.g. post:42")),
    responses(
        (status = 200, body = NotificationPage),
        (status = 400, description = "bad limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    min: MinPosition,
    Query(params): Query<ListParams>,
) -> Result<Json<NotificationPage>, AppError> {
    let limit = params.limit.unwrap_or(notifications::DEFAULT_LIMIT);
    if !(1..=notifications::MAX_LIMIT).contains(&limit) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1 to {}", notifications::MAX_LIMIT),
        )
        .with_details(serde_json::json!({ "field": "limit" })));
    }
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_cursor",
                    "cursor must be a next_cursor returned by this list",
                )
            })
        })
        .transpose()?;
    min.wait(&state, NAME, CONSUMES).await?;
    // The caller's own settings (read marker, preferences) are always current.
    wait_for(&state, NAME, Domain::User, auth.0.last_position).await?;
    let page = notifications::list(
        &state.db.any,
        auth.0.user_id,
        limit,
        cursor.as_ref(),
        params.unread_only.unwrap_or(false),
    )
    .await?;
    Ok(Json(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkReadRequest {
    /// The newest notification read; it and every older one count as read.
    up_to: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct Version {
    version: i64,
}

/// Mark the caller's notifications read up to and including `up_to`.
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications",
    security(("bearer" = [])), request_body = MarkReadRequest,
    responses(
        (status = 200, body = Version),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such notification of the caller's", body = ErrorBody),
    ))]
async fn mark_read(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Json(req): Json<MarkReadRequest>,
) -> Result<impl IntoResponse, AppError> {
    let done = state
        .notifications
        .mark_read(&auth.context(&headers), auth.0.user_id, req.up_to)
        .await?;
    Ok((
        AppendHeaders(position_header(Domain::User, done.position)),
        Json(Version {
            version: done.version,
        }),
    ))
}

/// Per-kind settings; `true` = notifications of that kind are shown.
#[derive(Serialize, ToSchema)]
pub struct PreferencesBody {
    follow: bool,
    like: bool,
    comment: bool,
    mention: bool,
    share: bool,
}

impl From<&Preferences> for PreferencesBody {
    fn from(p: &Preferences) -> Self {
        let on = |k| p.get(&k).copied().unwrap_or(true);
        PreferencesBody {
            follow: on(NotificationKind::Follow),
            like: on(NotificationKind::Like),
            comment: on(NotificationKind::Comment),
            mention: on(NotificationKind::Mention),
            share: on(NotificationKind::Share),
        }
    }
}

/// A boolean that must be present as `true`/`false` (not `null`) when the key is given.
fn some_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

/// A partial update: kinds left out keep their setting.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesPatch {
    #[serde(default, deserialize_with = "some_bool")]
    follow: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    like: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    comment: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    mention: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    share: Option<bool>,
}

/// The caller's notification preferences. Always reflects the caller's own latest writes.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "notifications",
    security(("bearer" = [])),
    params(("X-Nova-Min-Position" = Option<String>, Header, description = "e.g. user:42")),
    responses(
        (status = 200, body = PreferencesBody),
        (status = 400, description = "bad X-Nova-Min-Position", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn get_preferences(
    State(state): State<AppState>,
    auth: Auth,
    min: MinPosition,
) -> Result<Json<PreferencesBody>, AppError> {
    min.wait(&state, NAME, CONSUMES).await?;
    wait_for(&state, NAME, Domain::User, auth.0.last_position).await?;
    let prefs = notifications::preferences(&state.db.any, auth.0.user_id).await?;
    Ok(Json(PreferencesBody::from(&prefs)))
}

/// Switch notification kinds on or off (partial: kinds left out keep their setting). Answers
/// the complete resulting preferences.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "notifications",
    security(("bearer" = [])), request_body = PreferencesPatch,
    responses(
        (status = 200, body = PreferencesBody),
        (status = 400, description = "unknown kind or non-boolean value", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
async fn put_preferences(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Json(req): Json<PreferencesPatch>,
) -> Result<impl IntoResponse, AppError> {
    let changes: Preferences = [
        (NotificationKind::Follow, req.follow),
        (NotificationKind::Like, req.like),
        (NotificationKind::Comment, req.comment),
        (NotificationKind::Mention, req.mention),
        (NotificationKind::Share, req.share),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let (prefs, done) = state
        .notifications
        .set_preferences(&auth.context(&headers), auth.0.user_id, &changes)
        .await?;
    Ok((
        AppendHeaders(position_header(Domain::User, done.position)),
        Json(PreferencesBody::from(&prefs)),
    ))
}
