//! Reads of the `feed` view: a user's home timeline, newest first.
//!
//! A page merges two index-driven reads (ADR 0007):
//! (a) the user's fanned-out timeline rows (`feed_timeline`, primary key
//!     `(owner_id, created_at, post_id)` scanned backwards from the cursor), and
//! (b) the posts of the user themself and of the followed authors that are read at query
//!     time (`pulled`), one `(author_id, created_at, post_id)` index range per author.
//!
//! Each side returns at most `limit + 1` rows; the merge, dedup and cut happen here. Only
//! visible posts of active authors are returned. The cursor is the last item's
//! `(created_at, post_id)`; the next page is strictly older, so pages do not shift while new
//! posts arrive.

use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::QueryError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// One post in a feed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
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

/// A page of a feed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    /// Pass as `cursor` to read the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the cursor is not one this server handed out")]
    InvalidCursor,
    #[error("limit must be an integer from 1 to {MAX_LIMIT}")]
    InvalidLimit,
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<sqlx::Error> for FeedError {
    fn from(e: sqlx::Error) -> Self {
        FeedError::Query(QueryError::Unavailable(e))
    }
}

pub use crate::cursor::Cursor;

type Row = (String, String, String, String, String, Option<String>);

const COLUMNS: &str = "p.created_at, p.post_id, p.author_id, p.content, p.media_urls, p.edited_at";

/// A page of `user`'s feed, older than `cursor` (an opaque string from a previous page's
/// `next_cursor`), of at most `limit` items (1..=[`MAX_LIMIT`]).
pub async fn page(
    pool: &AnyPool,
    user: Uuid,
    cursor: Option<&str>,
    limit: u32,
) -> Result<FeedPage, FeedError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(FeedError::InvalidLimit);
    }
    let cursor = cursor
        .map(|c| Cursor::decode(c).ok_or(FeedError::InvalidCursor))
        .transpose()?;
    let want = i64::from(limit) + 1;
    let user = user.to_string();

    // (a) The fanned-out timeline.
    let before = if cursor.is_some() {
        "AND (t.created_at, t.post_id) < ($3, $4)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM feed_timeline t \
         JOIN feed_posts p ON p.post_id = t.post_id \
         WHERE t.owner_id = $1 {before} AND p.visible = 1 \
           AND NOT EXISTS (SELECT 1 FROM feed_authors a \
                           WHERE a.author_id = t.author_id AND a.active = 0) \
         ORDER BY t.created_at DESC, t.post_id DESC \
         LIMIT $2"
    );
    let mut q = sqlx::query_as::<_, Row>(&sql).bind(&user).bind(want);
    if let Some(c) = &cursor {
        q = q.bind(&c.at).bind(c.id.to_string());
    }
    let mut rows = q.fetch_all(pool).await?;

    // (b) Authors read at query time: the user (unless deactivated) and followed pulled,
    // active authors.
    let authors: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT 0, f.followee_id, a.active FROM feed_follows f \
         JOIN feed_authors a ON a.author_id = f.followee_id \
         WHERE f.follower_id = $1 AND a.pulled = 1 \
         UNION ALL \
         SELECT 1, a.author_id, a.active FROM feed_authors a WHERE a.author_id = $1",
    )
    .bind(&user)
    .fetch_all(pool)
    .await?;
    let own_inactive = authors
        .iter()
        .any(|(own, _, active)| *own == 1 && *active == 0);
    let mut read: Vec<String> = authors
        .into_iter()
        .filter(|(own, _, active)| *own == 0 && *active == 1)
        .map(|(_, id, _)| id)
        .collect();
    if !own_inactive {
        read.push(user.clone());
    }
    // One index range per author (each limited), so the cost does not grow with how many
    // posts those authors have.
    let (before, first) = if cursor.is_some() {
        ("AND (p.created_at, p.post_id) < ($2, $3)", 4)
    } else {
        ("", 2)
    };
    let branches: Vec<String> = (0..read.len())
        .map(|i| {
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM feed_posts p \
                 WHERE p.author_id = ${} AND p.visible = 1 {before} \
                 ORDER BY p.created_at DESC, p.post_id DESC LIMIT $1) s{i}",
                first + i
            )
        })
        .collect();
    // Nothing to merge when the caller is deactivated and follows no pulled author.
    if !read.is_empty() {
        let sql = branches.join(" UNION ALL ");
        let mut q = sqlx::query_as::<_, Row>(&sql).bind(want);
        if let Some(c) = &cursor {
            q = q.bind(&c.at).bind(c.id.to_string());
        }
        for author in &read {
            q = q.bind(author);
        }
        rows.extend(q.fetch_all(pool).await?);
    }

    // Merge: newest first, each post once, cut at limit (+1 tells whether more exist).
    rows.sort_unstable_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
    rows.dedup_by(|a, b| a.1 == b.1);
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().and_then(|r| {
            Some(
                Cursor {
                    at: r.0.clone(),
                    id: Uuid::parse_str(&r.1).ok()?,
                }
                .encode(),
            )
        })
    } else {
        None
    };
    let items = rows
        .into_iter()
        .filter_map(
            |(created_at, post_id, author_id, content, media, edited_at)| {
                Some(FeedItem {
                    post_id: Uuid::parse_str(&post_id).ok()?,
                    author_id: Uuid::parse_str(&author_id).ok()?,
                    content,
                    media_urls: serde_json::from_str(&media).unwrap_or_default(),
                    created_at,
                    edited_at,
                })
            },
        )
        .collect();
    Ok(FeedPage { items, next_cursor })
}
