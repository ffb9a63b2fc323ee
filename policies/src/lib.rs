//! Policies and their runtime: consumers that react to another domain's events by issuing
//! commands to their **own** domain's aggregates (DESIGN rule 1), e.g. "when a user is
//! deactivated, end their follows".
//!
//! One module per domain that reacts, named like everywhere else: [`follow`]
//! (`FollowOnUserDeactivated`), [`post`] (`PostOnUserDeactivated`), [`experiment`]
//! (`ExperimentOnUserDeactivated`) and [`conversation`] (`ConversationOnUserDeactivated`);
//! [`all`] is the list Nova
//! runs. A policy reaches its domain only through that domain's command service (it holds
//! nothing else that can append, and the command crate's writers keep every domain's appends
//! in its own module, ADR 0008); it learns which aggregates to command from a read model, through
//! the fact traits of `nova_commands::facts`, after waiting for that read model to catch up
//! ([`CatchUp`]).

use std::sync::Arc;

use nova_commands::conversation::keys::KeyServer;
use nova_commands::conversation::ConversationCommands;
use nova_commands::experiment::ExperimentCommands;
use nova_commands::facts::{
    ConversationFactSource, ExperimentFactSource, FollowFactSource, PostFactSource,
};
use nova_commands::follow::FollowCommands;
use nova_commands::post::PostCommands;

pub mod conversation;
pub mod experiment;
pub mod follow;
pub mod post;
pub mod runtime;

pub use runtime::{
    react_all, react_once, run_policy, wait_until_applied, wait_until_current, CatchUp, Policy,
    PolicyError,
};

/// The conversation domain's parts its policy acts through.
pub struct ConversationParts {
    pub commands: ConversationCommands,
    pub keys: KeyServer,
    pub facts: Arc<dyn ConversationFactSource>,
}

/// Every policy Nova runs: each reacts to another domain's events with commands to its own.
#[allow(clippy::too_many_arguments)]
pub fn all(
    follows: &FollowCommands,
    posts: &PostCommands,
    follow_facts: Arc<dyn FollowFactSource>,
    post_facts: Arc<dyn PostFactSource>,
    experiments: &ExperimentCommands,
    experiment_facts: Arc<dyn ExperimentFactSource>,
    conversations: ConversationParts,
    catch_up: &CatchUp,
) -> Vec<Arc<dyn Policy>> {
    vec![
        Arc::new(follow::FollowOnUserDeactivated::new(
            follows.clone(),
            follow_facts,
            catch_up.clone(),
        )),
        Arc::new(post::PostOnUserDeactivated::new(
            posts.clone(),
            post_facts,
            catch_up.clone(),
        )),
        Arc::new(experiment::ExperimentOnUserDeactivated::new(
            experiments.clone(),
            experiment_facts,
            catch_up.clone(),
        )),
        Arc::new(conversation::ConversationOnUserDeactivated::new(
            conversations.commands,
            conversations.keys,
            conversations.facts,
            catch_up.clone(),
        )),
    ]
}
