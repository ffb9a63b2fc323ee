//! The follow domain's policy on `user.deactivated`.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::facts::{FollowFactSource, UserFactSource};
use nova_commands::follow::FollowCommands;
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::{follow_graph, user_directory};
use uuid::Uuid;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_follow_on_user_deactivated";
/// The domains it consumes.
pub const DOMAINS: &[Domain] = &[Domain::User];

/// `policy_follow_on_user_deactivated`: when a user is deactivated, ends every follow of that
/// user, in both directions, by `RemoveUser` commands to the relationships involved.
///
/// Before listing the user's edges from `follow_graph`, it waits until that projection has
/// applied the follow domain up to its head, so that no follow committed before the
/// deactivation is missed. Handling the same event twice appends nothing the second time.
pub struct FollowOnUserDeactivated {
    follows: FollowCommands,
    /// The follow graph (a read model over `follow_graph`).
    graph: Arc<dyn FollowFactSource>,
    catch_up: CatchUp,
}

impl FollowOnUserDeactivated {
    pub fn new(
        follows: FollowCommands,
        graph: Arc<dyn FollowFactSource>,
        catch_up: CatchUp,
    ) -> Self {
        FollowOnUserDeactivated {
            follows,
            graph,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for FollowOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
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

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let Some(user) = deactivated_user(event)? else {
            return Ok(());
        };
        let head = self.follows.head().await.map_err(retry)?;
        self.catch_up
            .until(follow_graph::NAME, Domain::Follow, head)
            .await?;
        let others: BTreeSet<Uuid> = self
            .graph
            .edges_of(user)
            .await
            .map_err(retry)?
            .into_iter()
            .map(|(follower, followee)| if follower == user { followee } else { follower })
            .collect();
        let ctx = reaction_context(event);
        for other in others {
            self.follows
                .remove_user(&ctx, user, other)
                .await
                .map_err(retry)?;
        }
        Ok(())
    }
}

pub const RACE_NAME: &str = "policy_follow_on_followed";
/// The domains [`FollowOfInactiveUser`] consumes.
pub const RACE_DOMAINS: &[Domain] = &[Domain::Follow];

/// `policy_follow_on_followed`: closes the race [`FollowOnUserDeactivated`] cannot see. A
/// follow accepted while the user directory still listed a just-deactivated user as active,
/// and committed after that policy listed the user's edges, would otherwise outlive the
/// deactivation. So every `follow.followed` is checked once more, after the user directory has
/// caught up with the user domain's head *as of this reaction* — later than the follow's
/// commit, hence later than any deactivation it raced: if either side is no longer active, the
/// follow is ended (`RemoveUser`, reason `deactivated`, as the deactivation policy would).
/// Handling an event twice appends nothing the second time.
pub struct FollowOfInactiveUser {
    follows: FollowCommands,
    users: Arc<dyn UserFactSource>,
    catch_up: CatchUp,
}

impl FollowOfInactiveUser {
    pub fn new(follows: FollowCommands, users: Arc<dyn UserFactSource>, catch_up: CatchUp) -> Self {
        FollowOfInactiveUser {
            follows,
            users,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for FollowOfInactiveUser {
    fn name(&self) -> &str {
        RACE_NAME
    }

    fn domains(&self) -> &'static [Domain] {
        RACE_DOMAINS
    }

    fn domain(&self) -> Domain {
        Domain::Follow
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["follow.followed"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["follow.remove_user"]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        if event.domain != Domain::Follow || event.event_type != "followed" {
            return Ok(());
        }
        let FollowEvent::Followed(f) = event.decode()? else {
            return Ok(());
        };
        let head = self.follows.user_head().await.map_err(retry)?;
        self.catch_up
            .until(user_directory::NAME, Domain::User, head)
            .await?;
        let ctx = reaction_context(event);
        for (user, other) in [
            (f.followee_id, f.follower_id),
            (f.follower_id, f.followee_id),
        ] {
            if !self.users.is_active(user).await.map_err(retry)? {
                self.follows
                    .remove_user(&ctx, user, other)
                    .await
                    .map_err(retry)?;
                return Ok(());
            }
        }
        Ok(())
    }
}
