//! Command handlers: load an aggregate, let it decide, append what it decided with the version
//! it was loaded at — retried on a version conflict (reload, re-decide) up to
//! [`MAX_ATTEMPTS`] times, then reported as [`CommandError::Conflict`].
//!
//! Everything impure that an aggregate needs (time, ids, password verification, random tokens)
//! happens here and is handed to the aggregate inside the command. Each domain has one module;
//! a module appends only its own domain's event type (the store picks the table from it).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use esrs::Aggregate;
use lru::LruCache;
use nova_event_schemas::{DomainEvent, EventMetadata};
use nova_infra::store::{Appended, EventStore, StoreError};
use uuid::Uuid;

pub mod follow;
pub mod idempotency;
pub mod post;
pub mod user;

use nova_projections::policy::Policy;

/// Every policy Nova runs: each reacts to another domain's events with commands to its own.
pub fn policies(
    follows: &follow::FollowCommands,
    posts: &post::PostCommands,
    checkpoints: &nova_projections::Checkpoints,
) -> Vec<Arc<dyn Policy>> {
    vec![
        Arc::new(follow::FollowOnUserDeactivated::new(
            follows.clone(),
            checkpoints.clone(),
        )),
        Arc::new(post::policy::PostOnUserDeactivated::new(
            posts.clone(),
            checkpoints.clone(),
        )),
    ]
}

/// First try plus retries after a version conflict (DESIGN rule 3).
pub const MAX_ATTEMPTS: usize = 4;

/// Who is acting and in which request; becomes the events' metadata.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub request_id: Option<String>,
    /// Set when the request carries an `Idempotency-Key`: each command of the request gets
    /// its own command key from it, recorded with its events ([`idempotency`]).
    pub idempotency: Option<Arc<idempotency::Scope>>,
}

impl CommandContext {
    /// A context for a request; picks up the request's idempotency scope when the command
    /// runs inside one ([`idempotency::scope`]).
    pub fn new(request_id: Option<String>, actor_id: Option<Uuid>) -> Self {
        CommandContext {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor_id,
            request_id,
            idempotency: idempotency::current(),
        }
    }

    /// The command key of the next command run under this context (`None` without an
    /// idempotency scope).
    pub fn next_command_key(&self) -> Option<String> {
        self.idempotency.as_ref().map(|s| s.next_key())
    }

    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor_id: self.actor_id,
            request_id: self.request_id.clone(),
        }
    }
}

/// Why a command did not take effect. Domain refusals and store trouble stay apart so the
/// HTTP edge can answer 422/409 for the first and 503 for the second.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    #[error("the aggregate kept changing concurrently; retry")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
    #[error("stored event could not be decoded: {0}")]
    Corrupt(String),
}

/// An aggregate as loaded: its state and the version that state reflects.
#[derive(Clone)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
    /// Domain position of the aggregate's latest event (0 if it has none).
    pub last_position: i64,
}

/// Loads and executes commands on one aggregate type, with a bounded in-memory cache of
/// states. A cached state is never trusted blindly: every load reads the events after the
/// cached version from the store (usually none — one index probe) and folds them on, so the
/// result is as current as a full replay while costing O(new events), not O(history).
pub struct Repository<A: Aggregate> {
    store: EventStore,
    /// Shared, not cloned, on a read: a caller that only looks (authentication on every
    /// request) costs a reference count, whatever the size of the state.
    cache: Arc<Mutex<StateCache<A::State>>>,
}

type StateCache<S> = LruCache<Uuid, Arc<Loaded<S>>>;

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// States kept per aggregate type.
pub const CACHE_CAPACITY: usize = 10_000;

impl<A> Repository<A>
where
    A: Aggregate,
    A::Event: DomainEvent,
    A::State: Clone,
{
    pub fn new(store: EventStore) -> Self {
        let cap = NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Repository {
            store,
            cache: Arc::new(Mutex::new(LruCache::new(cap))),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    fn cached(&self, id: Uuid) -> Option<Arc<Loaded<A::State>>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn remember(&self, id: Uuid, loaded: Arc<Loaded<A::State>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Never replace a newer state with an older one (concurrent loads).
        if cache.peek(&id).is_some_and(|c| c.version > loaded.version) {
            return;
        }
        cache.put(id, loaded);
    }

    /// The aggregate's current state: the cached one plus the events appended since.
    pub async fn load(&self, id: Uuid) -> Result<Loaded<A::State>, CommandError<A::Error>> {
        self.load_shared(id).await.map(Arc::unwrap_or_clone)
    }

    /// Like [`Repository::load`], for callers that only read the state: when nothing was
    /// appended since it was cached, the cached state itself, not a copy.
    pub async fn load_shared(
        &self,
        id: Uuid,
    ) -> Result<Arc<Loaded<A::State>>, CommandError<A::Error>> {
        let cached = self.cached(id);
        let from = cached.as_ref().map_or(0, |c| c.version);
        let events = self
            .store
            .load(<A::Event as DomainEvent>::DOMAIN, id, from)
            .await
            .map_err(CommandError::Store)?;
        if events.is_empty() {
            if let Some(c) = cached {
                return Ok(c);
            }
        }
        let mut loaded = cached.map(Arc::unwrap_or_clone).unwrap_or(Loaded {
            state: A::State::default(),
            version: 0,
            last_position: 0,
        });
        for e in events {
            let event: A::Event = e
                .decode()
                .map_err(|err| CommandError::Corrupt(err.to_string()))?;
            loaded.state = A::apply_event(loaded.state, event);
            loaded.version = e.version;
            loaded.last_position = e.position;
        }
        let loaded = Arc::new(loaded);
        if loaded.version > 0 {
            self.remember(id, loaded.clone());
        }
        Ok(loaded)
    }

    /// load → decide → append, retried on conflict (with a short jittered pause). `make`
    /// builds the command from the current state, so a retry re-decides on fresh state.
    pub async fn execute(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        make: impl Fn(&A::State) -> Result<A::Command, A::Error>,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let command_key = ctx.next_command_key();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            // A retried command (same key) answers what its first run appended, before
            // deciding anew on a state that already contains it.
            if let Some(key) = &command_key {
                if let Some(original) = self
                    .store
                    .recorded(<A::Event as DomainEvent>::DOMAIN, key)
                    .await
                    .map_err(CommandError::Store)?
                {
                    return self.replayed(original).await;
                }
            }
            let loaded = self.load(id).await?;
            let command = make(&loaded.state).map_err(CommandError::Domain)?;
            let events = A::handle_command(&loaded.state, command).map_err(CommandError::Domain)?;
            if events.is_empty() {
                return Ok(Executed {
                    aggregate_id: id,
                    state: loaded.state,
                    events,
                    appended: None,
                    version: loaded.version,
                });
            }
            match self
                .store
                .append_keyed(
                    vec![(id, A::NAME, loaded.version, events.clone())],
                    ctx.metadata(),
                    command_key.clone(),
                )
                .await
            {
                Ok(appended) if appended.replayed.is_some() => {
                    return self.replayed(appended).await;
                }
                Ok(appended) => {
                    let version = loaded.version + events.len() as i64;
                    let state = events
                        .iter()
                        .cloned()
                        .fold(loaded.state, |s, e| A::apply_event(s, e));
                    self.remember(
                        id,
                        Arc::new(Loaded {
                            state: state.clone(),
                            version,
                            last_position: appended.last_position,
                        }),
                    );
                    return Ok(Executed {
                        aggregate_id: id,
                        state,
                        events,
                        appended: Some(appended),
                        version,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    metrics::counter!("nova_command_conflict_retries_total",
                        "domain" => <A::Event as DomainEvent>::DOMAIN.as_str(), "aggregate" => A::NAME)
                    .increment(1);
                    continue;
                }
                Err(e) => return Err(CommandError::Store(e)),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The result of a command whose key was already recorded: the original append, its
    /// events and the aggregate's current state.
    async fn replayed(&self, original: Appended) -> Result<Executed<A>, CommandError<A::Error>> {
        let Some(&(id, first, last)) = original.replayed.as_ref().and_then(|s| s.first()) else {
            return Err(CommandError::Corrupt(
                "replayed append without streams".into(),
            ));
        };
        let loaded = self.load(id).await?;
        let mut events = Vec::new();
        for e in self
            .store
            .load(<A::Event as DomainEvent>::DOMAIN, id, first - 1)
            .await
            .map_err(CommandError::Store)?
            .into_iter()
            .take_while(|e| e.version <= last)
        {
            events.push(
                e.decode()
                    .map_err(|err| CommandError::Corrupt(err.to_string()))?,
            );
        }
        Ok(Executed {
            aggregate_id: id,
            state: loaded.state,
            events,
            appended: Some(original),
            version: last,
        })
    }
}

/// The result of a command that was appended (or that decided nothing needed to change).
pub struct Executed<A: Aggregate> {
    /// The aggregate the events went to: the one asked for, or for a retried command (same
    /// command key) the one its first run created.
    pub aggregate_id: Uuid,
    pub state: A::State,
    pub events: Vec<A::Event>,
    pub appended: Option<Appended>,
    /// The aggregate's version after the command.
    pub version: i64,
}

impl<A: Aggregate> Executed<A> {
    /// Position of the last appended event, for `X-Nova-Position`.
    pub fn position(&self) -> Option<i64> {
        self.appended.as_ref().map(|a| a.last_position)
    }

    pub fn done(&self) -> Done {
        Done {
            version: self.version,
            position: self.position(),
        }
    }
}

/// What a command reports back: the aggregate's new version and, if anything was appended,
/// the position of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub version: i64,
    pub position: Option<i64>,
}

/// A short random pause before retrying a conflict, so that writers that collided do not all
/// land in the next group-commit batch together again.
pub async fn backoff(attempt: usize) {
    use rand::Rng;
    let max_ms = 2u64 << attempt.min(5);
    let ms = rand::thread_rng().gen_range(0..=max_ms);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
