//! Routes of the `feed` area (API.md "Read views"): the caller's home timeline.

use axum::extract::State;
use nova_projections::feed;
use nova_queries::feed::{self as feeds, FeedRow};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Json, MinPosition, PageBody, PageParams, PageQuery};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(home))
}

/// One post in a feed.
#[derive(Serialize, ToSchema)]
pub struct FeedItem {
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub media_urls: Vec<String>,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    /// RFC 3339 time of the latest edit, if any.
    pub edited_at: Option<String>,
}

impl From<FeedRow> for FeedItem {
    fn from(r: FeedRow) -> Self {
        FeedItem {
            post_id: r.post_id,
            author_id: r.author_id,
            content: r.content,
            media_urls: r.media_urls.0,
            created_at: r.created_at.to_string(),
            edited_at: r.edited_at.map(|t| t.to_string()),
        }
    }
}

crate::views!(
    /// The home timeline.
    FeedReads: (feed::NAME, feed::DOMAINS)
);

/// The caller's home timeline: posts of followed users and the caller's own, newest first.
///
/// Pages are stable while new posts arrive: `next_cursor` points strictly before the last item
/// returned. A `limit` outside 1–100 is refused with 400 (not clamped).
#[utoipa::path(get, path = "/v1/feed", tag = "feed", security(("bearer" = [])),
    params(
        PageParams,
        MinPosition<FeedReads>,
    ),
    responses(
        (status = 200, body = PageBody<FeedItem>),
        (status = 400, description = "invalid limit, cursor or header", body = ErrorBody),
        (status = 503, description = "the feed is lagging or unavailable", body = ErrorBody),
    ))]
async fn home(
    State(state): State<AppState>,
    actor: Actor,
    PageQuery(page, _): PageQuery,
    min: MinPosition<FeedReads>,
) -> Result<Json<PageBody<FeedItem>>, AppError> {
    // Bad input is a 400 even while the projection lags: the extractors run first.
    min.wait(&state).await?;
    Ok(Json(
        feeds::page(&state.db.any, actor.user_id, &page)
            .await?
            .into(),
    ))
}
