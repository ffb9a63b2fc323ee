//! The `conversation` domain: the [`Conversation`] aggregate (direct or group), its members,
//! the message request of a direct conversation, and its messages.
//!
//! Invariants kept here:
//! - a direct conversation has exactly two members, for good; its id is derived from the pair
//!   (`direct_conversation_id`), so creating it again answers the existing one;
//! - only members send, edit, recall, react and mark read; only admins add and remove others;
//!   any member may remove themself (leave);
//! - messages get `seq` 1, 2, 3, … without gaps; the same `client_message_id` from the same
//!   sender answers the first message and appends nothing;
//! - only the sender edits or recalls a message, and a recalled message is not edited;
//! - a declined message request takes no more messages;
//! - the server is blind: commands carry ciphertext, never plaintext.
//!
//! Facts from other domains (does the recipient follow the sender? is there a block?) are
//! looked up by the command handler and put into the command.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_event_schemas::conversation::*;
use uuid::Uuid;

use crate::CommandName;

/// The `aggregate_type` of every aggregate of the `conversation` domain.
pub const AGGREGATE_TYPES: &[&str] = &[<Conversation as Aggregate>::NAME];

pub use nova_event_schemas::conversation::{direct_conversation_id, Kind};

/// Why the conversation domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("conversation not found")]
    NotFound,
    #[error("the conversation exists already")]
    AlreadyExists,
    #[error("only members may do this")]
    NotMember,
    #[error("only group admins may do this")]
    NotAdmin,
    #[error("message not found")]
    MessageNotFound,
    #[error("only the sender may change a message")]
    NotSender,
    #[error("the message was recalled")]
    Recalled,
    #[error("the message request was declined")]
    RequestDeclined,
    #[error("there is no pending message request for you here")]
    NoRequest,
    #[error("a direct conversation's members cannot change")]
    DirectMembership,
    #[error("a block between the users refuses this")]
    Blocked,
    #[error("up_to_seq is beyond the last message")]
    BeyondLastMessage,
    /// A member to be is not an active user (decided by the handler from the directory).
    #[error("user not found")]
    UnknownUser,
    /// A ciphertext past its bound (decided by the handler; 413).
    #[error("the ciphertext is too large")]
    TooLarge,
}

/// Where a direct conversation's message request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Request {
    Pending(Uuid),
    Declined(Uuid),
}

/// What the aggregate remembers of a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageInfo {
    pub seq: i64,
    pub sender: Uuid,
    pub recalled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ConversationState {
    pub id: Option<Uuid>,
    pub kind: Option<Kind>,
    pub members: BTreeSet<Uuid>,
    pub admins: BTreeSet<Uuid>,
    pub request: Option<Request>,
    pub last_seq: i64,
    pub messages: BTreeMap<Uuid, MessageInfo>,
    /// (sender, client_message_id) → (message id, seq). Bookkeeping for idempotent sends, left
    /// out of the state analysts read (a map keyed by pairs has no JSON form).
    #[serde(skip)]
    pub client_ids: BTreeMap<(Uuid, String), (Uuid, i64)>,
    /// (message, user, emoji).
    pub reactions: BTreeSet<(Uuid, Uuid, String)>,
    pub read: BTreeMap<Uuid, i64>,
}

impl ConversationState {
    pub fn is_member(&self, user: Uuid) -> bool {
        self.members.contains(&user)
    }
}

/// A new message, as the handler prepared it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub message_id: Uuid,
    pub sender: Uuid,
    pub sender_device_id: String,
    pub session_id: String,
    pub ciphertext: String,
    pub client_message_id: String,
    /// A block between the sender and the other member of a direct conversation.
    pub blocked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    Create {
        id: Uuid,
        kind: Kind,
        name: Option<String>,
        creator: Uuid,
        /// The other members (deduplicated, without the creator).
        others: Vec<Uuid>,
        /// Direct only: the other member does not follow the creator.
        request: bool,
        now: DateTime<Utc>,
    },
    AddMember {
        by: Uuid,
        user: Uuid,
        now: DateTime<Utc>,
    },
    RemoveMember {
        by: Uuid,
        user: Uuid,
        now: DateTime<Utc>,
    },
    Accept {
        by: Uuid,
        now: DateTime<Utc>,
    },
    Decline {
        by: Uuid,
        now: DateTime<Utc>,
    },
    Send {
        message: NewMessage,
        now: DateTime<Utc>,
    },
    Edit {
        by: Uuid,
        message_id: Uuid,
        session_id: String,
        ciphertext: String,
        now: DateTime<Utc>,
    },
    Recall {
        by: Uuid,
        message_id: Uuid,
        now: DateTime<Utc>,
    },
    React {
        by: Uuid,
        message_id: Uuid,
        emoji: String,
        on: bool,
        now: DateTime<Utc>,
    },
    MarkRead {
        by: Uuid,
        up_to_seq: i64,
        now: DateTime<Utc>,
    },
    /// The user was deactivated: they leave, whatever the kind (issued by the deactivation
    /// policy).
    Depart {
        user: Uuid,
        now: DateTime<Utc>,
    },
}

impl CommandName for ConversationCommand {
    fn name(&self) -> &'static str {
        match self {
            ConversationCommand::Create { .. } => "create",
            ConversationCommand::AddMember { .. } => "add_member",
            ConversationCommand::RemoveMember { .. } => "remove_member",
            ConversationCommand::Accept { .. } => "accept",
            ConversationCommand::Decline { .. } => "decline",
            ConversationCommand::Send { .. } => "send",
            ConversationCommand::Edit { .. } => "edit",
            ConversationCommand::Recall { .. } => "recall",
            ConversationCommand::React { .. } => "react",
            ConversationCommand::MarkRead { .. } => "mark_read",
            ConversationCommand::Depart { .. } => "depart",
        }
    }
}

pub struct Conversation;

type Decided = Result<Vec<ConversationEvent>, ConversationError>;

impl Conversation {
    fn member(state: &ConversationState, user: Uuid) -> Result<(), ConversationError> {
        if state.is_member(user) {
            Ok(())
        } else {
            Err(ConversationError::NotMember)
        }
    }

    fn own_message(
        state: &ConversationState,
        by: Uuid,
        message_id: Uuid,
    ) -> Result<&MessageInfo, ConversationError> {
        Self::member(state, by)?;
        let m = state
            .messages
            .get(&message_id)
            .ok_or(ConversationError::MessageNotFound)?;
        if m.sender != by {
            return Err(ConversationError::NotSender);
        }
        if m.recalled {
            return Err(ConversationError::Recalled);
        }
        Ok(m)
    }

    fn send(state: &ConversationState, id: Uuid, m: NewMessage, now: DateTime<Utc>) -> Decided {
        Self::member(state, m.sender)?;
        if state
            .client_ids
            .contains_key(&(m.sender, m.client_message_id.clone()))
        {
            // The same send again: the first message is the answer (the handler reads it
            // from the state).
            return Ok(vec![]);
        }
        if m.blocked {
            return Err(ConversationError::Blocked);
        }
        let mut events = Vec::new();
        match state.request {
            Some(Request::Declined(_)) => return Err(ConversationError::RequestDeclined),
            // The recipient of a request who writes back accepts it.
            Some(Request::Pending(to)) if to == m.sender => {
                events.push(ConversationEvent::RequestAccepted(RequestAccepted {
                    conversation_id: id,
                    user_id: to,
                    accepted_at: now,
                }));
            }
            _ => {}
        }
        events.push(ConversationEvent::MessageSent(MessageSent {
            conversation_id: id,
            message_id: m.message_id,
            seq: state.last_seq + 1,
            sender_id: m.sender,
            sender_device_id: m.sender_device_id,
            session_id: m.session_id,
            ciphertext: m.ciphertext,
            client_message_id: m.client_message_id,
            sent_at: now,
        }));
        Ok(events)
    }
}

impl Aggregate for Conversation {
    const NAME: &'static str = "conversation";
    type State = ConversationState;
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;

    fn handle_command(state: &ConversationState, command: ConversationCommand) -> Decided {
        use ConversationCommand as C;
        use ConversationEvent as E;
        if let C::Create {
            id,
            kind,
            name,
            creator,
            others,
            request,
            now,
        } = command
        {
            if state.kind.is_some() {
                return Err(ConversationError::AlreadyExists);
            }
            let mut member_ids = vec![creator];
            member_ids.extend(others.iter().copied().filter(|o| *o != creator));
            let request_to = match kind {
                Kind::Direct if request => member_ids.get(1).copied(),
                _ => None,
            };
            return Ok(vec![E::Created(Created {
                conversation_id: id,
                kind,
                name,
                creator_id: creator,
                member_ids,
                admin_ids: match kind {
                    Kind::Group => vec![creator],
                    Kind::Direct => vec![],
                },
                request_to,
                created_at: now,
            })]);
        }
        let kind = state.kind.ok_or(ConversationError::NotFound)?;
        let id = state.id.ok_or(ConversationError::NotFound)?;
        match command {
            C::Create { .. } => Err(ConversationError::AlreadyExists),
            C::AddMember { by, user, now } => {
                Self::member(state, by)?;
                if kind == Kind::Direct {
                    return Err(ConversationError::DirectMembership);
                }
                if !state.admins.contains(&by) {
                    return Err(ConversationError::NotAdmin);
                }
                if state.is_member(user) {
                    return Ok(vec![]);
                }
                Ok(vec![E::MemberAdded(MemberAdded {
                    conversation_id: id,
                    user_id: user,
                    added_by: by,
                    added_at: now,
                })])
            }
            C::RemoveMember { by, user, now } => {
                Self::member(state, by)?;
                if kind == Kind::Direct {
                    return Err(ConversationError::DirectMembership);
                }
                if by != user && !state.admins.contains(&by) {
                    return Err(ConversationError::NotAdmin);
                }
                if !state.is_member(user) {
                    return Ok(vec![]);
                }
                Ok(vec![E::MemberRemoved(MemberRemoved {
                    conversation_id: id,
                    user_id: user,
                    removed_by: by,
                    removed_at: now,
                })])
            }
            C::Accept { by, now } => match state.request {
                Some(Request::Pending(to)) if to == by => {
                    Ok(vec![E::RequestAccepted(RequestAccepted {
                        conversation_id: id,
                        user_id: by,
                        accepted_at: now,
                    })])
                }
                _ => {
                    Self::member(state, by)?;
                    Err(ConversationError::NoRequest)
                }
            },
            C::Decline { by, now } => match state.request {
                Some(Request::Pending(to)) if to == by => {
                    Ok(vec![E::RequestDeclined(RequestDeclined {
                        conversation_id: id,
                        user_id: by,
                        declined_at: now,
                    })])
                }
                Some(Request::Declined(to)) if to == by => Ok(vec![]),
                _ => {
                    Self::member(state, by)?;
                    Err(ConversationError::NoRequest)
                }
            },
            C::Send { message, now } => Self::send(state, id, message, now),
            C::Edit {
                by,
                message_id,
                session_id,
                ciphertext,
                now,
            } => {
                let m = Self::own_message(state, by, message_id)?;
                Ok(vec![E::MessageEdited(MessageEdited {
                    conversation_id: id,
                    message_id,
                    seq: m.seq,
                    session_id,
                    ciphertext,
                    edited_at: now,
                })])
            }
            C::Recall {
                by,
                message_id,
                now,
            } => {
                Self::member(state, by)?;
                if state
                    .messages
                    .get(&message_id)
                    .is_some_and(|m| m.recalled && m.sender == by)
                {
                    return Ok(vec![]);
                }
                let m = Self::own_message(state, by, message_id)?;
                Ok(vec![E::MessageRecalled(MessageRecalled {
                    conversation_id: id,
                    message_id,
                    seq: m.seq,
                    recalled_at: now,
                })])
            }
            C::React {
                by,
                message_id,
                emoji,
                on,
                now,
            } => {
                Self::member(state, by)?;
                let m = state
                    .messages
                    .get(&message_id)
                    .ok_or(ConversationError::MessageNotFound)?;
                if m.recalled {
                    return Err(ConversationError::Recalled);
                }
                let has = state.reactions.contains(&(message_id, by, emoji.clone()));
                let r = Reaction {
                    conversation_id: id,
                    message_id,
                    seq: m.seq,
                    user_id: by,
                    emoji,
                    at: now,
                };
                Ok(match (on, has) {
                    (true, false) => vec![E::ReactionAdded(r)],
                    (false, true) => vec![E::ReactionRemoved(r)],
                    _ => vec![],
                })
            }
            C::Depart { user, now } => {
                if !state.is_member(user) {
                    return Ok(vec![]);
                }
                Ok(vec![E::MemberRemoved(MemberRemoved {
                    conversation_id: id,
                    user_id: user,
                    removed_by: user,
                    removed_at: now,
                })])
            }
            C::MarkRead { by, up_to_seq, now } => {
                Self::member(state, by)?;
                if up_to_seq > state.last_seq {
                    return Err(ConversationError::BeyondLastMessage);
                }
                if up_to_seq <= state.read.get(&by).copied().unwrap_or(0) {
                    return Ok(vec![]);
                }
                Ok(vec![E::Read(Read {
                    conversation_id: id,
                    user_id: by,
                    up_to_seq,
                    read_at: now,
                })])
            }
        }
    }

    fn apply_event(mut state: ConversationState, event: ConversationEvent) -> ConversationState {
        use ConversationEvent as E;
        match event {
            E::Created(e) => {
                state.id = Some(e.conversation_id);
                state.kind = Some(e.kind);
                state.members = e.member_ids.into_iter().collect();
                state.admins = e.admin_ids.into_iter().collect();
                state.request = e.request_to.map(Request::Pending);
            }
            E::MemberAdded(e) => {
                state.members.insert(e.user_id);
            }
            E::MemberRemoved(e) => {
                state.members.remove(&e.user_id);
                state.admins.remove(&e.user_id);
            }
            E::RequestAccepted(_) => state.request = None,
            E::RequestDeclined(e) => state.request = Some(Request::Declined(e.user_id)),
            E::MessageSent(e) => {
                state.last_seq = e.seq;
                state
                    .client_ids
                    .insert((e.sender_id, e.client_message_id), (e.message_id, e.seq));
                state.messages.insert(
                    e.message_id,
                    MessageInfo {
                        seq: e.seq,
                        sender: e.sender_id,
                        recalled: false,
                    },
                );
            }
            E::MessageEdited(_) => {}
            E::MessageRecalled(e) => {
                if let Some(m) = state.messages.get_mut(&e.message_id) {
                    m.recalled = true;
                }
            }
            E::ReactionAdded(e) => {
                state.reactions.insert((e.message_id, e.user_id, e.emoji));
            }
            E::ReactionRemoved(e) => {
                state.reactions.remove(&(e.message_id, e.user_id, e.emoji));
            }
            E::Read(e) => {
                state.read.insert(e.user_id, e.up_to_seq);
            }
        }
        state
    }
}

#[cfg(test)]
mod tests;
