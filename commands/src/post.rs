//! Command handlers of the `post` domain, and its policy on `user.deactivated`.

use nova_infra::store::EventStore;
use sqlx::AnyPool;

#[derive(Clone)]
pub struct PostCommands {
    #[allow(dead_code)]
    store: EventStore,
    /// Read models (the user directory) for facts about other domains.
    #[allow(dead_code)]
    read: AnyPool,
}

impl PostCommands {
    pub fn new(store: EventStore, read: AnyPool) -> Self {
        PostCommands { store, read }
    }
}
