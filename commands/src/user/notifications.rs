//! The user's notification settings: per-kind preferences and the read marker. They are the
//! user's own data (events of the `user` domain); the notification view projects them.

use nova_infra::store::EventStore;
use sqlx::AnyPool;

#[derive(Clone)]
pub struct NotificationCommands {
    #[allow(dead_code)]
    store: EventStore,
    /// The notification view, to look up the notification a read marker points at.
    #[allow(dead_code)]
    read: AnyPool,
}

impl NotificationCommands {
    pub fn new(store: EventStore, read: AnyPool) -> Self {
        NotificationCommands { store, read }
    }
}
