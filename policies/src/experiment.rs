//! The experiment domain's policy on `user.deactivated`.

use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::experiment::{ExperimentCommandError, ExperimentCommands};
use nova_commands::facts::ExperimentFactSource;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_projections::experiment_results;

use crate::runtime::{deactivated_user, reaction_context, retry, CatchUp, Policy, PolicyError};

pub const NAME: &str = "policy_experiment_on_user_deactivated";
/// The domains it consumes.
pub const DOMAINS: &[Domain] = &[Domain::User];

/// `policy_experiment_on_user_deactivated`: when a user is deactivated, every participant
/// stream of theirs is withdrawn, so that conversions recorded after the deactivation are not
/// counted (what was counted before stays: it happened). Exposures the user never had need
/// nothing: an unexposed user's conversions never count. Idempotent: withdrawing twice appends
/// nothing.
pub struct ExperimentOnUserDeactivated {
    experiments: ExperimentCommands,
    view: Arc<dyn ExperimentFactSource>,
    catch_up: CatchUp,
}

impl ExperimentOnUserDeactivated {
    pub fn new(
        experiments: ExperimentCommands,
        view: Arc<dyn ExperimentFactSource>,
        catch_up: CatchUp,
    ) -> Self {
        ExperimentOnUserDeactivated {
            experiments,
            view,
            catch_up,
        }
    }
}

#[async_trait]
impl Policy for ExperimentOnUserDeactivated {
    fn name(&self) -> &str {
        NAME
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    fn domain(&self) -> Domain {
        Domain::Experiment
    }

    fn consumes(&self) -> &'static [&'static str] {
        &["user.deactivated"]
    }

    fn issues(&self) -> &'static [&'static str] {
        &["experiment.withdraw"]
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let Some(user) = deactivated_user(event)? else {
            return Ok(());
        };
        // Every exposure committed before the deactivation must be in the view before we list.
        let head = self.experiments.head().await.map_err(retry)?;
        self.catch_up
            .until(experiment_results::NAME, Domain::Experiment, head)
            .await?;
        let ctx = reaction_context(event);
        for key in self.view.experiments_of(user).await.map_err(retry)? {
            match self.experiments.withdraw(&ctx, &key, user).await {
                Ok(_) => {}
                Err(ExperimentCommandError::Refused(e)) => {
                    tracing::warn!(%user, key, error = %e, "withdraw refused");
                }
                Err(e) => return Err(retry(e)),
            }
        }
        Ok(())
    }
}
