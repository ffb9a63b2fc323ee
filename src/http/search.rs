//! Routes of the `search` area (API.md "Read views"): typo-tolerant search over users and posts,
//! answered from the tantivy index (ADR 0013).

use std::collections::HashSet;

use axum::extract::State;
use nova_event_schemas::Domain;
use nova_projections::notification;
use nova_projections::search as index;
use nova_queries::search::{self, HitDoc, SearchRequest, MAX_Q_CHARS};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Json, LimitParam, ListFilter, MinPosition, PageQuery};
use super::openapi as doc;
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(find))
}

/// `?q=&type=&cursor=` (the search's own cursor).
#[derive(Deserialize)]
pub struct SearchFilter {
    pub q: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub cursor: Option<String>,
}

impl IntoParams for SearchFilter {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::query(
                "q",
                true,
                "the query: 1–200 characters, not only blanks",
                query_text(),
            ),
            doc::query(
                "type",
                false,
                "`users` or `posts`; both when absent",
                kind(),
            ),
            doc::query(
                "cursor",
                false,
                "`next_cursor` of the previous page of the same search",
                search_cursor(),
            ),
        ]
    }
}

fn query_text() -> Object {
    let ws = doc::WHITE_SPACE_CLASS;
    doc::pattern(1, MAX_Q_CHARS, &format!(r"^[\s\S]*[^{ws}][\s\S]*$")).build()
}

fn kind() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["users", "posts"]))
        .build()
}

fn search_cursor() -> Object {
    doc::cursor("nova-search-cursor").build()
}

impl ListFilter for SearchFilter {
    const KEYS: &'static [&'static str] = &["q", "type"];
    const OWN_CURSOR: bool = true;
}

/// One hit: a user or a post, with its rank.
#[derive(Serialize, ToSchema)]
pub struct SearchItem {
    /// `user` or `post`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: Uuid,
    /// BM25 relevance (hits are ordered by `typos`, then this, then recency).
    pub score: f32,
    /// Edits between the query and what matched.
    pub typos: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// RFC 3339, UTC, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl From<search::Hit> for SearchItem {
    fn from(h: search::Hit) -> Self {
        let mut item = SearchItem {
            kind: "user",
            id: h.key.id,
            score: h.key.bm25,
            typos: h.key.typos,
            user_id: None,
            username: None,
            display_name: None,
            post_id: None,
            author_id: None,
            content: None,
            created_at: None,
        };
        match h.doc {
            HitDoc::User {
                user_id,
                username,
                display_name,
            } => {
                item.user_id = Some(user_id);
                item.username = Some(username);
                item.display_name = display_name;
            }
            HitDoc::Post {
                post_id,
                author_id,
                content,
                created_at,
            } => {
                item.kind = "post";
                item.post_id = Some(post_id);
                item.author_id = Some(author_id);
                item.content = Some(content);
                item.created_at = Some(nova_infra::readmodel::ts(created_at));
            }
        }
        item
    }
}

/// A page of hits.
#[derive(Serialize, ToSchema)]
pub struct SearchBody {
    pub items: Vec<SearchItem>,
    /// Pass as `cursor` to read the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

crate::views!(
    /// The search index, and the blocks (from the notification view) that hide posts.
    SearchReads: (index::NAME, index::DOMAINS), (notification::NAME, &[Domain::Follow])
);

/// Search users (username, display name) and posts (content) with typo tolerance.
///
/// A query word of 1–4 characters must match exactly, 5–8 tolerates one edit, 9 or more two (a
/// transposition is one edit); the last word also matches as a prefix. Hits are ranked by
/// fewest typos, then relevance (BM25), then recency; at most 1,000 hits are ranked. Posts of
/// users blocked by or blocking the caller are hidden. `X-Nova-Min-Position` may name the
/// user or post domain (the index) or the follow domain (blocks).
#[utoipa::path(get, path = "/v1/search", tag = "search", security(("bearer" = [])),
    params(
        SearchFilter,
        LimitParam,
        MinPosition<SearchReads>,
    ),
    responses(
        (status = 200, body = SearchBody),
        (status = 400, description = "invalid q, type, limit, cursor or header", body = ErrorBody),
        (status = 503, description = "the index is lagging or unavailable", body = ErrorBody),
    ))]
async fn find(
    State(state): State<AppState>,
    actor: Actor,
    PageQuery(page, filter): PageQuery<SearchFilter>,
    min: MinPosition<SearchReads>,
) -> Result<Json<SearchBody>, AppError> {
    let req = SearchRequest::parse(
        filter.q.as_deref(),
        filter.kind.as_deref(),
        page.limit,
        filter.cursor.as_deref(),
    )
    .map_err(|e| AppError::invalid_field(e.field(), e.to_string()))?;
    min.wait(&state).await?;
    if matches!(min.wanted, Some((d, _)) if index::DOMAINS.contains(&d)) {
        // The projector may be another process: see its commit now, not at the next reload.
        state.search.refresh().map_err(AppError::unavailable)?;
    }
    let hidden: HashSet<Uuid> = nova_queries::notification::blocks_of(&state.db.any, actor.user_id)
        .await?
        .into_iter()
        .collect();
    let index = state.search.index();
    let found = tokio::task::spawn_blocking(move || search::search(&index, &req, &hidden))
        .await
        .map_err(AppError::unavailable)?
        .map_err(AppError::unavailable)?;
    Ok(Json(SearchBody {
        items: found.items.into_iter().map(Into::into).collect(),
        next_cursor: found.next_cursor,
    }))
}
