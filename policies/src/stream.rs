//! The stream domain's policy on `user.deactivated`.

use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::facts::StreamFactSource;
use nova_commands::stream::{StreamCommandError, StreamCommands};
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::stream_view;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_stream_on_user_deactivated";
pub const DOMAINS: &[Domain] = &[Domain::User];

/// `policy_stream_on_user_deactivated`: when a user is deactivated, each of their streams is
/// disabled — a live one ends (with its summary), and no key of theirs starts anything again.
/// Idempotent: disabling twice appends nothing.
pub struct StreamOnUserDeactivated {
    streams: StreamCommands,
    view: Arc<dyn StreamFactSource>,
    catch_up: CatchUp,
}

impl StreamOnUserDeactivated {
    pub fn new(
        streams: StreamCommands,
        view: Arc<dyn StreamFactSource>,
        catch_up: CatchUp,
    ) -> Self {
        StreamOnUserDeactivated {
            streams,
            view,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for StreamOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    fn domain(&self) -> Domain {
        Domain::Stream
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["user.deactivated"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["stream.disable"]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let Some(user) = deactivated_user(event)? else {
            return Ok(());
        };
        // Every stream created before the deactivation must be in the view before we list.
        let head = self.streams.head().await.map_err(retry)?;
        self.catch_up
            .until(stream_view::NAME, Domain::Stream, head)
            .await?;
        let ctx = reaction_context(event);
        for stream in self.view.streams_of(user).await.map_err(retry)? {
            match self.streams.disable(&ctx, stream).await {
                Ok(_) => {}
                Err(StreamCommandError::Refused(e)) => {
                    tracing::warn!(%user, %stream, error = %e, "disable refused");
                }
                Err(e) => return Err(retry(e)),
            }
        }
        Ok(())
    }
}
