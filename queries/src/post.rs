//! Reads of the `post_view` projection: one post, an author's posts, a post's comments, a
//! user's bookmarks. Lists are keyset-paginated on (timestamp, id) with an opaque cursor, so a
//! page boundary stays put while new rows arrive.

use nova_infra::readmodel::{Id, JsonText, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{keyset, Order, Page, PageRequest};
use crate::{Cursor, QueryError};

/// A visible post with its counters.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PostRow {
    #[sqlx(try_from = "Id")]
    pub post_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub author_id: Uuid,
    pub content: String,
    pub media_urls: JsonText<Vec<String>>,
    /// Users mentioned (active when the post was written or last edited).
    pub mentions: JsonText<Vec<Uuid>>,
    pub created_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    pub like_count: i64,
    pub comment_count: i64,
    pub share_count: i64,
}

const POST_COLUMNS: &str = "p.post_id, p.author_id, p.content, p.media_urls, p.mentions, \
     p.created_at, p.edited_at, p.like_count, p.comment_count, p.share_count";

/// `AND` an author (column `author`) the user directory does not list as deactivated: a post or
/// comment committed in the instant of its author's deactivation — after the deactivation
/// policy listed what to hide — is not shown either.
fn author_not_deactivated(author: &str) -> String {
    format!(
        "AND NOT EXISTS (SELECT 1 FROM user_directory u \
                         WHERE u.user_id = {author} AND u.active = 0)"
    )
}

/// A post that exists, is neither deleted nor hidden, and whose author is not deactivated.
pub async fn visible_post(pool: &AnyPool, post_id: Uuid) -> Result<Option<PostRow>, QueryError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {POST_COLUMNS} FROM posts p WHERE p.post_id = $1 AND p.visible = 1 {}",
        author_not_deactivated("p.author_id")
    ))
    .bind(post_id.to_string())
    .fetch_optional(pool)
    .await?)
}

/// An author's visible posts, newest first.
pub async fn posts_by_author(
    pool: &AnyPool,
    author_id: Uuid,
    req: &PageRequest,
) -> Result<Page<PostRow>, QueryError> {
    let keyset = keyset(req, "p.created_at", "p.post_id", Order::NewestFirst, 3);
    let sql = format!(
        "SELECT {POST_COLUMNS} FROM posts p \
         WHERE p.author_id = $1 AND p.visible = 1 {keyset} \
         ORDER BY p.created_at DESC, p.post_id DESC LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, PostRow>(&sql)
        .bind(author_id.to_string())
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(Page::cut(rows, req, |p| {
        Cursor::new(p.created_at, p.post_id)
    }))
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CommentRow {
    #[sqlx(try_from = "Id")]
    pub comment_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub post_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub author_id: Uuid,
    pub content: String,
    pub mentions: JsonText<Vec<Uuid>>,
    pub created_at: Timestamp,
}

/// A post's comments, oldest first. Comments by deactivated users, and by users with whom the
/// post's author has a block in effect (either direction, as the notification view keeps
/// blocks), are not listed: a block hides what was written before it, too.
pub async fn comments(
    pool: &AnyPool,
    post_id: Uuid,
    req: &PageRequest,
) -> Result<Page<CommentRow>, QueryError> {
    let keyset = keyset(req, "c.created_at", "c.comment_id", Order::OldestFirst, 3);
    let sql = format!(
        "SELECT c.comment_id, c.post_id, c.author_id, c.content, c.mentions, c.created_at \
         FROM post_comments c WHERE c.post_id = $1 {keyset} \
           AND NOT EXISTS (SELECT 1 FROM notification_block b JOIN posts p \
                           ON b.user_id = p.author_id \
                           WHERE p.post_id = c.post_id AND b.other_id = c.author_id \
                             AND b.unblocked_at IS NULL) {} \
         ORDER BY c.created_at, c.comment_id LIMIT $2",
        author_not_deactivated("c.author_id")
    );
    let mut query = sqlx::query_as::<_, CommentRow>(&sql)
        .bind(post_id.to_string())
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(Page::cut(rows, req, |c| {
        Cursor::new(c.created_at, c.comment_id)
    }))
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BookmarkRow {
    pub collection: Option<String>,
    pub bookmarked_at: Timestamp,
    #[sqlx(flatten)]
    pub post: PostRow,
}

/// Which bookmarks to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionFilter {
    All,
    /// Bookmarks without a collection.
    Default,
    Named(String),
}

/// A user's bookmarks of visible posts, newest first.
pub async fn bookmarks(
    pool: &AnyPool,
    user_id: Uuid,
    filter: &CollectionFilter,
    req: &PageRequest,
) -> Result<Page<BookmarkRow>, QueryError> {
    let (collection, next) = match filter {
        CollectionFilter::All => ("", 3),
        CollectionFilter::Default => ("AND b.collection IS NULL", 3),
        CollectionFilter::Named(_) => ("AND b.collection = $3", 4),
    };
    let keyset = keyset(
        req,
        "b.bookmarked_at",
        "b.post_id",
        Order::NewestFirst,
        next,
    );
    let sql = format!(
        "SELECT {POST_COLUMNS}, b.collection, b.bookmarked_at \
         FROM post_bookmarks b JOIN posts p ON p.post_id = b.post_id \
         WHERE b.user_id = $1 AND p.visible = 1 {collection} {keyset} \
         ORDER BY b.bookmarked_at DESC, b.post_id DESC LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, BookmarkRow>(&sql)
        .bind(user_id.to_string())
        .bind(req.fetch());
    if let CollectionFilter::Named(name) = filter {
        query = query.bind(name.clone());
    }
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(Page::cut(rows, req, |b| {
        Cursor::new(b.bookmarked_at, b.post.post_id)
    }))
}
