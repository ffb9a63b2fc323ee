//! Command handlers of the `follow` domain, and its policy on `user.deactivated`.

use nova_infra::store::EventStore;
use sqlx::AnyPool;

#[derive(Clone)]
pub struct FollowCommands {
    #[allow(dead_code)]
    store: EventStore,
    /// Read models (the user directory) for facts about other domains.
    #[allow(dead_code)]
    read: AnyPool,
}

impl FollowCommands {
    pub fn new(store: EventStore, read: AnyPool) -> Self {
        FollowCommands { store, read }
    }
}
