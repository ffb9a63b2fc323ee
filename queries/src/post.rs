//! Reads of the `post_view` projection: one post, an author's posts, a post's comments, a
//! user's bookmarks. Lists are keyset-paginated on (timestamp, id) with an opaque cursor, so a
//! page boundary stays put while new rows arrive.

use sqlx::AnyPool;
use uuid::Uuid;

use crate::QueryError;

/// Default and largest page size of the lists (API.md).
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

pub use crate::cursor::Cursor;

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Cuts the `limit + 1` rows fetched into a page and the cursor of its last item.
fn page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next_cursor = if more {
        rows.last().map(|r| key(r).encode())
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// A visible post as stored: media URLs and mentions are JSON arrays (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRow {
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub media_urls_json: String,
    pub mentions_json: String,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub like_count: i64,
    pub comment_count: i64,
    pub share_count: i64,
}

type RawPost = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
);

const POST_COLUMNS: &str = "p.post_id, p.author_id, p.content, p.media_urls, p.mentions, \
     p.created_at, p.edited_at, p.like_count, p.comment_count, p.share_count";

fn post_row(r: RawPost) -> Option<PostRow> {
    Some(PostRow {
        post_id: Uuid::parse_str(&r.0).ok()?,
        author_id: Uuid::parse_str(&r.1).ok()?,
        content: r.2,
        media_urls_json: r.3,
        mentions_json: r.4,
        created_at: r.5,
        edited_at: r.6,
        like_count: r.7,
        comment_count: r.8,
        share_count: r.9,
    })
}

/// A post that exists and is neither deleted nor hidden.
pub async fn visible_post(pool: &AnyPool, post_id: Uuid) -> Result<Option<PostRow>, QueryError> {
    let row: Option<RawPost> = sqlx::query_as(&format!(
        "SELECT {POST_COLUMNS} FROM posts p WHERE p.post_id = $1 AND p.visible = 1"
    ))
    .bind(post_id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(post_row))
}

/// An author's visible posts, newest first.
pub async fn posts_by_author(
    pool: &AnyPool,
    author_id: Uuid,
    limit: i64,
    after: Option<&Cursor>,
) -> Result<Page<PostRow>, QueryError> {
    let keyset = keyset(after, "p.created_at", "p.post_id", "<", 3);
    let sql = format!(
        "SELECT {POST_COLUMNS} FROM posts p \
         WHERE p.author_id = $1 AND p.visible = 1 {keyset} \
         ORDER BY p.created_at DESC, p.post_id DESC LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, RawPost>(&sql)
        .bind(author_id.to_string())
        .bind(limit + 1);
    if let Some(c) = after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    let rows = rows.into_iter().filter_map(post_row).collect();
    Ok(page(rows, limit, |p: &PostRow| Cursor {
        at: p.created_at.clone(),
        id: p.post_id,
    }))
}

/// The keyset condition of a page after `after` (none on the first page): rows whose
/// (`at`, `id`) is beyond the cursor in the direction `op`, bound as parameters `$first` and
/// `$first + 1`.
fn keyset(after: Option<&Cursor>, at: &str, id: &str, op: &str, first: usize) -> String {
    match after {
        Some(_) => format!(
            "AND ({at} {op} ${first} OR ({at} = ${first} AND {id} {op} ${}))",
            first + 1
        ),
        None => String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRow {
    pub comment_id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub mentions_json: String,
    pub created_at: String,
}

/// A post's comments, oldest first.
pub async fn comments(
    pool: &AnyPool,
    post_id: Uuid,
    limit: i64,
    after: Option<&Cursor>,
) -> Result<Page<CommentRow>, QueryError> {
    let keyset = keyset(after, "created_at", "comment_id", ">", 3);
    let sql = format!(
        "SELECT comment_id, post_id, author_id, content, mentions, created_at \
         FROM post_comments WHERE post_id = $1 {keyset} \
         ORDER BY created_at, comment_id LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, (String, String, String, String, String, String)>(&sql)
        .bind(post_id.to_string())
        .bind(limit + 1);
    if let Some(c) = after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    let rows = rows
        .into_iter()
        .filter_map(|r| {
            Some(CommentRow {
                comment_id: Uuid::parse_str(&r.0).ok()?,
                post_id: Uuid::parse_str(&r.1).ok()?,
                author_id: Uuid::parse_str(&r.2).ok()?,
                content: r.3,
                mentions_json: r.4,
                created_at: r.5,
            })
        })
        .collect();
    Ok(page(rows, limit, |c: &CommentRow| Cursor {
        at: c.created_at.clone(),
        id: c.comment_id,
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookmarkRow {
    pub collection: Option<String>,
    pub bookmarked_at: String,
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
    limit: i64,
    after: Option<&Cursor>,
) -> Result<Page<BookmarkRow>, QueryError> {
    let (collection, next) = match filter {
        CollectionFilter::All => ("", 3),
        CollectionFilter::Default => ("AND b.collection IS NULL", 3),
        CollectionFilter::Named(_) => ("AND b.collection = $3", 4),
    };
    let keyset = keyset(after, "b.bookmarked_at", "b.post_id", "<", next);
    let sql = format!(
        "SELECT {POST_COLUMNS}, b.collection, b.bookmarked_at \
         FROM post_bookmarks b JOIN posts p ON p.post_id = b.post_id \
         WHERE b.user_id = $1 AND p.visible = 1 {collection} {keyset} \
         ORDER BY b.bookmarked_at DESC, b.post_id DESC LIMIT $2"
    );
    let mut query = sqlx::query(&sql).bind(user_id.to_string()).bind(limit + 1);
    if let CollectionFilter::Named(name) = filter {
        query = query.bind(name.clone());
    }
    if let Some(c) = after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    use sqlx::Row;
    let rows = query.fetch_all(pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let raw: RawPost = (
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
            r.try_get(7)?,
            r.try_get(8)?,
            r.try_get(9)?,
        );
        let collection: Option<String> = r.try_get(10)?;
        let bookmarked_at: String = r.try_get(11)?;
        if let Some(post) = post_row(raw) {
            out.push(BookmarkRow {
                collection,
                bookmarked_at,
                post,
            });
        }
    }
    Ok(page(out, limit, |b: &BookmarkRow| Cursor {
        at: b.bookmarked_at.clone(),
        id: b.post.post_id,
    }))
}
