//! Command handlers of the `follow` domain, and its policy on `user.deactivated`.
//!
//! The relationship aggregate decides; this module supplies what it cannot know: the time,
//! and whether the target user exists and is active — looked up in the user directory (a read
//! model), never in the user domain's events.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::Utc;
use nova_aggregates::follow::{relationship_id, FollowCommand, FollowError, Relationship};
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use nova_projections::policy::{self, Policy, PolicyError};
use nova_projections::{follow_graph, Checkpoints};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::{CommandContext, CommandError, Done, Repository};

/// Why a follow command failed, in terms the HTTP edge maps once.
#[derive(Debug, thiserror::Error)]
pub enum FollowCommandError {
    /// The target user is unknown or deactivated.
    #[error("user not found")]
    NotFound,
    #[error(transparent)]
    Domain(FollowError),
    #[error("the relationship changed concurrently too often; retry")]
    Conflict,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CommandError<FollowError>> for FollowCommandError {
    fn from(e: CommandError<FollowError>) -> Self {
        match e {
            CommandError::Domain(d) => FollowCommandError::Domain(d),
            CommandError::Conflict => FollowCommandError::Conflict,
            CommandError::Store(StoreError::Conflict { .. }) => FollowCommandError::Conflict,
            CommandError::Store(s) => FollowCommandError::Unavailable(s.to_string()),
            CommandError::Corrupt(m) => FollowCommandError::Internal(m),
        }
    }
}

impl From<nova_queries::QueryError> for FollowCommandError {
    fn from(e: nova_queries::QueryError) -> Self {
        FollowCommandError::Unavailable(e.to_string())
    }
}

type Result<T> = std::result::Result<T, FollowCommandError>;

#[derive(Clone)]
pub struct FollowCommands {
    store: EventStore,
    relationships: Repository<Relationship>,
    /// Read models (the user directory) for facts about other domains.
    read: AnyPool,
}

impl FollowCommands {
    pub fn new(store: EventStore, read: AnyPool) -> Self {
        FollowCommands {
            relationships: Repository::new(store.clone()),
            store,
            read,
        }
    }

    /// `actor` follows `target`. Refused across a block (either way) and for oneself.
    pub async fn follow(&self, ctx: &CommandContext, actor: Uuid, target: Uuid) -> Result<Done> {
        self.run(ctx, actor, target, true, |actor, target| {
            FollowCommand::Follow {
                actor,
                target,
                now: Utc::now(),
            }
        })
        .await
    }

    /// `actor` stops following `target` (nothing happens if they did not follow).
    pub async fn unfollow(&self, ctx: &CommandContext, actor: Uuid, target: Uuid) -> Result<Done> {
        self.run(ctx, actor, target, false, |actor, target| {
            FollowCommand::Unfollow {
                actor,
                target,
                now: Utc::now(),
            }
        })
        .await
    }

    /// `actor` blocks `target`, ending the follows between them in both directions.
    pub async fn block(&self, ctx: &CommandContext, actor: Uuid, target: Uuid) -> Result<Done> {
        self.run(ctx, actor, target, true, |actor, target| {
            FollowCommand::Block {
                actor,
                target,
                now: Utc::now(),
            }
        })
        .await
    }

    /// `actor` lifts their block of `target` (follows are not restored).
    pub async fn unblock(&self, ctx: &CommandContext, actor: Uuid, target: Uuid) -> Result<Done> {
        self.run(ctx, actor, target, false, |actor, target| {
            FollowCommand::Unblock {
                actor,
                target,
                now: Utc::now(),
            }
        })
        .await
    }

    /// Ends every follow between `user` and `other` (reason `deactivated`); blocks stay. No
    /// directory check: `user` is being removed because it is no longer active.
    pub async fn remove_user(&self, ctx: &CommandContext, user: Uuid, other: Uuid) -> Result<Done> {
        let e = self
            .relationships
            .execute(relationship_id(user, other), ctx, |_| {
                Ok(FollowCommand::RemoveUser {
                    user,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// The event store this service appends to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The read-model pool this service looks facts up in.
    pub fn read_pool(&self) -> &AnyPool {
        &self.read
    }

    async fn run(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        target: Uuid,
        needs_active_target: bool,
        make: impl Fn(Uuid, Uuid) -> FollowCommand,
    ) -> Result<Done> {
        // Following or blocking creates a reference to the target, so the target must exist and
        // be active. Unfollowing and unblocking only end one, and must keep working when the
        // target has since been deactivated (or is not in the directory yet). A command about
        // oneself is refused by the aggregate and needs no lookup.
        if needs_active_target
            && actor != target
            && !nova_queries::user::is_active(&self.read, target).await?
        {
            return Err(FollowCommandError::NotFound);
        }
        let e = self
            .relationships
            .execute(relationship_id(actor, target), ctx, |_| {
                Ok(make(actor, target))
            })
            .await?;
        Ok(e.done())
    }
}

/// `policy_follow_on_user_deactivated`: when a user is deactivated, ends every follow of that
/// user, in both directions, by `RemoveUser` commands to the relationships involved.
///
/// Before listing the user's edges from `follow_graph`, it waits until that projection has
/// applied the follow domain up to its head, so that no follow committed before the
/// deactivation is missed. Handling the same event twice appends nothing the second time.
pub struct FollowOnUserDeactivated {
    follows: FollowCommands,
    checkpoints: Checkpoints,
}

pub const POLICY_NAME: &str = "policy_follow_on_user_deactivated";

impl FollowOnUserDeactivated {
    pub fn new(follows: FollowCommands, checkpoints: Checkpoints) -> Self {
        FollowOnUserDeactivated {
            follows,
            checkpoints,
        }
    }
}

#[async_trait]
impl Policy for FollowOnUserDeactivated {
    fn name(&self) -> &str {
        POLICY_NAME
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::User]
    }

    fn domain(&self) -> Domain {
        Domain::Follow
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["user.deactivated"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["follow.remove_user"]
    }

    async fn handle(&self, event: &RecordedEvent) -> std::result::Result<(), PolicyError> {
        if event.domain != Domain::User || event.event_type != "deactivated" {
            return Ok(());
        }
        let UserEvent::Deactivated(_) = event.decode::<UserEvent>()? else {
            return Ok(());
        };
        let user = event.aggregate_id;
        let read = self.follows.read_pool();
        policy::wait_until_current(
            self.follows.store(),
            read,
            &self.checkpoints,
            follow_graph::NAME,
            Domain::Follow,
        )
        .await?;
        let others: BTreeSet<Uuid> = nova_queries::follow::edges_of(read, user)
            .await
            .map_err(|e| PolicyError::Retry(e.to_string()))?
            .into_iter()
            .map(|(follower, followee)| if follower == user { followee } else { follower })
            .collect();
        let ctx = CommandContext {
            correlation_id: event.metadata.correlation_id,
            causation_id: Some(event.event_id),
            actor_id: None,
            request_id: event.metadata.request_id.clone(),
            idempotency: None,
        };
        for other in others {
            self.follows
                .remove_user(&ctx, user, other)
                .await
                .map_err(|e| PolicyError::Retry(e.to_string()))?;
        }
        Ok(())
    }
}
