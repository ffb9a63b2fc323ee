//! The follow domain's policy on `user.deactivated`.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::facts::FollowFactSource;
use nova_commands::follow::FollowCommands;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::follow_graph;
use uuid::Uuid;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_follow_on_user_deactivated";

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
