//! The `follow` domain: the [`Relationship`] aggregate, one per unordered pair of users
//! (id = [`relationship_id`]), holding both follow directions and both block directions.
//!
//! Invariants kept here, on one stream so they need no cross-aggregate coordination:
//! - nobody follows or blocks themselves;
//! - never a follow while a block exists in either direction (a follow across a block is
//!   refused, and a block first ends the follows both ways);
//! - commands are idempotent: repeating one whose effect already holds appends nothing.

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_event_schemas::follow::*;
use uuid::Uuid;

use crate::CommandName;

/// The `aggregate_type` of every aggregate of the `follow` domain (listed by `nova boundaries`).
pub const AGGREGATE_TYPES: &[&str] = &[<Relationship as Aggregate>::NAME];

pub use nova_event_schemas::follow::relationship_id;

/// Why the follow domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("you cannot follow yourself")]
    SelfFollow,
    #[error("you cannot block yourself")]
    SelfBlock,
    /// Either user blocks the other; the same answer both ways, so that a block is not
    /// revealed to the blocked user.
    #[error("you cannot follow this user")]
    Blocked,
    /// The command names users that do not belong to this relationship.
    #[error("the command is for another pair of users")]
    WrongPair,
    /// The other user does not exist or is deactivated (checked by the command handler against
    /// the user directory before anything is decided).
    #[error("user not found")]
    UnknownUser,
}

/// The relationship between two users, `a < b` (by UUID order).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelationshipState {
    /// The pair, ordered; `None` until the first event.
    pub pair: Option<(Uuid, Uuid)>,
    pub a_follows_b: bool,
    pub b_follows_a: bool,
    pub a_blocks_b: bool,
    pub b_blocks_a: bool,
}

impl RelationshipState {
    /// Whether `from` follows `to` (false for users outside this pair).
    pub fn follows(&self, from: Uuid, to: Uuid) -> bool {
        match self.direction(from, to) {
            Some(true) => self.a_follows_b,
            Some(false) => self.b_follows_a,
            None => false,
        }
    }

    /// Whether `from` blocks `to`.
    pub fn blocks(&self, from: Uuid, to: Uuid) -> bool {
        match self.direction(from, to) {
            Some(true) => self.a_blocks_b,
            Some(false) => self.b_blocks_a,
            None => false,
        }
    }

    /// Whether a block exists in either direction.
    pub fn any_block(&self) -> bool {
        self.a_blocks_b || self.b_blocks_a
    }

    /// `Some(true)` for a→b, `Some(false)` for b→a, `None` if (from, to) is not this pair.
    fn direction(&self, from: Uuid, to: Uuid) -> Option<bool> {
        let (a, b) = self.pair.unwrap_or_else(|| ordered(from, to));
        if (from, to) == (a, b) {
            Some(true)
        } else if (from, to) == (b, a) {
            Some(false)
        } else {
            None
        }
    }

    fn set_follow(&mut self, from: Uuid, to: Uuid, value: bool) {
        self.pair.get_or_insert_with(|| ordered(from, to));
        match self.direction(from, to) {
            Some(true) => self.a_follows_b = value,
            Some(false) => self.b_follows_a = value,
            None => {}
        }
    }

    fn set_block(&mut self, from: Uuid, to: Uuid, value: bool) {
        self.pair.get_or_insert_with(|| ordered(from, to));
        match self.direction(from, to) {
            Some(true) => self.a_blocks_b = value,
            Some(false) => self.b_blocks_a = value,
            None => {}
        }
    }

    /// Every follow that currently holds, as (follower, followee).
    pub fn edges(&self) -> Vec<(Uuid, Uuid)> {
        let Some((a, b)) = self.pair else {
            return Vec::new();
        };
        let mut edges = Vec::new();
        if self.a_follows_b {
            edges.push((a, b));
        }
        if self.b_follows_a {
            edges.push((b, a));
        }
        edges
    }
}

fn ordered(x: Uuid, y: Uuid) -> (Uuid, Uuid) {
    if x <= y {
        (x, y)
    } else {
        (y, x)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FollowCommand {
    Follow {
        actor: Uuid,
        target: Uuid,
        now: DateTime<Utc>,
    },
    Unfollow {
        actor: Uuid,
        target: Uuid,
        now: DateTime<Utc>,
    },
    Block {
        actor: Uuid,
        target: Uuid,
        now: DateTime<Utc>,
    },
    Unblock {
        actor: Uuid,
        target: Uuid,
        now: DateTime<Utc>,
    },
    /// Ends every follow involving `user` (reason `deactivated`); blocks stay. Issued by the
    /// deactivation policy.
    RemoveUser { user: Uuid, now: DateTime<Utc> },
}

impl CommandName for FollowCommand {
    fn name(&self) -> &'static str {
        match self {
            FollowCommand::Follow { .. } => "follow",
            FollowCommand::Unfollow { .. } => "unfollow",
            FollowCommand::Block { .. } => "block",
            FollowCommand::Unblock { .. } => "unblock",
            FollowCommand::RemoveUser { .. } => "remove_user",
        }
    }
}

pub struct Relationship;

impl Aggregate for Relationship {
    const NAME: &'static str = "relationship";
    type State = RelationshipState;
    type Command = FollowCommand;
    type Event = FollowEvent;
    type Error = FollowError;

    fn handle_command(
        state: &RelationshipState,
        command: FollowCommand,
    ) -> Result<Vec<FollowEvent>, FollowError> {
        match command {
            FollowCommand::Follow { actor, target, now } => {
                check_pair(state, actor, target, FollowError::SelfFollow)?;
                if state.any_block() {
                    return Err(FollowError::Blocked);
                }
                if state.follows(actor, target) {
                    return Ok(vec![]);
                }
                Ok(vec![FollowEvent::Followed(Followed {
                    follower_id: actor,
                    followee_id: target,
                    followed_at: now,
                })])
            }
            FollowCommand::Unfollow { actor, target, now } => {
                check_pair(state, actor, target, FollowError::SelfFollow)?;
                Ok(
                    unfollow(state, actor, target, UnfollowReason::Unfollowed, now)
                        .into_iter()
                        .collect(),
                )
            }
            FollowCommand::Block { actor, target, now } => {
                check_pair(state, actor, target, FollowError::SelfBlock)?;
                if state.blocks(actor, target) {
                    return Ok(vec![]);
                }
                let mut events: Vec<FollowEvent> = [(actor, target), (target, actor)]
                    .into_iter()
                    .filter_map(|(f, t)| unfollow(state, f, t, UnfollowReason::Blocked, now))
                    .collect();
                events.push(FollowEvent::Blocked(Blocked {
                    blocker_id: actor,
                    blocked_id: target,
                    blocked_at: now,
                }));
                Ok(events)
            }
            FollowCommand::Unblock { actor, target, now } => {
                check_pair(state, actor, target, FollowError::SelfBlock)?;
                if !state.blocks(actor, target) {
                    return Ok(vec![]);
                }
                Ok(vec![FollowEvent::Unblocked(Unblocked {
                    blocker_id: actor,
                    blocked_id: target,
                    unblocked_at: now,
                })])
            }
            FollowCommand::RemoveUser { user, now } => Ok(state
                .edges()
                .into_iter()
                .filter(|(f, t)| *f == user || *t == user)
                .filter_map(|(f, t)| unfollow(state, f, t, UnfollowReason::Deactivated, now))
                .collect()),
        }
    }

    fn apply_event(mut state: RelationshipState, event: FollowEvent) -> RelationshipState {
        match event {
            FollowEvent::Followed(e) => state.set_follow(e.follower_id, e.followee_id, true),
            FollowEvent::Unfollowed(e) => state.set_follow(e.follower_id, e.followee_id, false),
            FollowEvent::Blocked(e) => state.set_block(e.blocker_id, e.blocked_id, true),
            FollowEvent::Unblocked(e) => state.set_block(e.blocker_id, e.blocked_id, false),
        }
        state
    }
}

/// Refuses a command about oneself, or about a pair other than this aggregate's.
fn check_pair(
    state: &RelationshipState,
    actor: Uuid,
    target: Uuid,
    self_error: FollowError,
) -> Result<(), FollowError> {
    if actor == target {
        return Err(self_error);
    }
    match state.pair {
        Some(pair) if pair != ordered(actor, target) => Err(FollowError::WrongPair),
        _ => Ok(()),
    }
}

/// The `unfollowed` event that ends `from → to`, if that follow holds.
fn unfollow(
    state: &RelationshipState,
    from: Uuid,
    to: Uuid,
    reason: UnfollowReason,
    now: DateTime<Utc>,
) -> Option<FollowEvent> {
    if !state.follows(from, to) {
        return None;
    }
    Some(FollowEvent::Unfollowed(Unfollowed {
        follower_id: from,
        followee_id: to,
        reason,
        unfollowed_at: now,
    }))
}

#[cfg(test)]
mod tests;
