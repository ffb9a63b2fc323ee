//! Routes of the `notification` area (API.md "Read views"): the caller's notifications, the
//! read marker and per-kind preferences. The list is read from the `notification` projection
//! (eventually consistent, `X-Nova-Min-Position` honoured); the settings are the user's own
//! commands.

use axum::extract::State;
use nova_commands::user::notifications::Preferences;
use nova_event_schemas::user::NotificationKind;
use nova_event_schemas::Domain;
use nova_projections::notification::NAME;
use nova_queries::notification::{self as notifications, NotificationRow};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    wait_for, Actor, Answer, Json, ListFilter, MinPosition, PageParams, PageQuery, Version,
};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
        .routes(routes!(get_preferences, put_preferences))
}

/// The domains the notification view consumes: a min-position in any of them is waited for
/// (held equal to the projection's own list by a test below).
const CONSUMES: &[Domain] = &[
    Domain::User,
    Domain::Follow,
    Domain::Post,
    Domain::Stream,
    Domain::Conversation,
];

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UnreadFilter {
    /// Only notifications not yet read.
    unread_only: Option<bool>,
}

impl ListFilter for UnreadFilter {
    const KEYS: &'static [&'static str] = &["unread_only"];
}

/// One notification as the list shows it.
#[derive(Serialize, ToSchema)]
pub struct NotificationItem {
    pub notification_id: Uuid,
    /// `follow`, `like`, `comment`, `mention`, `share`, `stream_started` or `message`.
    pub kind: String,
    /// Who followed, liked, commented, mentioned, shared, went live or wrote.
    pub actor_id: Uuid,
    /// The post concerned (none for `follow`).
    pub post_id: Option<Uuid>,
    /// The comment concerned (`comment`, and `mention` in a comment).
    pub comment_id: Option<Uuid>,
    /// The stream that went live (`stream_started`).
    pub stream_id: Option<Uuid>,
    /// The conversation written in (`message`; the notification carries no content).
    pub conversation_id: Option<Uuid>,
    /// RFC 3339, the time of the event that caused it.
    pub created_at: String,
    pub read: bool,
}

impl From<NotificationRow> for NotificationItem {
    fn from(r: NotificationRow) -> Self {
        NotificationItem {
            notification_id: r.notification_id,
            kind: r.kind,
            actor_id: r.actor_id,
            post_id: r.post_id.map(Uuid::from),
            comment_id: r.comment_id.map(Uuid::from),
            stream_id: r.stream_id.map(Uuid::from),
            conversation_id: r.conversation_id.map(Uuid::from),
            created_at: r.created_at.to_string(),
            read: r.read.0,
        }
    }
}

/// A page of the list, with the unread count.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationItem>,
    /// Pass as `?cursor=` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
    /// Visible notifications not yet read (over the whole list, not this page).
    pub unread_count: i64,
}

crate::views!(
    /// The notification view.
    NotificationReads: (NAME, CONSUMES)
);

/// The caller's visible notifications, newest first, with the unread count.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(PageParams, UnreadFilter,
           MinPosition<NotificationReads>),
    responses(
        (status = 200, body = NotificationPage),
        (status = 400, description = "bad limit or cursor", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    actor: Actor,
    PageQuery(page, filter): PageQuery<UnreadFilter>,
    min: MinPosition<NotificationReads>,
) -> Result<Json<NotificationPage>, AppError> {
    min.wait(&state).await?;
    // The caller's own settings (read marker, preferences) are always current.
    wait_for(&state, NAME, Domain::User, actor.last_position).await?;
    let list = notifications::list(
        &state.db.any,
        actor.user_id,
        &page,
        filter.unread_only.unwrap_or(false),
    )
    .await?;
    Ok(Json(NotificationPage {
        items: list.page.items.into_iter().map(Into::into).collect(),
        next_cursor: list.page.next_cursor,
        unread_count: list.unread_count,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkReadRequest {
    /// The newest notification read; it and every older one count as read.
    up_to: Uuid,
}

/// Mark the caller's notifications read up to and including `up_to`.
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications",
    security(("bearer" = [])), request_body = MarkReadRequest,
    responses(
        (status = 200, body = Version),
        (status = 404, description = "no such notification of the caller's", body = ErrorBody),
    ))]
async fn mark_read(
    State(state): State<AppState>,
    actor: Actor,
    Json(req): Json<MarkReadRequest>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .notifications
        .mark_read(&actor.ctx, actor.user_id, req.up_to)
        .await?;
    Ok(Answer::version(Domain::User, done))
}

/// Per-kind settings; `true` = notifications of that kind are shown.
#[derive(Serialize, ToSchema)]
pub struct PreferencesBody {
    follow: bool,
    like: bool,
    comment: bool,
    mention: bool,
    share: bool,
    /// Someone you follow went live.
    stream_started: bool,
    /// Someone wrote in a conversation you are in.
    message: bool,
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
            stream_started: on(NotificationKind::StreamStarted),
            message: on(NotificationKind::Message),
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
    #[schema(value_type = bool)]
    follow: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    like: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    comment: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    mention: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    share: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    stream_started: Option<bool>,
    #[serde(default, deserialize_with = "some_bool")]
    #[schema(value_type = bool)]
    message: Option<bool>,
}

/// The caller's notification preferences. Always reflects the caller's own latest writes.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "notifications",
    security(("bearer" = [])),
    params(MinPosition<NotificationReads>),
    responses(
        (status = 200, body = PreferencesBody),
        (status = 400, description = "bad X-Nova-Min-Position", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn get_preferences(
    State(state): State<AppState>,
    actor: Actor,
    min: MinPosition<NotificationReads>,
) -> Result<Json<PreferencesBody>, AppError> {
    min.wait(&state).await?;
    wait_for(&state, NAME, Domain::User, actor.last_position).await?;
    let prefs = notifications::preferences(&state.db.any, actor.user_id).await?;
    Ok(Json(PreferencesBody::from(&prefs)))
}

/// Switch notification kinds on or off (partial: kinds left out keep their setting). Answers
/// the complete resulting preferences.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "notifications",
    security(("bearer" = [])), request_body = PreferencesPatch,
    responses(
        (status = 200, body = PreferencesBody),
        (status = 400, description = "unknown kind or non-boolean value", body = ErrorBody),
    ))]
async fn put_preferences(
    State(state): State<AppState>,
    actor: Actor,
    Json(req): Json<PreferencesPatch>,
) -> Result<Answer<PreferencesBody>, AppError> {
    let changes: Preferences = [
        (NotificationKind::Follow, req.follow),
        (NotificationKind::Like, req.like),
        (NotificationKind::Comment, req.comment),
        (NotificationKind::Mention, req.mention),
        (NotificationKind::Share, req.share),
        (NotificationKind::StreamStarted, req.stream_started),
        (NotificationKind::Message, req.message),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let (prefs, done) = state
        .notifications
        .set_preferences(&actor.ctx, actor.user_id, &changes)
        .await?;
    Ok(Answer::ok(
        Domain::User,
        done.position,
        PreferencesBody::from(&prefs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::Views;
    use nova_projections::notification::NotificationView;
    use nova_projections::Projection;

    #[test]
    fn min_positions_name_every_domain_the_view_reads() {
        assert_eq!(
            NotificationReads::domains(),
            NotificationView::default().domains()
        );
    }
}
