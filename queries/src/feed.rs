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

use nova_infra::readmodel::{Flag, Id, JsonText, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{Page, PageRequest};
use crate::{Cursor, QueryError};

/// One post in a feed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FeedRow {
    pub created_at: Timestamp,
    #[sqlx(try_from = "Id")]
    pub post_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub author_id: Uuid,
    pub content: String,
    pub media_urls: JsonText<Vec<String>>,
    /// Time of the latest edit, if any.
    pub edited_at: Option<Timestamp>,
}

/// An author whose posts are read at query time.
#[derive(sqlx::FromRow)]
struct PulledAuthor {
    own: Flag,
    #[sqlx(try_from = "Id")]
    author_id: Uuid,
    active: Flag,
}

const COLUMNS: &str = "p.created_at, p.post_id, p.author_id, p.content, p.media_urls, p.edited_at";

/// A page of `user`'s feed, strictly older than the request's cursor.
pub async fn page(
    pool: &AnyPool,
    user: Uuid,
    req: &PageRequest,
) -> Result<Page<FeedRow>, QueryError> {
    let cursor = req.after.as_ref();
    let want = req.fetch();
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
    let mut q = sqlx::query_as::<_, FeedRow>(&sql).bind(&user).bind(want);
    if let Some(c) = cursor {
        q = q.bind(&c.at).bind(c.id.to_string());
    }
    let mut rows = q.fetch_all(pool).await?;

    // (b) Authors read at query time: the user (unless deactivated) and followed pulled,
    // active authors.
    let authors: Vec<PulledAuthor> = sqlx::query_as(
        "SELECT 0 AS own, f.followee_id AS author_id, a.active FROM feed_follows f \
         JOIN feed_authors a ON a.author_id = f.followee_id \
         WHERE f.follower_id = $1 AND a.pulled = 1 \
         UNION ALL \
         SELECT 1, a.author_id, a.active FROM feed_authors a WHERE a.author_id = $1",
    )
    .bind(&user)
    .fetch_all(pool)
    .await?;
    let own_inactive = authors.iter().any(|a| a.own.0 && !a.active.0);
    let mut read: Vec<String> = authors
        .into_iter()
        .filter(|a| !a.own.0 && a.active.0)
        .map(|a| a.author_id.to_string())
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
        let mut q = sqlx::query_as::<_, FeedRow>(&sql).bind(want);
        if let Some(c) = cursor {
            q = q.bind(&c.at).bind(c.id.to_string());
        }
        for author in &read {
            q = q.bind(author);
        }
        rows.extend(q.fetch_all(pool).await?);
    }

    // Merge: newest first, each post once, cut at limit (+1 tells whether more exist).
    // Typed order equals the stored text order (fixed-width timestamps, canonical UUIDs).
    rows.sort_unstable_by_key(|r| std::cmp::Reverse((r.created_at, r.post_id)));
    rows.dedup_by(|a, b| a.post_id == b.post_id);
    Ok(Page::cut(rows, req, |r| {
        Cursor::new(r.created_at, r.post_id)
    }))
}
