//! Reads of the `conversation_view`: a member's conversation list (latest activity first, with
//! unread counts; message requests apart) and a conversation's messages by `seq`. Membership
//! is checked by the caller against the conversation itself (the command side), not here.

use std::collections::BTreeMap;

use nova_infra::readmodel::{Flag, Id, JsonText, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::{keyset, Order, Page, PageRequest};
use crate::{Cursor, QueryError};

/// One conversation of a member's list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConversationRow {
    #[sqlx(try_from = "Id")]
    pub conversation_id: Uuid,
    pub kind: String,
    pub name: Option<String>,
    pub state: String,
    pub last_activity_at: Timestamp,
    pub last_seq: i64,
    pub read_seq: i64,
    /// Messages of others after the member's read receipt, recalled ones aside.
    pub unread_count: i64,
}

/// `user`'s conversations, latest activity first: the active ones, or with `requests` the
/// message requests waiting for them.
pub async fn list(
    pool: &AnyPool,
    user: Uuid,
    requests: bool,
    req: &PageRequest,
) -> Result<Page<ConversationRow>, QueryError> {
    let after = keyset(
        req,
        "l.last_activity_at",
        "l.conversation_id",
        Order::NewestFirst,
        4,
    );
    let sql = format!(
        "SELECT l.conversation_id, l.kind, l.name, l.state, l.last_activity_at, l.last_seq, \
         l.read_seq, (SELECT COUNT(*) FROM conversation_messages m \
           WHERE m.conversation_id = l.conversation_id AND m.seq > l.read_seq \
           AND m.sender_id <> l.user_id AND m.recalled = 0) AS unread_count \
         FROM conversation_list l WHERE l.user_id = $1 AND l.state = $2 {after} \
         ORDER BY l.last_activity_at DESC, l.conversation_id DESC LIMIT $3"
    );
    let state = if requests { "request" } else { "active" };
    let mut query = sqlx::query_as::<_, ConversationRow>(&sql)
        .bind(user.to_string())
        .bind(state)
        .bind(req.fetch());
    if let Some(c) = &req.after {
        query = query.bind(c.at.clone()).bind(c.id.to_string());
    }
    let rows = query.fetch_all(pool).await?;
    Ok(Page::cut(rows, req, |r| {
        Cursor::new(r.last_activity_at, r.conversation_id)
    }))
}

/// One message of a page.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageRow {
    pub seq: i64,
    #[sqlx(try_from = "Id")]
    pub message_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub sender_id: Uuid,
    pub sender_device_id: String,
    pub session_id: String,
    /// `None` once recalled.
    pub ciphertext: Option<String>,
    pub client_message_id: String,
    pub sent_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    pub recalled: Flag,
    /// The replaced ciphertexts of edits, oldest first.
    pub history: JsonText<Vec<serde_json::Value>>,
    #[sqlx(skip)]
    pub reactions: BTreeMap<String, Vec<Uuid>>,
}

/// Up to `limit` messages after `after_seq`, ascending; and whether more follow.
pub async fn messages(
    pool: &AnyPool,
    conversation: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<(Vec<MessageRow>, bool), QueryError> {
    let mut rows = sqlx::query_as::<_, MessageRow>(
        "SELECT seq, message_id, sender_id, sender_device_id, session_id, ciphertext, \
         client_message_id, sent_at, edited_at, recalled, history \
         FROM conversation_messages WHERE conversation_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3",
    )
    .bind(conversation.to_string())
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let reactions: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, emoji, user_id FROM conversation_reactions \
             WHERE conversation_id = $1 AND seq >= $2 AND seq <= $3 \
             ORDER BY seq, emoji, user_id",
        )
        .bind(conversation.to_string())
        .bind(first.seq)
        .bind(last.seq)
        .fetch_all(pool)
        .await?;
        for (seq, emoji, user) in reactions {
            let user = Uuid::try_parse(&user)
                .map_err(|e| QueryError::Corrupt(format!("reaction user id: {e}")))?;
            if let Some(row) = rows.iter_mut().find(|r| r.seq == seq) {
                row.reactions.entry(emoji).or_default().push(user);
            }
        }
    }
    Ok((rows, more))
}

/// The conversations `user` has not left (requests and declined ones included).
pub async fn conversations_of(pool: &AnyPool, user: Uuid) -> Result<Vec<Uuid>, QueryError> {
    let rows: Vec<(Id,)> = sqlx::query_as(
        "SELECT conversation_id FROM conversation_list WHERE user_id = $1 AND state <> 'left' \
         ORDER BY conversation_id",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id.0).collect())
}
