//! Routes of the `follow` area (API.md "Social graph"): follow/unfollow, block/unblock, and the
//! follower/following lists. Commands answer `{"version": n}` (the relationship aggregate's
//! version) with `X-Nova-Position: follow:<pos>` when something was appended; repeating a
//! command whose effect already holds appends nothing and answers the same version.

use axum::extract::State;
use nova_event_schemas::Domain;
use nova_projections::{follow_graph, user_directory};
use nova_queries::follow::{self as graph, FollowRow};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    Actor, Answer, Json, MinPosition, PageBody, PageParams, PageQuery, Path, Version,
};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow, unfollow))
        .routes(routes!(block, unblock))
        .routes(routes!(followers))
        .routes(routes!(following))
}

/// One entry of a follower or following list: the other user and when the follow began.
#[derive(Serialize, ToSchema)]
pub struct FollowEntry {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    /// RFC 3339 (UTC, microseconds).
    pub followed_at: String,
}

impl From<FollowRow> for FollowEntry {
    fn from(r: FollowRow) -> Self {
        FollowEntry {
            user_id: r.user_id,
            username: r.username,
            display_name: r.display_name,
            followed_at: r.followed_at.to_string(),
        }
    }
}

/// Follow a user. Following someone you already follow changes nothing (no new event).
#[utoipa::path(put, path = "/v1/users/{id}/follow", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to follow")),
    responses(
        (status = 200, description = "following; the relationship's version", body = Version),
        (status = 400, description = "malformed id", body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 422, description = "self_follow, or blocked (either user blocks the other)",
            body = ErrorBody),
    ))]
async fn follow(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.follows.follow(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Follow, done))
}

/// Unfollow a user. Unfollowing someone you do not follow changes nothing.
#[utoipa::path(delete, path = "/v1/users/{id}/follow", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to unfollow; may since have been deactivated")),
    responses(
        (status = 200, body = Version),
        (status = 422, description = "self_follow", body = ErrorBody),
    ))]
async fn unfollow(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .follows
        .unfollow(&actor.ctx, actor.user_id, id)
        .await?;
    Ok(Answer::version(Domain::Follow, done))
}

/// Block a user. Ends the follows between the two of you in both directions; while the block
/// holds neither can follow the other. Blocking twice changes nothing.
#[utoipa::path(put, path = "/v1/users/{id}/block", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to block")),
    responses(
        (status = 200, body = Version),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 422, description = "self_block", body = ErrorBody),
    ))]
async fn block(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.follows.block(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Follow, done))
}

/// Lift your block of a user. Follows ended by the block are not restored.
#[utoipa::path(delete, path = "/v1/users/{id}/block", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to unblock; may since have been deactivated")),
    responses(
        (status = 200, body = Version),
        (status = 422, description = "self_block", body = ErrorBody),
    ))]
async fn unblock(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.follows.unblock(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Follow, done))
}

crate::views!(
    /// The follow lists: the follow graph, and the directory for who is active.
    GraphReads: (follow_graph::NAME, &[Domain::Follow]), (user_directory::NAME, &[Domain::User])
);

/// Common part of the two lists: the user must be active, and the read honours
/// `X-Nova-Min-Position` for both the follow graph and the user directory.
async fn prepare(
    state: &AppState,
    id: Uuid,
    min: &MinPosition<GraphReads>,
) -> Result<(), AppError> {
    min.wait(state).await?;
    if !nova_queries::user::is_active(&state.db.any, id).await? {
        return Err(AppError::not_found("user"));
    }
    Ok(())
}

/// The users who follow `{id}`, newest first. Requires a valid access token (any user may read
/// any active user's lists); deactivated users are not listed.
#[utoipa::path(get, path = "/v1/users/{id}/followers", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id"), PageParams,
           MinPosition<GraphReads>),
    responses(
        (status = 200, body = PageBody<FollowEntry>),
        (status = 400, description = "malformed id, limit or cursor", body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn followers(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    PageQuery(page, _): PageQuery,
    min: MinPosition<GraphReads>,
) -> Result<Json<PageBody<FollowEntry>>, AppError> {
    prepare(&state, id, &min).await?;
    Ok(Json(
        graph::followers(&state.db.any, id, &page).await?.into(),
    ))
}

/// The users `{id}` follows, newest first. Requires a valid access token (any user may read
/// any active user's lists); deactivated users are not listed.
#[utoipa::path(get, path = "/v1/users/{id}/following", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id"), PageParams,
           MinPosition<GraphReads>),
    responses(
        (status = 200, body = PageBody<FollowEntry>),
        (status = 400, description = "malformed id, limit or cursor", body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn following(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    PageQuery(page, _): PageQuery,
    min: MinPosition<GraphReads>,
) -> Result<Json<PageBody<FollowEntry>>, AppError> {
    prepare(&state, id, &min).await?;
    Ok(Json(
        graph::following(&state.db.any, id, &page).await?.into(),
    ))
}
