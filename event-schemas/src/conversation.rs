//! Events of the `conversation` domain (end-to-end-encrypted messaging).
//!
//! One aggregate kind, the **conversation** (direct or group): its members and admins, the
//! message request of a direct conversation, and its messages with their per-conversation,
//! gap-free `seq`. The server is blind (ADR 0020): a message event carries the client's
//! ciphertext and metadata only — never a plaintext, never a key. The key server and the
//! to-device queue are tables, not events (ADR 0020).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

/// Namespace for the name-based ids of direct conversations.
const DIRECT_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d63_6f6e_7665_7273_6174_0001);

/// The id of the direct conversation between `a` and `b` (the same for either order), so that
/// asking again for the same pair finds the existing conversation.
pub fn direct_conversation_id(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lo.as_bytes());
    name[16..].copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&DIRECT_NAMESPACE, &name)
}

/// Direct (exactly two members) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Direct,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Created {
    pub conversation_id: Uuid,
    pub kind: Kind,
    /// Groups only.
    pub name: Option<String>,
    pub creator_id: Uuid,
    /// Every member, the creator included.
    pub member_ids: Vec<Uuid>,
    /// Group admins (the creator).
    pub admin_ids: Vec<Uuid>,
    /// A direct conversation opened with someone who does not follow the creator is a message
    /// request to them, until they accept or decline.
    pub request_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberAdded {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub added_by: Uuid,
    pub added_at: DateTime<Utc>,
}

/// A member was removed by an admin, left (`by` = the member), or was deactivated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRemoved {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    /// Who removed them (themselves when they left).
    pub removed_by: Uuid,
    pub removed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestAccepted {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDeclined {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub declined_at: DateTime<Utc>,
}

/// A message: the client's ciphertext (Olm/Megolm, opaque to the server) and metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSent {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    /// Per conversation, from 1, without gaps.
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_device_id: String,
    /// The Megolm (or Olm) session the ciphertext belongs to.
    pub session_id: String,
    pub ciphertext: String,
    /// The sender's id for the send: the same id again answers this message.
    pub client_message_id: String,
    pub sent_at: DateTime<Utc>,
}

/// New ciphertext for a message; the previous one stays in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageEdited {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub session_id: String,
    pub ciphertext: String,
    pub edited_at: DateTime<Utc>,
}

/// The sender recalled a message: its ciphertext is no longer served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRecalled {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub recalled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub user_id: Uuid,
    pub emoji: String,
    pub at: DateTime<Utc>,
}

/// A read receipt: `user_id` has read up to `up_to_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub up_to_seq: i64,
    pub read_at: DateTime<Utc>,
}

crate::domain_events! {
    /// Every event the `conversation` domain stores.
    pub enum ConversationEvent in Domain::Conversation {
        Created(Created) = ("created", 1),
        MemberAdded(MemberAdded) = ("member_added", 1),
        MemberRemoved(MemberRemoved) = ("member_removed", 1),
        RequestAccepted(RequestAccepted) = ("request_accepted", 1),
        RequestDeclined(RequestDeclined) = ("request_declined", 1),
        MessageSent(MessageSent) = ("message_sent", 1),
        MessageEdited(MessageEdited) = ("message_edited", 1),
        MessageRecalled(MessageRecalled) = ("message_recalled", 1),
        ReactionAdded(Reaction) = ("reaction_added", 1),
        ReactionRemoved(Reaction) = ("reaction_removed", 1),
        Read(Read) = ("read", 1),
    }
    upcast(event_type, version, payload) {
        (event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_direct_conversation() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(direct_conversation_id(a, b), direct_conversation_id(b, a));
        assert_ne!(direct_conversation_id(a, b), direct_conversation_id(a, c));
    }
}
