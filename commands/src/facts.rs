//! The facts command handlers need from other domains, as narrow traits.
//!
//! A command handler never reads another domain's events; what it must know about another
//! domain ("is this user active?", "which user is `@name`?") comes from a read model. These
//! traits name exactly those questions, so `commands` depends on no read-model crate: the
//! implementations over the read models are handed in when the application is assembled
//! (`nova::facts::ReadModels`), and unit tests hand in fakes.
//!
//! Every answer may lag the store: a user registered a moment ago may not be in the directory
//! yet, and then a follow of them answers "not found" and a mention of their name resolves to
//! nothing. That is the documented behaviour of the commands that ask, tested with a fake that
//! simply does not know the user yet.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

/// A fact source could not answer (read model unreachable or failing). Commands report it as
/// their `Unavailable` error (503 at the HTTP edge); policies retry the event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("read model unavailable: {0}")]
pub struct FactError(pub String);

impl FactError {
    pub fn new(e: impl std::fmt::Display) -> Self {
        FactError(e.to_string())
    }
}

pub type FactResult<T> = Result<T, FactError>;

/// Facts about users (the user directory).
#[async_trait]
pub trait UserFactSource: Send + Sync + 'static {
    /// Whether `user` exists and is active. `false` for a user the source does not know yet.
    async fn is_active(&self, user: Uuid) -> FactResult<bool>;
    /// The ids of the active users among `usernames` (lower-cased), keyed by username. Unknown
    /// and deactivated names are absent.
    async fn ids_by_usernames(&self, usernames: &[String]) -> FactResult<HashMap<String, Uuid>>;
}

/// Facts about follows and blocks.
#[async_trait]
pub trait FollowFactSource: Send + Sync + 'static {
    /// Every current follow edge `(follower, followee)` that involves `user`, either way.
    async fn edges_of(&self, user: Uuid) -> FactResult<Vec<(Uuid, Uuid)>>;
    /// Whether a block is in effect between `a` and `b`, in either direction.
    async fn block_between(&self, a: Uuid, b: Uuid) -> FactResult<bool>;
}

/// Facts about posts.
#[async_trait]
pub trait PostFactSource: Send + Sync + 'static {
    /// The ids of `author`'s visible posts, newest first.
    async fn posts_of(&self, author: Uuid) -> FactResult<Vec<Uuid>>;
}

/// Facts about experiments (the experiment results view).
#[async_trait]
pub trait ExperimentFactSource: Send + Sync + 'static {
    /// The keys of the experiments `user` was exposed to.
    async fn experiments_of(&self, user: Uuid) -> FactResult<Vec<String>>;
}

/// Facts about live streams (the stream view).
#[async_trait]
pub trait StreamFactSource: Send + Sync + 'static {
    /// The streams of `broadcaster` that are not disabled yet.
    async fn streams_of(&self, broadcaster: Uuid) -> FactResult<Vec<Uuid>>;
}

/// Facts about conversations (the conversation view).
#[async_trait]
pub trait ConversationFactSource: Send + Sync + 'static {
    /// The conversations `user` is (as the view knows) a member of, requests included.
    async fn conversations_of(&self, user: Uuid) -> FactResult<Vec<Uuid>>;
}

/// Facts about notifications (the notification view).
#[async_trait]
pub trait NotificationFactSource: Send + Sync + 'static {
    /// The creation time (as the view lists it) of `user`'s notification `id`; `None` if there
    /// is no such notification or it is someone else's.
    async fn created_at_of(&self, user: Uuid, id: Uuid) -> FactResult<Option<String>>;
}

/// An in-memory fact source for unit tests: knows exactly the users put into it, so a test can
/// show what a command does while the read model has not caught up yet.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct Directory {
        /// username → (id, active)
        users: Mutex<HashMap<String, (Uuid, bool)>>,
        /// Answer every question with this error.
        pub down: Mutex<bool>,
    }

    impl Directory {
        pub fn add(&self, username: &str, id: Uuid) {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            users.insert(username.to_owned(), (id, true));
        }

        fn check(&self) -> FactResult<()> {
            if *self.down.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(FactError::new("directory down"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl UserFactSource for Directory {
        async fn is_active(&self, user: Uuid) -> FactResult<bool> {
            self.check()?;
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            Ok(users.values().any(|&(id, active)| id == user && active))
        }

        async fn ids_by_usernames(
            &self,
            usernames: &[String],
        ) -> FactResult<HashMap<String, Uuid>> {
            self.check()?;
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            Ok(usernames
                .iter()
                .filter_map(|n| match users.get(n) {
                    Some(&(id, true)) => Some((n.clone(), id)),
                    _ => None,
                })
                .collect())
        }
    }

    /// Blocks as the notification view would list them; knows only the blocks put into it.
    #[derive(Default)]
    pub struct Blocks {
        pairs: Mutex<Vec<(Uuid, Uuid)>>,
        /// Answer every question with this error.
        pub down: Mutex<bool>,
    }

    impl Blocks {
        pub fn block(&self, blocker: Uuid, blocked: Uuid) {
            let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            pairs.push((blocker, blocked));
        }
    }

    #[async_trait]
    impl FollowFactSource for Blocks {
        async fn edges_of(&self, _user: Uuid) -> FactResult<Vec<(Uuid, Uuid)>> {
            Ok(Vec::new())
        }

        async fn block_between(&self, a: Uuid, b: Uuid) -> FactResult<bool> {
            if *self.down.lock().unwrap_or_else(|p| p.into_inner()) {
                return Err(FactError::new("blocks down"));
            }
            let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            Ok(pairs.contains(&(a, b)) || pairs.contains(&(b, a)))
        }
    }

    /// A notification view that holds no notifications yet.
    pub struct NoNotifications;

    #[async_trait]
    impl NotificationFactSource for NoNotifications {
        async fn created_at_of(&self, _user: Uuid, _id: Uuid) -> FactResult<Option<String>> {
            Ok(None)
        }
    }
}
