//! `policy_post_on_user_deactivated`: when a user is deactivated, the post domain hides every
//! visible post of theirs — by commands to its own post aggregates (DESIGN rule 1), never by
//! touching another domain's data. Idempotent: hiding a hidden post appends nothing, so a
//! redelivered `user.deactivated` repeats nothing.

use async_trait::async_trait;
use nova_event_schemas::post::HideReason;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::policy::{wait_until_current, Policy, PolicyError};
use nova_projections::{post_view, Checkpoints};
use nova_queries::page::{PageRequest, MAX_LIMIT};
use nova_queries::post::posts_by_author;
use nova_queries::Cursor;

use super::{PostCommandError, PostCommands};
use crate::CommandContext;

pub const NAME: &str = "policy_post_on_user_deactivated";

pub struct PostOnUserDeactivated {
    posts: PostCommands,
    checkpoints: Checkpoints,
}

impl PostOnUserDeactivated {
    pub fn new(posts: PostCommands, checkpoints: Checkpoints) -> Self {
        PostOnUserDeactivated { posts, checkpoints }
    }
}

fn retry(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Retry(e.to_string())
}

#[async_trait]
impl Policy for PostOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::User]
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
        if event.aggregate_type != "user" {
            return Ok(());
        }
        let UserEvent::Deactivated(_) = event.decode::<UserEvent>()? else {
            return Ok(());
        };
        let author = event.aggregate_id;
        let read = self.posts.read_pool();
        // Every post committed before the deactivation must be in the view before we list.
        wait_until_current(
            self.posts.store(),
            read,
            &self.checkpoints,
            post_view::NAME,
            Domain::Post,
        )
        .await?;
        let ctx = CommandContext {
            correlation_id: event.metadata.correlation_id,
            causation_id: Some(event.event_id),
            actor_id: None,
            request_id: None,
            idempotency: None,
        };
        let mut req = PageRequest::first(MAX_LIMIT);
        loop {
            let page = posts_by_author(read, author, &req).await.map_err(retry)?;
            for post in &page.items {
                match self
                    .posts
                    .hide(&ctx, post.post_id, HideReason::AuthorDeactivated)
                    .await
                {
                    Ok(_) => {}
                    // The aggregate refused (it cannot, for a post the view lists): nothing to
                    // retry; the view and the stream disagree, which a rebuild repairs.
                    Err(PostCommandError::Domain(e)) => {
                        tracing::warn!(post_id = %post.post_id, error = %e, "hide refused");
                    }
                    Err(e) => return Err(retry(e)),
                }
            }
            match page.next_cursor.as_deref().and_then(Cursor::decode) {
                Some(c) => req.after = Some(c),
                None => return Ok(()),
            }
        }
    }
}
