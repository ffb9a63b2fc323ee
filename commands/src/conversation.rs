//! Command handlers of the `conversation` domain (messaging): conversations, members, message
//! requests, messages, reactions and read receipts — event-sourced through the
//! [`Conversation`] aggregate — and, in [`keys`], the key server and to-device queue, which are
//! tables this domain owns rather than event streams (ADR 0020). The server is blind: it
//! handles public keys and ciphertext only, never a private key or a plaintext.
//!
//! Facts about other domains — is a member an active user, does the recipient follow the
//! sender, is there a block — come from the read models through [`crate::facts`] and may lag.
//! Only this module can create a [`ConversationWriter`].

use std::sync::Arc;

use chrono::Utc;
use nova_aggregates::conversation::{
    direct_conversation_id, Conversation, ConversationCommand, ConversationError,
    ConversationState, Kind, NewMessage,
};
use nova_event_schemas::conversation::ConversationEvent;
use uuid::Uuid;

use crate::facts::{FollowFactSource, UserFactSource};
use crate::{CommandContext, CommandError, CommandStore, Done, Owned, Repository};

pub mod keys;

/// The conversation domain's writer (see `repository`): only this module can create one.
pub struct ConversationWriter(());

impl Owned for ConversationEvent {
    type Writer = ConversationWriter;
}

/// Why a conversation command failed: the one command error, with the domain's refusals.
pub type ConversationCommandError = CommandError<ConversationError>;

type Result<T> = std::result::Result<T, ConversationCommandError>;

/// Most members a group may be created with.
pub const MAX_MEMBERS: usize = 256;
/// Longest group name, in characters.
pub const MAX_NAME: usize = 100;
/// Largest ciphertext of a message, in bytes (below the default 64 KiB body limit).
pub const MAX_CIPHERTEXT: usize = 32 * 1024;
/// Longest device, session or client message id, and emoji.
pub const MAX_ID: usize = 128;
/// Longest reaction (characters).
pub const MAX_EMOJI: usize = 16;

/// A message as the client sends it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub ciphertext: String,
    pub sender_device_id: String,
    pub session_id: String,
    pub client_message_id: String,
}

/// The answer to a send: the message (the first one for a repeated `client_message_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub message_id: Uuid,
    pub seq: i64,
    pub done: Done,
}

#[derive(Clone)]
pub struct ConversationCommands {
    store: CommandStore,
    conversations: Repository<Conversation>,
    users: Arc<dyn UserFactSource>,
    follows: Arc<dyn FollowFactSource>,
}

fn refused(e: ConversationError) -> ConversationCommandError {
    CommandError::Refused(e)
}

/// Opaque, but not empty and without U+0000: PostgreSQL's JSONB (the event payload) cannot
/// hold it, so it would fail the append instead of being refused.
fn check_ciphertext(ciphertext: &str) -> Result<()> {
    if ciphertext.is_empty() || ciphertext.contains('\0') {
        return Err(CommandError::invalid(
            "ciphertext",
            "must not be empty or contain U+0000",
        ));
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    // Characters, not bytes: the OpenAPI document's `maxLength` counts characters.
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(CommandError::invalid(
            field,
            format!("must be 1–{max} printable characters"),
        ));
    }
    Ok(())
}

impl ConversationCommands {
    pub fn new(
        store: CommandStore,
        users: Arc<dyn UserFactSource>,
        follows: Arc<dyn FollowFactSource>,
    ) -> Self {
        ConversationCommands {
            conversations: Repository::new(&store, ConversationWriter(())),
            store,
            users,
            follows,
        }
    }

    /// The conversation's state for a member (`NotFound`, or `NotMember` for anyone else).
    pub async fn as_member(&self, id: Uuid, user: Uuid) -> Result<Arc<ConversationState>> {
        let loaded = self.conversations.load_shared(id).await?;
        if loaded.state.kind.is_none() {
            return Err(refused(ConversationError::NotFound));
        }
        if !loaded.state.is_member(user) {
            return Err(refused(ConversationError::NotMember));
        }
        Ok(Arc::new(loaded.state.clone()))
    }

    async fn require_active(&self, user: Uuid) -> Result<()> {
        if self.users.is_active(user).await? {
            Ok(())
        } else {
            Err(refused(ConversationError::UnknownUser))
        }
    }

    /// Creates a conversation; answers its id and whether it was created (`false`: the direct
    /// conversation with this person exists already).
    pub async fn create(
        &self,
        ctx: &CommandContext,
        creator: Uuid,
        kind: Kind,
        member_ids: &[Uuid],
        name: Option<String>,
    ) -> Result<(Uuid, bool, Done)> {
        let mut others: Vec<Uuid> = Vec::new();
        for m in member_ids {
            if *m != creator && !others.contains(m) {
                others.push(*m);
            }
        }
        match kind {
            Kind::Direct if others.len() != 1 => {
                return Err(CommandError::invalid(
                    "member_ids",
                    "must name exactly one other user for a direct conversation",
                ))
            }
            Kind::Direct if name.is_some() => {
                return Err(CommandError::invalid(
                    "name",
                    "is for group conversations only",
                ))
            }
            Kind::Group if others.is_empty() || others.len() >= MAX_MEMBERS => {
                return Err(CommandError::invalid(
                    "member_ids",
                    format!("must name 1–{} other users", MAX_MEMBERS - 1),
                ))
            }
            _ => {}
        }
        if let Some(n) = &name {
            if n.trim().is_empty()
                || n.chars().count() > MAX_NAME
                || n.chars().any(char::is_control)
            {
                return Err(CommandError::invalid(
                    "name",
                    format!("must be 1–{MAX_NAME} printable characters"),
                ));
            }
        }
        for &o in &others {
            self.require_active(o).await?;
            if self.follows.block_between(creator, o).await? {
                return Err(refused(ConversationError::Blocked));
            }
        }
        let (id, request) = match kind {
            Kind::Direct => {
                let other = others[0];
                let id = direct_conversation_id(creator, other);
                let existing = self.conversations.load_shared(id).await?;
                if existing.state.kind.is_some() {
                    return Ok((
                        id,
                        false,
                        Done {
                            version: existing.version,
                            position: None,
                        },
                    ));
                }
                // A message request unless the recipient follows the creator.
                let edges = self.follows.edges_of(other).await?;
                (id, !edges.contains(&(other, creator)))
            }
            Kind::Group => (Uuid::now_v7(), false),
        };
        let result = self
            .conversations
            .execute(id, ctx, |_| {
                Ok(ConversationCommand::Create {
                    id,
                    kind,
                    name: name.clone(),
                    creator,
                    others: others.clone(),
                    request,
                    now: Utc::now(),
                })
            })
            .await;
        match result {
            Ok(e) => Ok((e.aggregate_id, true, e.done())),
            // The other person created it at the same moment.
            Err(CommandError::Refused(ConversationError::AlreadyExists))
                if kind == Kind::Direct =>
            {
                let loaded = self.conversations.load_shared(id).await?;
                Ok((
                    id,
                    false,
                    Done {
                        version: loaded.version,
                        position: None,
                    },
                ))
            }
            Err(e) => Err(e),
        }
    }

    async fn run(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        make: impl Fn(&ConversationState) -> ConversationCommand,
    ) -> Result<Done> {
        let e = self.conversations.execute(id, ctx, |s| Ok(make(s))).await?;
        Ok(e.done())
    }

    /// An admin adds `user` to a group.
    pub async fn add_member(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        user: Uuid,
    ) -> Result<Done> {
        self.as_member(id, by).await?;
        self.require_active(user).await?;
        if self.follows.block_between(by, user).await? {
            return Err(refused(ConversationError::Blocked));
        }
        self.run(ctx, id, |_| ConversationCommand::AddMember {
            by,
            user,
            now: Utc::now(),
        })
        .await
    }

    /// An admin removes `user`, or a member leaves (`user == by`).
    pub async fn remove_member(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        user: Uuid,
    ) -> Result<Done> {
        self.run(ctx, id, |_| ConversationCommand::RemoveMember {
            by,
            user,
            now: Utc::now(),
        })
        .await
    }

    /// The recipient answers a message request.
    pub async fn answer_request(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        accept: bool,
    ) -> Result<Done> {
        self.run(ctx, id, |_| {
            let now = Utc::now();
            if accept {
                ConversationCommand::Accept { by, now }
            } else {
                ConversationCommand::Decline { by, now }
            }
        })
        .await
    }

    /// Sends a message; the same `client_message_id` from the same sender answers the first.
    pub async fn send(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        sender: Uuid,
        m: Outgoing,
    ) -> Result<Sent> {
        check_ciphertext(&m.ciphertext)?;
        if m.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(refused(ConversationError::TooLarge));
        }
        check_text("sender_device_id", &m.sender_device_id, MAX_ID)?;
        check_text("session_id", &m.session_id, MAX_ID)?;
        check_text("client_message_id", &m.client_message_id, MAX_ID)?;
        let state = self.as_member(id, sender).await?;
        let blocked = match state.kind {
            Some(Kind::Direct) => match state.members.iter().find(|u| **u != sender) {
                Some(&other) => self.follows.block_between(sender, other).await?,
                None => false,
            },
            _ => false,
        };
        let message_id = Uuid::now_v7();
        let e = self
            .conversations
            .execute(id, ctx, |_| {
                Ok(ConversationCommand::Send {
                    message: NewMessage {
                        message_id,
                        sender,
                        sender_device_id: m.sender_device_id.clone(),
                        session_id: m.session_id.clone(),
                        ciphertext: m.ciphertext.clone(),
                        client_message_id: m.client_message_id.clone(),
                        blocked,
                    },
                    now: Utc::now(),
                })
            })
            .await?;
        let (message_id, seq) = e
            .state
            .client_ids
            .get(&(sender, m.client_message_id.clone()))
            .copied()
            .ok_or_else(|| CommandError::Internal("a sent message is not in the state".into()))?;
        Ok(Sent {
            message_id,
            seq,
            done: e.done(),
        })
    }

    /// The sender replaces a message's ciphertext (the old one stays in the history).
    pub async fn edit(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        message_id: Uuid,
        session_id: String,
        ciphertext: String,
    ) -> Result<Done> {
        check_ciphertext(&ciphertext)?;
        if ciphertext.len() > MAX_CIPHERTEXT {
            return Err(refused(ConversationError::TooLarge));
        }
        check_text("session_id", &session_id, MAX_ID)?;
        self.run(ctx, id, |_| ConversationCommand::Edit {
            by,
            message_id,
            session_id: session_id.clone(),
            ciphertext: ciphertext.clone(),
            now: Utc::now(),
        })
        .await
    }

    /// The sender recalls a message.
    pub async fn recall(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        message_id: Uuid,
    ) -> Result<Done> {
        self.run(ctx, id, |_| ConversationCommand::Recall {
            by,
            message_id,
            now: Utc::now(),
        })
        .await
    }

    /// Adds (`on`) or removes a reaction.
    pub async fn react(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        message_id: Uuid,
        emoji: &str,
        on: bool,
    ) -> Result<Done> {
        if emoji.is_empty()
            || emoji.chars().count() > MAX_EMOJI
            || emoji.chars().any(char::is_control)
        {
            return Err(CommandError::invalid(
                "emoji",
                "must be 1–16 printable characters",
            ));
        }
        self.run(ctx, id, |_| ConversationCommand::React {
            by,
            message_id,
            emoji: emoji.to_owned(),
            on,
            now: Utc::now(),
        })
        .await
    }

    /// The conversation domain's head (for policies that wait for the view to reach it).
    pub async fn head(&self) -> Result<i64> {
        self.store
            .head(nova_event_schemas::Domain::Conversation)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))
    }

    /// A deactivated user leaves the conversation (any kind).
    pub async fn depart(&self, ctx: &CommandContext, id: Uuid, user: Uuid) -> Result<Done> {
        self.run(ctx, id, |_| ConversationCommand::Depart {
            user,
            now: Utc::now(),
        })
        .await
    }

    /// A read receipt up to `up_to_seq`.
    pub async fn mark_read(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        by: Uuid,
        up_to_seq: i64,
    ) -> Result<Done> {
        if up_to_seq < 0 {
            return Err(CommandError::invalid("up_to_seq", "must not be negative"));
        }
        self.run(ctx, id, |_| ConversationCommand::MarkRead {
            by,
            up_to_seq,
            now: Utc::now(),
        })
        .await
    }
}
