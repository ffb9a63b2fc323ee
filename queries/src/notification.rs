//! Reads of the `notification` projection: a user's visible notifications (newest first, cursor
//! paginated), the unread count, and the current per-kind preferences.
//!
//! Visibility is decided here, at read time, from the projection's history tables (ADR 0007):
//! a notification is hidden if its kind was switched off at its `created_at`, or if a block
//! between its actor and recipient (either direction) was in effect at its `created_at` or is
//! in effect now. A notification is read iff `(created_at, id) <= ` the user's read marker.

use std::collections::BTreeMap;

use nova_event_schemas::user::NotificationKind;
use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::QueryError;

/// Page size when the client gives none, and the largest it may ask for.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// One notification as the list shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct NotificationItem {
    pub notification_id: Uuid,
    /// `follow`, `like`, `comment`, `mention` or `share`.
    pub kind: String,
    /// Who followed, liked, commented, mentioned or shared.
    pub actor_id: Uuid,
    /// The post concerned (none for `follow`).
    pub post_id: Option<Uuid>,
    /// The comment concerned (`comment`, and `mention` in a comment).
    pub comment_id: Option<Uuid>,
    /// RFC 3339, the time of the event that caused it.
    pub created_at: String,
    pub read: bool,
}

/// A page of the list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationItem>,
    /// Pass as `?cursor=` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
    /// Visible notifications not yet read (over the whole list, not this page).
    pub unread_count: i64,
}

pub use crate::cursor::Cursor;

/// Shown to the recipient (`$1`): kind on at creation time, no block then or now.
const VISIBLE: &str = "n.recipient_id = $1 \
    AND COALESCE((SELECT p.disabled FROM notification_preference p \
                  WHERE p.user_id = n.recipient_id AND p.kind = n.kind \
                    AND p.changed_at <= n.created_at \
                  ORDER BY p.version DESC LIMIT 1), 0) = 0 \
    AND NOT EXISTS (SELECT 1 FROM notification_block b \
                    WHERE b.user_id = n.recipient_id AND b.other_id = n.actor_id \
                      AND (b.unblocked_at IS NULL \
                           OR (b.blocked_at <= n.created_at AND n.created_at < b.unblocked_at)))";

/// At or before the read marker (`r` = the recipient's `notification_read` row, if any).
const READ: &str = "(r.user_id IS NOT NULL AND (n.created_at < r.up_to_created_at \
    OR (n.created_at = r.up_to_created_at AND n.notification_id <= r.up_to_id)))";

type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
);

/// `user`'s visible notifications, newest first: up to `limit` after `cursor`, only unread
/// ones if `unread_only`.
pub async fn list(
    pool: &AnyPool,
    user: Uuid,
    limit: i64,
    cursor: Option<&Cursor>,
    unread_only: bool,
) -> Result<NotificationPage, QueryError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut sql = format!(
        "SELECT n.notification_id, n.kind, n.actor_id, n.post_id, n.comment_id, n.created_at, \
                CAST(CASE WHEN {READ} THEN 1 ELSE 0 END AS BIGINT) \
         FROM notification n LEFT JOIN notification_read r ON r.user_id = n.recipient_id \
         WHERE {VISIBLE}"
    );
    if cursor.is_some() {
        sql.push_str(" AND (n.created_at < $2 OR (n.created_at = $2 AND n.notification_id < $3))");
    }
    if unread_only {
        sql.push_str(&format!(" AND NOT {READ}"));
    }
    let limit_param = if cursor.is_some() { 4 } else { 2 };
    sql.push_str(&format!(
        " ORDER BY n.created_at DESC, n.notification_id DESC LIMIT ${limit_param}"
    ));
    let mut query = sqlx::query_as::<_, Row>(&sql).bind(user.to_string());
    if let Some(c) = cursor {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    // One more than asked, to know whether there is a next page.
    let rows = query.bind(limit + 1).fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<NotificationItem> = rows
        .into_iter()
        .take(limit as usize)
        .filter_map(|r| {
            Some(NotificationItem {
                notification_id: Uuid::parse_str(&r.0).ok()?,
                kind: r.1,
                actor_id: Uuid::parse_str(&r.2).ok()?,
                post_id: r.3.and_then(|p| Uuid::parse_str(&p).ok()),
                comment_id: r.4.and_then(|c| Uuid::parse_str(&c).ok()),
                created_at: r.5,
                read: r.6 != 0,
            })
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|last| {
            Cursor {
                at: last.created_at.clone(),
                id: last.notification_id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(NotificationPage {
        items,
        next_cursor,
        unread_count: unread_count(pool, user).await?,
    })
}

/// How many of `user`'s visible notifications are unread.
pub async fn unread_count(pool: &AnyPool, user: Uuid) -> Result<i64, QueryError> {
    let (count,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM notification n \
         LEFT JOIN notification_read r ON r.user_id = n.recipient_id \
         WHERE {VISIBLE} AND NOT {READ}"
    ))
    .bind(user.to_string())
    .fetch_one(pool)
    .await?;
    Ok(count)
}

/// The creation time (as listed) of `user`'s notification `id`; `None` if there is no such
/// notification or it belongs to someone else.
pub async fn created_at_of(
    pool: &AnyPool,
    user: Uuid,
    id: Uuid,
) -> Result<Option<String>, QueryError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT created_at FROM notification WHERE notification_id = $1 AND recipient_id = $2",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Whether a block between `a` and `b` (either direction) is in effect now, from the view's
/// block intervals (one row per block, per side; `unblocked_at` set when it was lifted). This is
/// the only read model that keeps blocks today; `follow_graph` keeps follows only.
pub async fn block_between(pool: &AnyPool, a: Uuid, b: Uuid) -> Result<bool, QueryError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM notification_block \
         WHERE user_id = $1 AND other_id = $2 AND unblocked_at IS NULL LIMIT 1",
    )
    .bind(a.to_string())
    .bind(b.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// `user`'s current setting per kind (true = on). Every kind is on until switched off.
pub async fn preferences(
    pool: &AnyPool,
    user: Uuid,
) -> Result<BTreeMap<NotificationKind, bool>, QueryError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, disabled FROM notification_preference \
         WHERE user_id = $1 \
           AND version = (SELECT MAX(version) FROM notification_preference WHERE user_id = $1)",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    let mut prefs: BTreeMap<NotificationKind, bool> = NotificationKind::ALL
        .into_iter()
        .map(|k| (k, true))
        .collect();
    for (kind, disabled) in rows {
        if let Some(kind) = NotificationKind::parse(&kind) {
            prefs.insert(kind, disabled == 0);
        }
    }
    Ok(prefs)
}
