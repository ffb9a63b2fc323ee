//! Commands that run at most once per `Idempotency-Key`, even across crashes.
//!
//! The HTTP edge runs a keyed request inside [`scope`] with an opaque request key (a keyed
//! hash of caller, key and request; see ADR 0012). Every [`CommandContext`](crate::CommandContext)
//! created inside picks the scope up, and each command run under it takes the next command
//! key (`<request key>.<n>`, in the order the request runs its commands). The key goes to the
//! event store with the append and is recorded in the same transaction as the events; a
//! command whose key is already recorded appends nothing and answers the original append
//! ([`Repository::execute`](crate::Repository::execute)). A retry after a crash therefore
//! finds what its first run committed, whichever step the crash interrupted.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// The idempotency scope of one request.
#[derive(Debug)]
pub struct Scope {
    request_key: String,
    next: AtomicU32,
}

impl Scope {
    /// The key of the request's next command.
    pub fn next_key(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.request_key)
    }
}

/// Runs `f` (a request's handling) with `request_key` as its idempotency scope.
pub async fn scope<F: Future>(request_key: String, f: F) -> F::Output {
    SCOPE
        .scope(
            Arc::new(Scope {
                request_key,
                next: AtomicU32::new(0),
            }),
            f,
        )
        .await
}

/// The scope of the running request, if it has one.
pub fn current() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// The registration recorded under `command_key`, if any: (user id, last position).
pub(crate) async fn recorded(
    store: &crate::CommandStore,
    command_key: &Option<String>,
) -> Result<Option<(uuid::Uuid, i64)>, crate::user::UserCommandError> {
    let Some(key) = command_key else {
        return Ok(None);
    };
    let original = store
        .recorded(nova_event_schemas::Domain::User, key)
        .await
        .map_err(|e| crate::user::UserCommandError::Unavailable(e.to_string()))?;
    Ok(original.and_then(|a| Some((registered_user(&a)?, a.last_position))))
}

/// The user id of a replayed registration (its second stream: username claim, then user).
pub(crate) fn registered_user(a: &nova_infra::store::Appended) -> Option<uuid::Uuid> {
    a.replayed.as_ref()?.get(1).map(|s| s.0)
}
