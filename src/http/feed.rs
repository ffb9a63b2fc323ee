//! Routes of the `feed` area (API.md "Read views"): the caller's home timeline.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use nova_projections::feed::{self, Feed};
use nova_projections::Projection;
use nova_queries::feed::{self as feeds, FeedError, FeedPage, DEFAULT_LIMIT, MAX_LIMIT};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{AppError, ErrorBody};
use super::extract::{Auth, Json, MinPosition};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(home))
}

/// Query string of `GET /v1/feed`; both read as text so that bad values get Nova's messages.
#[derive(Deserialize)]
pub struct FeedParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// The caller's home timeline: posts of followed users and the caller's own, newest first.
///
/// Pages are stable while new posts arrive: `next_cursor` points strictly before the last item
/// returned. A `limit` outside 1–100 is refused with 400 (not clamped).
#[utoipa::path(get, path = "/v1/feed", tag = "feed", security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "page size, 1–100 (default 20); other values are a 400"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("X-Nova-Min-Position" = Option<String>, Header,
            description = "wait until the feed has applied this position, e.g. post:42"),
    ),
    responses(
        (status = 200, body = FeedPage),
        (status = 400, description = "invalid limit, cursor or header", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "the feed is lagging or unavailable", body = ErrorBody),
    ))]
async fn home(
    State(state): State<AppState>,
    auth: Auth,
    min: MinPosition,
    params: Result<Query<FeedParams>, QueryRejection>,
) -> Result<Json<FeedPage>, AppError> {
    let Query(params) = params?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(bad_limit)?,
    };
    // Bad input is a 400 even while the projection lags.
    if params
        .cursor
        .as_deref()
        .is_some_and(|c| feeds::Cursor::decode(c).is_none())
    {
        return Err(bad_cursor());
    }
    min.wait(&state, feed::NAME, Feed::default().domains())
        .await?;
    match feeds::page(
        &state.db.any,
        auth.0.user_id,
        params.cursor.as_deref(),
        limit,
    )
    .await
    {
        Ok(page) => Ok(Json(page)),
        Err(FeedError::InvalidCursor) => Err(bad_cursor()),
        Err(FeedError::InvalidLimit) => Err(bad_limit()),
        Err(FeedError::Query(e)) => Err(e.into()),
    }
}

fn bad_cursor() -> AppError {
    AppError::invalid_field(
        "cursor",
        "cursor is invalid; pass the next_cursor of a previous page",
    )
}

fn bad_limit() -> AppError {
    AppError::invalid_field(
        "limit",
        format!("limit must be an integer from 1 to {MAX_LIMIT}"),
    )
}
