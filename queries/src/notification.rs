//! Reads of the `notification` projection: a user's visible notifications (newest first, cursor
//! paginated), the unread count, and the current per-kind preferences.
//!
//! Visibility is decided here, at read time, from the projection's history tables (ADR 0007):
//! a notification is hidden if its kind was switched off at its `created_at`, or if a block
//! between its actor and recipient (either direction) was in effect at its `created_at` or is
//! in effect now. A notification is read iff `(created_at, id) <= ` the user's read marker.

use std::collections::BTreeMap;

use nova_event_schemas::user::NotificationKind;
use nova_infra::readmodel::{Flag, Id, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{keyset, Order, Page, PageRequest};
use crate::{Cursor, QueryError};

/// One notification as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    #[sqlx(try_from = "Id")]
    pub notification_id: Uuid,
    /// `follow`, `like`, `comment`, `mention`, `share`, `stream_started` or `message`.
    pub kind: String,
    /// Who followed, liked, commented, mentioned, shared, went live or wrote.
    #[sqlx(try_from = "Id")]
    pub actor_id: Uuid,
    /// The post concerned (none for `follow`).
    pub post_id: Option<Id>,
    /// The comment concerned (`comment`, and `mention` in a comment).
    pub comment_id: Option<Id>,
    /// The stream that went live (`stream_started`).
    pub stream_id: Option<Id>,
    /// The conversation written in (`message`).
    pub conversation_id: Option<Id>,
    /// The time of the event that caused it.
    pub created_at: Timestamp,
    pub read: Flag,
}

/// A page of the list with the unread count (over the whole list, not this page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPage {
    pub page: Page<NotificationRow>,
    pub unread_count: i64,
}

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

/// `user`'s visible notifications, newest first, after the request's cursor; only unread
/// ones if `unread_only`.
pub async fn list(
    pool: &AnyPool,
    user: Uuid,
    req: &PageRequest,
    unread_only: bool,
) -> Result<NotificationPage, QueryError> {
    let keyset = keyset(
        req,
        "n.created_at",
        "n.notification_id",
        Order::NewestFirst,
        3,
    );
    let unread = if unread_only {
        format!("AND NOT {READ}")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT n.notification_id, n.kind, n.actor_id, n.post_id, n.comment_id, n.stream_id, \
                n.conversation_id, n.created_at, \
                CAST(CASE WHEN {READ} THEN 1 ELSE 0 END AS BIGINT) AS read \
         FROM notification n LEFT JOIN notification_read r ON r.user_id = n.recipient_id \
         WHERE {VISIBLE} {keyset} {unread} \
         ORDER BY n.created_at DESC, n.notification_id DESC LIMIT $2"
    );
    let mut query = sqlx::query_as::<_, NotificationRow>(&sql)
        .bind(user.to_string())
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(NotificationPage {
        page: Page::cut(rows, req, |n| Cursor::new(n.created_at, n.notification_id)),
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

/// The users with whom a block (either direction) is in effect for `user` now: one row per
/// block and per side, so the rows of `user` name both whom they blocked and who blocked them.
pub async fn blocks_of(pool: &AnyPool, user: Uuid) -> Result<Vec<Uuid>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT other_id FROM notification_block \
         WHERE user_id = $1 AND unblocked_at IS NULL",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id,)| Uuid::parse_str(&id).map_err(|e| QueryError::Corrupt(e.to_string())))
        .collect()
}

/// `user`'s current setting per kind (true = on). Every kind is on until switched off.
pub async fn preferences(
    pool: &AnyPool,
    user: Uuid,
) -> Result<BTreeMap<NotificationKind, bool>, QueryError> {
    let rows: Vec<(String, Flag)> = sqlx::query_as(
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
    for (kind, Flag(disabled)) in rows {
        let kind: String = kind;
        let kind = NotificationKind::parse(&kind)
            .ok_or_else(|| QueryError::Corrupt(format!("unknown notification kind {kind:?}")))?;
        prefs.insert(kind, !disabled);
    }
    Ok(prefs)
}
