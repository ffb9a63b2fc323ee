//! `conversation_view`: each member's conversation list and each conversation's message pages
//! (from the conversation domain).
//!
//! Three tables: `conversation_list` (one row per member and conversation: state, latest
//! activity, last and read `seq`), `conversation_messages` (by `seq`: ciphertext and metadata
//! only; a recalled message loses its ciphertext and history) and `conversation_reactions`.
//! Every write is keyed, so applying an event twice changes nothing; unread counts are
//! computed when the list is read.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::conversation::ConversationEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "conversation_view";
pub const LIST: &str = "conversation_list";
pub const MESSAGES: &str = "conversation_messages";
pub const REACTIONS: &str = "conversation_reactions";

/// The live view is `ConversationView::default()`; a rebuild writes to suffixed copies.
pub struct ConversationView {
    name: String,
    list: String,
    messages: String,
    reactions: String,
}

impl Default for ConversationView {
    fn default() -> Self {
        ConversationView {
            name: NAME.to_owned(),
            list: LIST.to_owned(),
            messages: MESSAGES.to_owned(),
            reactions: REACTIONS.to_owned(),
        }
    }
}

impl ConversationView {
    async fn set_state(
        &self,
        tx: &mut Transaction<'static, Any>,
        conversation: &str,
        user: &str,
        state: &str,
    ) -> Result<(), ProjectionError> {
        let list = &self.list;
        sqlx::query(&format!(
            "UPDATE {list} SET state = $3 WHERE conversation_id = $1 AND user_id = $2"
        ))
        .bind(conversation)
        .bind(user)
        .bind(state)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for ConversationView {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::Conversation]
    }

    fn tables(&self) -> Vec<String> {
        vec![
            self.list.clone(),
            self.messages.clone(),
            self.reactions.clone(),
        ]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(ConversationView {
            name: format!("{}{suffix}", self.name),
            list: format!("{}{suffix}", self.list),
            messages: format!("{}{suffix}", self.messages),
            reactions: format!("{}{suffix}", self.reactions),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let (list, messages, reactions) = (&self.list, &self.messages, &self.reactions);
        match event.decode::<ConversationEvent>()? {
            ConversationEvent::Created(e) => {
                for member in &e.member_ids {
                    let state = if e.request_to == Some(*member) {
                        "request"
                    } else {
                        "active"
                    };
                    sqlx::query(&format!(
                        "INSERT INTO {list} (user_id, conversation_id, kind, name, state, \
                         last_activity_at, last_seq, read_seq) VALUES ($1, $2, $3, $4, $5, $6, 0, 0) \
                         ON CONFLICT (user_id, conversation_id) DO NOTHING"
                    ))
                    .bind(member.to_string())
                    .bind(e.conversation_id.to_string())
                    .bind(e.kind.as_str())
                    .bind(e.name.clone())
                    .bind(state)
                    .bind(ts(e.created_at))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            ConversationEvent::MemberAdded(e) => {
                let conversation = e.conversation_id.to_string();
                // Kind, name and last seq from any row of the conversation; a new member starts
                // with nothing unread.
                let template: Option<(String, Option<String>, i64)> = sqlx::query_as(&format!(
                    "SELECT kind, name, MAX(last_seq) FROM {list} WHERE conversation_id = $1 \
                     GROUP BY kind, name"
                ))
                .bind(&conversation)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some((kind, name, last_seq)) = template {
                    sqlx::query(&format!(
                        "INSERT INTO {list} (user_id, conversation_id, kind, name, state, \
                         last_activity_at, last_seq, read_seq) \
                         VALUES ($1, $2, $3, $4, 'active', $5, $6, $6) \
                         ON CONFLICT (user_id, conversation_id) DO UPDATE SET state = 'active', \
                         last_activity_at = excluded.last_activity_at, \
                         last_seq = excluded.last_seq, read_seq = excluded.read_seq"
                    ))
                    .bind(e.user_id.to_string())
                    .bind(&conversation)
                    .bind(kind)
                    .bind(name)
                    .bind(ts(e.added_at))
                    .bind(last_seq)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            ConversationEvent::MemberRemoved(e) => {
                self.set_state(
                    tx,
                    &e.conversation_id.to_string(),
                    &e.user_id.to_string(),
                    "left",
                )
                .await?;
            }
            ConversationEvent::RequestAccepted(e) => {
                self.set_state(
                    tx,
                    &e.conversation_id.to_string(),
                    &e.user_id.to_string(),
                    "active",
                )
                .await?;
            }
            ConversationEvent::RequestDeclined(e) => {
                self.set_state(
                    tx,
                    &e.conversation_id.to_string(),
                    &e.user_id.to_string(),
                    "declined",
                )
                .await?;
            }
            ConversationEvent::MessageSent(e) => {
                let conversation = e.conversation_id.to_string();
                sqlx::query(&format!(
                    "INSERT INTO {messages} (conversation_id, seq, message_id, sender_id, \
                     sender_device_id, session_id, ciphertext, client_message_id, sent_at, \
                     edited_at, recalled, history) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, 0, '[]') \
                     ON CONFLICT (conversation_id, seq) DO NOTHING"
                ))
                .bind(&conversation)
                .bind(e.seq)
                .bind(e.message_id.to_string())
                .bind(e.sender_id.to_string())
                .bind(&e.sender_device_id)
                .bind(&e.session_id)
                .bind(&e.ciphertext)
                .bind(&e.client_message_id)
                .bind(ts(e.sent_at))
                .execute(&mut **tx)
                .await?;
                sqlx::query(&format!(
                    "UPDATE {list} SET last_seq = $2, last_activity_at = $3 \
                     WHERE conversation_id = $1 AND state <> 'left' AND last_seq < $2"
                ))
                .bind(&conversation)
                .bind(e.seq)
                .bind(ts(e.sent_at))
                .execute(&mut **tx)
                .await?;
                // A sender has read their own message.
                sqlx::query(&format!(
                    "UPDATE {list} SET read_seq = $3 \
                     WHERE conversation_id = $1 AND user_id = $2 AND read_seq < $3"
                ))
                .bind(&conversation)
                .bind(e.sender_id.to_string())
                .bind(e.seq)
                .execute(&mut **tx)
                .await?;
            }
            ConversationEvent::MessageEdited(e) => {
                let conversation = e.conversation_id.to_string();
                let row: Option<(Option<String>, String, String, String)> =
                    sqlx::query_as(&format!(
                        "SELECT ciphertext, session_id, COALESCE(edited_at, sent_at), history \
                         FROM {messages} WHERE conversation_id = $1 AND seq = $2"
                    ))
                    .bind(&conversation)
                    .bind(e.seq)
                    .fetch_optional(&mut **tx)
                    .await?;
                if let Some((Some(old), old_session, since, history)) = row {
                    let mut history: Vec<serde_json::Value> =
                        serde_json::from_str(&history).unwrap_or_default();
                    history.push(serde_json::json!({
                        "ciphertext": old, "session_id": old_session, "since": since,
                    }));
                    sqlx::query(&format!(
                        "UPDATE {messages} SET ciphertext = $3, session_id = $4, edited_at = $5, \
                         history = $6 WHERE conversation_id = $1 AND seq = $2"
                    ))
                    .bind(&conversation)
                    .bind(e.seq)
                    .bind(&e.ciphertext)
                    .bind(&e.session_id)
                    .bind(ts(e.edited_at))
                    .bind(serde_json::Value::Array(history).to_string())
                    .execute(&mut **tx)
                    .await?;
                }
            }
            ConversationEvent::MessageRecalled(e) => {
                sqlx::query(&format!(
                    "UPDATE {messages} SET ciphertext = NULL, history = '[]', recalled = 1 \
                     WHERE conversation_id = $1 AND seq = $2"
                ))
                .bind(e.conversation_id.to_string())
                .bind(e.seq)
                .execute(&mut **tx)
                .await?;
            }
            ConversationEvent::ReactionAdded(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {reactions} (conversation_id, seq, user_id, emoji) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
                ))
                .bind(e.conversation_id.to_string())
                .bind(e.seq)
                .bind(e.user_id.to_string())
                .bind(&e.emoji)
                .execute(&mut **tx)
                .await?;
            }
            ConversationEvent::ReactionRemoved(e) => {
                sqlx::query(&format!(
                    "DELETE FROM {reactions} WHERE conversation_id = $1 AND seq = $2 \
                     AND user_id = $3 AND emoji = $4"
                ))
                .bind(e.conversation_id.to_string())
                .bind(e.seq)
                .bind(e.user_id.to_string())
                .bind(&e.emoji)
                .execute(&mut **tx)
                .await?;
            }
            ConversationEvent::Read(e) => {
                sqlx::query(&format!(
                    "UPDATE {list} SET read_seq = $3 \
                     WHERE conversation_id = $1 AND user_id = $2 AND read_seq < $3"
                ))
                .bind(e.conversation_id.to_string())
                .bind(e.user_id.to_string())
                .bind(e.up_to_seq)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}
