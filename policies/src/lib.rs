//! Policies and their runtime: consumers that react to another domain's events by issuing
//! commands to their **own** domain's aggregates (DESIGN rule 1), e.g. "when a user is
//! deactivated, end their follows".
//!
//! One module per domain that reacts, named like everywhere else: [`follow`]
//! (`FollowOnUserDeactivated`, and `FollowOfInactiveUser` for a follow that raced a
//! deactivation), [`post`] (`PostOnUserDeactivated`) and [`experiment`]
//! (`ExperimentOnUserDeactivated`); [`all`] is the list Nova
//! runs. A policy reaches its domain only through that domain's command service (it holds
//! nothing else that can append, and the command crate's writers keep every domain's appends
//! in its own module, ADR 0008); it learns which aggregates to command from a read model, through
//! the fact traits of `nova_commands::facts`, after waiting for that read model to catch up
//! ([`CatchUp`]).

use std::sync::Arc;

use nova_commands::experiment::ExperimentCommands;
use nova_commands::facts::{
    ExperimentFactSource, FollowFactSource, PostFactSource, UserFactSource,
};
use nova_commands::follow::FollowCommands;
use nova_commands::post::PostCommands;
use nova_event_schemas::Domain;

pub mod experiment;
pub mod follow;
pub mod post;
pub mod runtime;

pub use runtime::{
    react_all, react_once, retry_dead_letters, run_policy, wait_until_applied, wait_until_current,
    CatchUp, Policy, PolicyError, Retried,
};

/// Name and consumed domains of every policy [`all`] returns, known without building them (for
/// `nova projections status` and `/v1/projections`). `nova`'s boundaries tests hold it equal to
/// [`all`].
pub const CATALOG: &[(&str, &[Domain])] = &[
    (follow::NAME, follow::DOMAINS),
    (follow::RACE_NAME, follow::RACE_DOMAINS),
    (post::NAME, post::DOMAINS),
    (experiment::NAME, experiment::DOMAINS),
];

/// Every policy Nova runs: each reacts to another domain's events with commands to its own.
/// `facts` answers every policy's questions about other domains (`nova::facts::ReadModels`).
pub fn all<F>(
    follows: &FollowCommands,
    posts: &PostCommands,
    experiments: &ExperimentCommands,
    facts: Arc<F>,
    catch_up: &CatchUp,
) -> Vec<Arc<dyn Policy>>
where
    F: FollowFactSource + PostFactSource + ExperimentFactSource + UserFactSource,
{
    vec![
        Arc::new(follow::FollowOnUserDeactivated::new(
            follows.clone(),
            facts.clone(),
            catch_up.clone(),
        )),
        Arc::new(follow::FollowOfInactiveUser::new(
            follows.clone(),
            facts.clone(),
            catch_up.clone(),
        )),
        Arc::new(post::PostOnUserDeactivated::new(
            posts.clone(),
            facts.clone(),
            catch_up.clone(),
        )),
        Arc::new(experiment::ExperimentOnUserDeactivated::new(
            experiments.clone(),
            facts,
            catch_up.clone(),
        )),
    ]
}
