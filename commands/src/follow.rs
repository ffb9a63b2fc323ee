//! Command handlers of the `follow` domain.
//!
//! The relationship aggregate decides; this module supplies what it cannot know: the time,
//! and whether the target user exists and is active — a [`UserFactSource`] answers from the
//! user directory (a read model), never from the user domain's events. Only this module can
//! create a [`FollowWriter`], so only it appends follow events (ADR 0008).

use std::sync::Arc;

use chrono::Utc;
use nova_aggregates::follow::{relationship_id, FollowCommand, FollowError, Relationship};
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::Domain;
use uuid::Uuid;

use crate::facts::UserFactSource;
use crate::{CommandContext, CommandError, CommandStore, Done, Owned, Repository};

/// The follow domain's writer: the proof, required to append follow events, that the code
/// appending them is this module's. Its field is private, so no other module can create one.
pub struct FollowWriter(());

impl Owned for FollowEvent {
    type Writer = FollowWriter;
}

/// Why a follow command failed: the one command error, with the relationship's refusals.
pub type FollowCommandError = CommandError<FollowError>;

type Result<T> = std::result::Result<T, FollowCommandError>;

#[derive(Clone)]
pub struct FollowCommands {
    store: CommandStore,
    relationships: Repository<Relationship>,
    /// Facts about users (the user directory); they may lag the user domain.
    users: Arc<dyn UserFactSource>,
}

impl FollowCommands {
    pub fn new(store: CommandStore, users: Arc<dyn UserFactSource>) -> Self {
        FollowCommands {
            relationships: Repository::new(&store, FollowWriter(())),
            store,
            users,
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

    /// Position of the follow domain's latest event: what a policy waits for a follow read
    /// model to reach before it lists from it.
    pub async fn head(&self) -> Result<i64> {
        self.store
            .head(Domain::Follow)
            .await
            .map_err(|e| FollowCommandError::Unavailable(e.to_string()))
    }

    /// Position of the user domain's latest event: what a policy waits for the user directory
    /// to reach before it trusts an "is active?" answer about a user.
    pub async fn user_head(&self) -> Result<i64> {
        self.store
            .head(Domain::User)
            .await
            .map_err(|e| FollowCommandError::Unavailable(e.to_string()))
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
        if needs_active_target && actor != target && !self.users.is_active(target).await? {
            return Err(FollowCommandError::Refused(FollowError::UnknownUser));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nova_infra::testing::TestDb;

    use super::*;
    use crate::facts::fake::Directory;

    /// The user directory lags the user domain. Until it lists the target, following or
    /// blocking them answers not-found and appends nothing; ending a relationship needs no
    /// lookup; once the directory lists the target, the same follow succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_not_yet_in_the_directory_is_not_found() {
        let t = TestDb::sqlite();
        let db = t.open().await;
        let directory = Arc::new(Directory::default());
        let follows = FollowCommands::new(CommandStore::new(db.store.clone()), directory.clone());
        let ctx = CommandContext::new(None, None);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());

        let refused = follows.follow(&ctx, alice, bob).await;
        assert!(
            matches!(
                refused,
                Err(FollowCommandError::Refused(FollowError::UnknownUser))
            ),
            "{refused:?}"
        );
        let refused = follows.block(&ctx, alice, bob).await;
        assert!(
            matches!(
                refused,
                Err(FollowCommandError::Refused(FollowError::UnknownUser))
            ),
            "{refused:?}"
        );
        assert_eq!(follows.head().await.unwrap(), 0);
        let done = follows.unfollow(&ctx, alice, bob).await.unwrap();
        assert_eq!(done.position, None);

        directory.add("bob", bob);
        let done = follows.follow(&ctx, alice, bob).await.unwrap();
        assert_eq!(done.position, Some(1));

        // A directory that cannot answer is store trouble (503), not "not found".
        *directory.down.lock().unwrap() = true;
        let refused = follows.follow(&ctx, bob, alice).await;
        assert!(
            matches!(refused, Err(FollowCommandError::Unavailable(_))),
            "{refused:?}"
        );
        db.close().await;
    }
}
