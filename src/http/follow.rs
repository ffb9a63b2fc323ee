//! Routes of the `follow` area (API.md "Social graph"): follow/unfollow, block/unblock, and the
//! follower/following lists. Commands answer `{"version": n}` (the relationship aggregate's
//! version) with `X-Nova-Position: follow:<pos>` when something was appended; repeating a
//! command whose effect already holds appends nothing and answers the same version.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse};
use nova_commands::Done;
use nova_event_schemas::Domain;
use nova_projections::{follow_graph, user_directory};
use nova_queries::follow::{self as graph, Cursor, FollowPage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{position_header, Auth, Json, MinPosition, Path};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(follow, unfollow))
        .routes(routes!(block, unblock))
        .routes(routes!(followers))
        .routes(routes!(following))
}

#[derive(Serialize, ToSchema)]
pub struct Version {
    version: i64,
}

fn version_response(done: Done) -> impl IntoResponse {
    (
        AppendHeaders(position_header(Domain::Follow, done.position)),
        Json(Version {
            version: done.version,
        }),
    )
}

/// Follow a user. Following someone you already follow changes nothing (no new event).
#[utoipa::path(put, path = "/v1/users/{id}/follow", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to follow")),
    responses(
        (status = 200, description = "following; the relationship's version", body = Version),
        (status = 400, description = "malformed id", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 422, description = "self_follow, or blocked (either user blocks the other)",
            body = ErrorBody),
    ))]
async fn follow(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, AppError> {
    let done = state
        .follows
        .follow(&auth.context(&headers), auth.0.user_id, id)
        .await?;
    Ok(version_response(done))
}

/// Unfollow a user. Unfollowing someone you do not follow changes nothing.
#[utoipa::path(delete, path = "/v1/users/{id}/follow", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to unfollow; may since have been deactivated")),
    responses(
        (status = 200, body = Version),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "self_follow", body = ErrorBody),
    ))]
async fn unfollow(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, AppError> {
    let done = state
        .follows
        .unfollow(&auth.context(&headers), auth.0.user_id, id)
        .await?;
    Ok(version_response(done))
}

/// Block a user. Ends the follows between the two of you in both directions; while the block
/// holds neither can follow the other. Blocking twice changes nothing.
#[utoipa::path(put, path = "/v1/users/{id}/block", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to block")),
    responses(
        (status = 200, body = Version),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 422, description = "self_block", body = ErrorBody),
    ))]
async fn block(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, AppError> {
    let done = state
        .follows
        .block(&auth.context(&headers), auth.0.user_id, id)
        .await?;
    Ok(version_response(done))
}

/// Lift your block of a user. Follows ended by the block are not restored.
#[utoipa::path(delete, path = "/v1/users/{id}/block", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to unblock; may since have been deactivated")),
    responses(
        (status = 200, body = Version),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "self_block", body = ErrorBody),
    ))]
async fn unblock(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, AppError> {
    let done = state
        .follows
        .unblock(&auth.context(&headers), auth.0.user_id, id)
        .await?;
    Ok(version_response(done))
}

/// `?limit=&cursor=` of the lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1–100, default 20.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `axum::extract::Query` with Nova's error format.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl ListParams {
    fn parse(self) -> Result<(Option<Cursor>, i64), AppError> {
        let limit = self.limit.unwrap_or(graph::DEFAULT_LIMIT);
        if !(1..=graph::MAX_LIMIT).contains(&limit) {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit must be between 1 and {}", graph::MAX_LIMIT),
            )
            .with_details(serde_json::json!({ "field": "limit" })));
        }
        let cursor = match self.cursor {
            None => None,
            Some(text) => Some(Cursor::decode(&text).ok_or_else(|| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "cursor is not a cursor this list returned",
                )
                .with_details(serde_json::json!({ "field": "cursor" }))
            })?),
        };
        Ok((cursor, limit))
    }
}

/// Common part of the two lists: the user must be active, and the read honours
/// `X-Nova-Min-Position` for both the follow graph and the user directory.
async fn prepare(state: &AppState, id: Uuid, min: &MinPosition) -> Result<(), AppError> {
    min.wait(state, follow_graph::NAME, &[Domain::Follow])
        .await?;
    min.wait(state, user_directory::NAME, &[Domain::User])
        .await?;
    if !nova_queries::user::is_active(&state.db.any, id).await? {
        return Err(AppError::not_found("user"));
    }
    Ok(())
}

/// The users who follow `{id}`, newest first. Requires a valid access token (any user may read
/// any active user's lists); deactivated users are not listed.
#[utoipa::path(get, path = "/v1/users/{id}/followers", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id"), ListParams,
           ("X-Nova-Min-Position" = Option<String>, Header, description = "e.g. follow:42")),
    responses(
        (status = 200, body = FollowPage),
        (status = 400, description = "malformed id, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn followers(
    State(state): State<AppState>,
    _auth: Auth,
    Path(id): Path<Uuid>,
    Query(params): Query<ListParams>,
    min: MinPosition,
) -> Result<Json<FollowPage>, AppError> {
    let (cursor, limit) = params.parse()?;
    prepare(&state, id, &min).await?;
    Ok(Json(
        graph::followers(&state.db.any, id, cursor.as_ref(), limit).await?,
    ))
}

/// The users `{id}` follows, newest first. Requires a valid access token (any user may read
/// any active user's lists); deactivated users are not listed.
#[utoipa::path(get, path = "/v1/users/{id}/following", tag = "social_graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id"), ListParams,
           ("X-Nova-Min-Position" = Option<String>, Header, description = "e.g. follow:42")),
    responses(
        (status = 200, body = FollowPage),
        (status = 400, description = "malformed id, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "unknown or deactivated user", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn following(
    State(state): State<AppState>,
    _auth: Auth,
    Path(id): Path<Uuid>,
    Query(params): Query<ListParams>,
    min: MinPosition,
) -> Result<Json<FollowPage>, AppError> {
    let (cursor, limit) = params.parse()?;
    prepare(&state, id, &min).await?;
    Ok(Json(
        graph::following(&state.db.any, id, cursor.as_ref(), limit).await?,
    ))
}
