//! Reads of the `follow_graph` view: follower/following lists (newest first, cursor-paginated,
//! names from the user directory), counts, and every edge of a user (for the deactivation
//! policy).

use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::QueryError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// One entry of a follower or following list: the other user and when the follow began.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FollowEntry {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    /// RFC 3339 (UTC, microseconds).
    pub followed_at: String,
}

/// One page of a list; `next_cursor` is `null` on the last page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FollowPage {
    pub items: Vec<FollowEntry>,
    pub next_cursor: Option<String>,
}

pub use crate::cursor::Cursor;

/// Which side of the edges a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The users who follow `user`.
    Followers,
    /// The users `user` follows.
    Following,
}

impl Side {
    /// (column holding the listed user, column holding `user`).
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Side::Followers => ("follower_id", "followee_id"),
            Side::Following => ("followee_id", "follower_id"),
        }
    }
}

/// The users who follow `user`, newest follow first. Deactivated users are skipped.
pub async fn followers(
    pool: &AnyPool,
    user: Uuid,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<FollowPage, QueryError> {
    list(pool, Side::Followers, user, cursor, limit).await
}

/// The users `user` follows, newest follow first. Deactivated users are skipped.
pub async fn following(
    pool: &AnyPool,
    user: Uuid,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<FollowPage, QueryError> {
    list(pool, Side::Following, user, cursor, limit).await
}

type EntryRow = (String, String, Option<String>, String);

async fn list(
    pool: &AnyPool,
    side: Side,
    user: Uuid,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<FollowPage, QueryError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let (other, own) = side.columns();
    let after = if cursor.is_some() {
        format!("AND (e.followed_at < $3 OR (e.followed_at = $3 AND e.{other} < $4))")
    } else {
        String::new()
    };
    // Newest first; ties broken by id so that the order (and so the cursor) is total.
    let sql = format!(
        "SELECT e.{other}, d.username, d.display_name, e.followed_at \
         FROM follow_edges e JOIN user_directory d ON d.user_id = e.{other} \
         WHERE e.{own} = $1 AND d.active = 1 {after} \
         ORDER BY e.followed_at DESC, e.{other} DESC \
         LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, EntryRow>(&sql)
        .bind(user.to_string())
        .bind(limit + 1);
    if let Some(c) = cursor {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<FollowEntry> = rows
        .into_iter()
        .take(limit as usize)
        .filter_map(|(id, username, display_name, followed_at)| {
            Some(FollowEntry {
                user_id: Uuid::parse_str(&id).ok()?,
                username,
                display_name,
                followed_at,
            })
        })
        .collect();
    let next_cursor = match items.last() {
        Some(last) if more => Some(
            Cursor {
                at: last.followed_at.clone(),
                id: last.user_id,
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(FollowPage { items, next_cursor })
}

/// (followers, following) of `user`; zeros for a user nobody ever followed.
pub async fn counts(pool: &AnyPool, user: Uuid) -> Result<(i64, i64), QueryError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT followers, following FROM follow_counts WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(pool)
            .await?;
    Ok(row.unwrap_or((0, 0)))
}

const EDGE_PAGE: i64 = 1000;

/// Every current follow involving `user`, in either direction, as (follower, followee) —
/// whatever the other user's status. Read in pages, so a user with many followers does not
/// need one huge result set.
pub async fn edges_of(pool: &AnyPool, user: Uuid) -> Result<Vec<(Uuid, Uuid)>, QueryError> {
    let mut edges = Vec::new();
    for side in [Side::Followers, Side::Following] {
        let (other, own) = side.columns();
        let sql = format!(
            "SELECT {other} FROM follow_edges WHERE {own} = $1 AND {other} > $2 \
             ORDER BY {other} LIMIT $3"
        );
        let mut after = String::new();
        loop {
            let rows: Vec<(String,)> = sqlx::query_as(&sql)
                .bind(user.to_string())
                .bind(&after)
                .bind(EDGE_PAGE)
                .fetch_all(pool)
                .await?;
            let full = rows.len() as i64 == EDGE_PAGE;
            for (id,) in rows {
                if let Ok(o) = Uuid::parse_str(&id) {
                    edges.push(match side {
                        Side::Followers => (o, user),
                        Side::Following => (user, o),
                    });
                }
                after = id;
            }
            if !full {
                break;
            }
        }
    }
    Ok(edges)
}
