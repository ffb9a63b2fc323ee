//! The conversation domain's policy on `user.deactivated`.

use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::conversation::keys::KeyServer;
use nova_commands::conversation::{ConversationCommandError, ConversationCommands};
use nova_commands::facts::ConversationFactSource;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::conversation_view;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_conversation_on_user_deactivated";
pub const DOMAINS: &[Domain] = &[Domain::User];

/// `policy_conversation_on_user_deactivated`: a deactivated user loses every device with its
/// keys and queued to-device messages (the key server's tables, ADR 0020) and leaves every
/// conversation (`depart`, also direct ones). Idempotent: both steps do nothing the second
/// time.
pub struct ConversationOnUserDeactivated {
    conversations: ConversationCommands,
    keys: KeyServer,
    view: Arc<dyn ConversationFactSource>,
    catch_up: CatchUp,
}

impl ConversationOnUserDeactivated {
    pub fn new(
        conversations: ConversationCommands,
        keys: KeyServer,
        view: Arc<dyn ConversationFactSource>,
        catch_up: CatchUp,
    ) -> Self {
        ConversationOnUserDeactivated {
            conversations,
            keys,
            view,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for ConversationOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    fn domain(&self) -> Domain {
        Domain::Conversation
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["user.deactivated"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["conversation.depart"]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let Some(user) = deactivated_user(event)? else {
            return Ok(());
        };
        self.keys.remove_all_devices(user).await.map_err(retry)?;
        // Every membership committed before the deactivation must be in the view first.
        let head = self.conversations.head().await.map_err(retry)?;
        self.catch_up
            .until(conversation_view::NAME, Domain::Conversation, head)
            .await?;
        let ctx = reaction_context(event);
        for id in self.view.conversations_of(user).await.map_err(retry)? {
            match self.conversations.depart(&ctx, id, user).await {
                Ok(_) => {}
                Err(ConversationCommandError::Refused(e)) => {
                    tracing::warn!(%user, %id, error = %e, "depart refused");
                }
                Err(e) => return Err(retry(e)),
            }
        }
        Ok(())
    }
}
