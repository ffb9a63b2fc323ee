//! The post domain's policy on `user.deactivated`.

use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::facts::PostFactSource;
use nova_commands::post::{PostCommandError, PostCommands};
use nova_event_schemas::post::HideReason;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::post_view;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_post_on_user_deactivated";
/// The domains it consumes.
pub const DOMAINS: &[Domain] = &[Domain::User];

/// `policy_post_on_user_deactivated`: when a user is deactivated, the post domain hides every
/// visible post of theirs — by commands to its own post aggregates (DESIGN rule 1), never by
/// touching another domain's data. Idempotent: hiding a hidden post appends nothing, so a
/// redelivered `user.deactivated` repeats nothing.
pub struct PostOnUserDeactivated {
    posts: PostCommands,
    /// The post view (a read model over `post_view`).
    view: Arc<dyn PostFactSource>,
    catch_up: CatchUp,
}

impl PostOnUserDeactivated {
    pub fn new(posts: PostCommands, view: Arc<dyn PostFactSource>, catch_up: CatchUp) -> Self {
        PostOnUserDeactivated {
            posts,
            view,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for PostOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    fn domain(&self) -> Domain {
        Domain::Post
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["user.deactivated"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["post.hide"]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let Some(author) = deactivated_user(event)? else {
            return Ok(());
        };
        // Every post committed before the deactivation must be in the view before we list.
        let head = self.posts.head().await.map_err(retry)?;
        self.catch_up
            .until(post_view::NAME, Domain::Post, head)
            .await?;
        let ctx = reaction_context(event);
        for post_id in self.view.posts_of(author).await.map_err(retry)? {
            match self
                .posts
                .hide(&ctx, post_id, HideReason::AuthorDeactivated)
                .await
            {
                Ok(_) => {}
                // The aggregate refused (it cannot, for a post the view lists): nothing to
                // retry; the view and the stream disagree, which a rebuild repairs.
                Err(PostCommandError::Refused(e)) => {
                    tracing::warn!(%post_id, error = %e, "hide refused");
                }
                Err(e) => return Err(retry(e)),
            }
        }
        Ok(())
    }
}
