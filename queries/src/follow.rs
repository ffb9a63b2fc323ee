//! Reads of the `follow_graph` view: follower/following lists (newest first, cursor-paginated,
//! names from the user directory), counts, and every edge of a user (for the deactivation
//! policy).

use nova_infra::readmodel::{Id, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{keyset, Order, Page, PageRequest};
use crate::{Cursor, QueryError};

/// One entry of a follower or following list: the other user and when the follow began.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FollowRow {
    #[sqlx(try_from = "Id")]
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub followed_at: Timestamp,
}

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
    req: &PageRequest,
) -> Result<Page<FollowRow>, QueryError> {
    list(pool, Side::Followers, user, req).await
}

/// The users `user` follows, newest follow first. Deactivated users are skipped.
pub async fn following(
    pool: &AnyPool,
    user: Uuid,
    req: &PageRequest,
) -> Result<Page<FollowRow>, QueryError> {
    list(pool, Side::Following, user, req).await
}

async fn list(
    pool: &AnyPool,
    side: Side,
    user: Uuid,
    req: &PageRequest,
) -> Result<Page<FollowRow>, QueryError> {
    let (other, own) = side.columns();
    let after = keyset(
        req,
        "e.followed_at",
        &format!("e.{other}"),
        Order::NewestFirst,
        3,
    );
    // Newest first; ties broken by id so that the order (and so the cursor) is total.
    let sql = format!(
        "SELECT e.{other} AS user_id, d.username, d.display_name, e.followed_at \
         FROM follow_edges e JOIN user_directory d ON d.user_id = e.{other} \
         WHERE e.{own} = $1 AND d.active = 1 {after} \
         ORDER BY e.followed_at DESC, e.{other} DESC \
         LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, FollowRow>(&sql)
        .bind(user.to_string())
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(Page::cut(rows, req, |r| {
        Cursor::new(r.followed_at, r.user_id)
    }))
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
            let rows: Vec<(Id,)> = sqlx::query_as(&sql)
                .bind(user.to_string())
                .bind(&after)
                .bind(EDGE_PAGE)
                .fetch_all(pool)
                .await?;
            let full = rows.len() as i64 == EDGE_PAGE;
            for (Id(o),) in rows {
                edges.push(match side {
                    Side::Followers => (o, user),
                    Side::Following => (user, o),
                });
                after = o.to_string();
            }
            if !full {
                break;
            }
        }
    }
    Ok(edges)
}
