//! Policies and their runtime: consumers that react to another domain's events by issuing
//! commands to their **own** domain's aggregates (DESIGN rule 1), e.g. "when a user is
//! deactivated, end their follows".
//!
//! One module per domain that reacts, named like everywhere else: [`follow`]
//! (`FollowOnUserDeactivated`, and `FollowOfInactiveUser` for a follow that raced a
//! deactivation), [`post`] (`PostOnUserDeactivated`), [`experiment`]
//! (`ExperimentOnUserDeactivated`), [`stream`] (`StreamOnUserDeactivated`) and [`conversation`]
//! (`ConversationOnUserDeactivated`); [`all`] is the list Nova
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
    StreamFactSource, UserFactSource,
};
use nova_commands::follow::FollowCommands;
use nova_commands::post::PostCommands;
use nova_commands::stream::StreamCommands;
use nova_event_schemas::Domain;

pub mod conversation;
pub mod experiment;
pub mod follow;
pub mod post;
pub mod runtime;
pub mod stream;

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
    (stream::NAME, stream::DOMAINS),
    (conversation::NAME, conversation::DOMAINS),
];

/// The command services and fact sources the policies act and look through.
pub struct Services<'a> {
    pub follows: &'a FollowCommands,
    pub posts: &'a PostCommands,
    pub experiments: &'a ExperimentCommands,
    pub streams: &'a StreamCommands,
    pub conversations: &'a ConversationCommands,
    /// The conversation domain's key server and to-device queue.
    pub keys: &'a KeyServer,
    pub user_facts: Arc<dyn UserFactSource>,
    pub follow_facts: Arc<dyn FollowFactSource>,
    pub post_facts: Arc<dyn PostFactSource>,
    pub experiment_facts: Arc<dyn ExperimentFactSource>,
    pub stream_facts: Arc<dyn StreamFactSource>,
    pub conversation_facts: Arc<dyn ConversationFactSource>,
}

impl<'a> Services<'a> {
    /// The services, with one source answering every fact question (the read models).
    pub fn over<F>(
        follows: &'a FollowCommands,
        posts: &'a PostCommands,
        experiments: &'a ExperimentCommands,
        streams: &'a StreamCommands,
        conversations: &'a ConversationCommands,
        keys: &'a KeyServer,
        facts: Arc<F>,
    ) -> Self
    where
        F: UserFactSource
            + FollowFactSource
            + PostFactSource
            + ExperimentFactSource
            + StreamFactSource
            + ConversationFactSource,
    {
        Services {
            follows,
            posts,
            experiments,
            streams,
            conversations,
            keys,
            user_facts: facts.clone(),
            follow_facts: facts.clone(),
            post_facts: facts.clone(),
            experiment_facts: facts.clone(),
            stream_facts: facts.clone(),
            conversation_facts: facts,
        }
    }
}

/// Every policy Nova runs: each reacts to another domain's events with commands to its own.
pub fn all(s: Services<'_>, catch_up: &CatchUp) -> Vec<Arc<dyn Policy>> {
    let Services {
        follows,
        posts,
        experiments,
        streams,
        conversations,
        keys,
        user_facts,
        follow_facts,
        post_facts,
        experiment_facts,
        stream_facts,
        conversation_facts,
    } = s;
    vec![
        Arc::new(follow::FollowOnUserDeactivated::new(
            follows.clone(),
            follow_facts,
            catch_up.clone(),
        )),
        Arc::new(follow::FollowOfInactiveUser::new(
            follows.clone(),
            user_facts,
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
        Arc::new(stream::StreamOnUserDeactivated::new(
            streams.clone(),
            stream_facts,
            catch_up.clone(),
        )),
        Arc::new(conversation::ConversationOnUserDeactivated::new(
            conversations.clone(),
            keys.clone(),
            conversation_facts,
            catch_up.clone(),
        )),
    ]
}
