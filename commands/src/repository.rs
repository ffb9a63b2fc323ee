//! How command code reaches the event store: only through a [`Repository`] (or
//! [`CommandStore::append`]), and only for the events of its own domain.
//!
//! Ownership is a matter of types, not of discipline. Each domain module of this crate defines
//! a zero-sized *writer* whose constructor is private to that module (`user::UserWriter`,
//! `follow::FollowWriter`, `post::PostWriter`), and binds its event enum to it by implementing
//! [`Owned`]. A repository of an aggregate, and an append of a batch of events, require the
//! writer of the events' owner; since Rust's privacy makes a private field visible only in its
//! module and the modules inside it, no other module — in this crate or outside it — can create
//! that writer. The command services hold a [`CommandStore`], which has no way to reach the raw
//! `EventStore` (its field is private to this module), so there is no second path to the
//! store's `append`. Coherence allows one `Owned` impl per event type, and
//! `nova_event_schemas::DomainEvent` is sealed, so no module can declare another event type for
//! a domain it does not own. ADR 0008.
//!
//! The `compile_fail` examples below are the proof (`cargo test -p nova-commands --doc`); each
//! names the error it fails with (checked by nightly rustdoc only, so each was also checked by
//! hand to fail for that reason and no other). Given a follow writer, a follow repository can be
//! built:
//!
//! ```
//! use nova_aggregates::follow::Relationship;
//! use nova_commands::{follow::FollowWriter, CommandStore, Repository};
//!
//! fn repository(store: &CommandStore, writer: FollowWriter) -> Repository<Relationship> {
//!     Repository::new(store, writer)
//! }
//! ```
//!
//! but not a user repository — the same code with the user domain's aggregate:
//!
//! ```compile_fail,E0271
//! use nova_aggregates::user::User;
//! use nova_commands::{follow::FollowWriter, CommandStore, Repository};
//!
//! fn repository(store: &CommandStore, writer: FollowWriter) -> Repository<User> {
//!     Repository::new(store, writer)
//! }
//! ```
//!
//! The same holds for a direct append: follow events with the follow writer compile,
//!
//! ```
//! use nova_commands::{follow::FollowWriter, CommandContext, CommandStore};
//! use nova_event_schemas::follow::FollowEvent;
//!
//! async fn append(store: &CommandStore, writer: &FollowWriter, events: Vec<FollowEvent>) {
//!     let ctx = CommandContext::new(None, None);
//!     let id = uuid::Uuid::now_v7();
//!     let _ = store.append(writer, vec![(id, "relationship", 0, events)], ctx.metadata()).await;
//! }
//! ```
//!
//! user events with the follow writer do not:
//!
//! ```compile_fail,E0271
//! use nova_commands::{follow::FollowWriter, CommandContext, CommandStore};
//! use nova_event_schemas::user::UserEvent;
//!
//! async fn append(store: &CommandStore, writer: &FollowWriter, events: Vec<UserEvent>) {
//!     let ctx = CommandContext::new(None, None);
//!     let id = uuid::Uuid::now_v7();
//!     let _ = store.append(writer, vec![(id, "user", 0, events)], ctx.metadata()).await;
//! }
//! ```
//!
//! A writer cannot be made outside its module (here: outside `commands::user`; the follow
//! module is just as far outside it):
//!
//! ```compile_fail,E0603
//! let writer = nova_commands::user::UserWriter(());
//! ```
//!
//! and the raw store cannot be taken out of a [`CommandStore`]:
//!
//! ```compile_fail,E0616
//! fn raw(store: &nova_commands::CommandStore) -> &nova_infra::store::EventStore {
//!     &store.inner
//! }
//! ```

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use esrs::Aggregate;
use lru::LruCache;
use nova_aggregates::CommandName;
use nova_event_schemas::{Domain, DomainEvent, EventMetadata};
use nova_infra::store::{Appended, EventStore, StoreError};
use uuid::Uuid;

use crate::{backoff, CommandContext, CommandError, Done, MAX_ATTEMPTS};

/// An event type bound to the one domain module of this crate that may append it.
pub trait Owned: DomainEvent {
    /// The owning module's writer: a zero-sized value that only that module can create.
    type Writer;
}

/// The event store as command code sees it: heads of any domain, appends only with the
/// writer of the events' owner (see the module documentation).
#[derive(Clone)]
pub struct CommandStore {
    inner: EventStore,
}

impl CommandStore {
    /// Wraps the store for the command services (done once, where the application is
    /// assembled).
    pub fn new(store: EventStore) -> Self {
        CommandStore { inner: store }
    }

    /// Position of `domain`'s latest event (0 if it has none).
    pub async fn head(&self, domain: Domain) -> Result<i64, StoreError> {
        self.inner.head(domain).await
    }

    /// Appends events of several streams of one domain in one transaction (each stream
    /// checked against its expected version), with the proof that the caller owns them.
    pub async fn append<E: Owned>(
        &self,
        writer: &E::Writer,
        streams: Vec<(Uuid, &'static str, i64, Vec<E>)>,
        metadata: EventMetadata,
    ) -> Result<Appended, StoreError> {
        self.append_keyed(writer, streams, metadata, None).await
    }

    /// [`CommandStore::append`] recording `command_key` in the same transaction; an append
    /// whose key is already recorded writes nothing and answers the original (ADR 0012).
    pub async fn append_keyed<E: Owned>(
        &self,
        _writer: &E::Writer,
        streams: Vec<(Uuid, &'static str, i64, Vec<E>)>,
        metadata: EventMetadata,
        command_key: Option<String>,
    ) -> Result<Appended, StoreError> {
        // The one call of the raw append in this crate besides `Repository::execute`.
        #[allow(clippy::disallowed_methods)]
        self.inner
            .append_keyed(streams, metadata, command_key)
            .await
    }

    /// A page of `domain`'s stored events, raw (not upcast, personal fields sealed): for
    /// upgrade steps that rewrite what older versions stored.
    pub async fn read_raw(
        &self,
        domain: Domain,
        filter: &nova_infra::store::ReadFilter,
    ) -> Result<Vec<nova_infra::store::RecordedEvent>, StoreError> {
        self.inner.read_sealed(domain, filter).await
    }

    /// Replaces the stored payload at `position` of the writer's domain, if it is still at
    /// `from_version` (see `Backend::rewrite_payload`; ADR 0016). Like an append, only the
    /// owner of the events can do it.
    pub async fn rewrite<E: Owned>(
        &self,
        _writer: &E::Writer,
        position: i64,
        from_version: i32,
        to_version: i32,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.inner
            .rewrite_payload(E::DOMAIN, position, from_version, to_version, payload)
            .await
    }

    /// Seals the personal fields that the writer's domain stored in plaintext before ADR 0025
    /// (the version before each sealed one), rewriting each such event once to its sealed
    /// version under its owner's data key (`Backend::rewrite_payload`: only if still at the old
    /// version, so it is idempotent and safe beside a second process doing the same). What an
    /// erased owner wrote becomes `"[erased]"`. Answers the number of events rewritten.
    pub async fn seal_history<E: Owned>(
        &self,
        _writer: &E::Writer,
        keys: &dyn nova_infra::personal::DataKeys,
    ) -> Result<u64, StoreError> {
        let mut rewritten = 0;
        for personal in nova_event_schemas::personal::PERSONAL
            .iter()
            .filter(|p| p.domain == E::DOMAIN)
        {
            let mut after = 0;
            loop {
                let page = self
                    .inner
                    .read_sealed(
                        E::DOMAIN,
                        &nova_infra::store::ReadFilter {
                            after_position: after,
                            limit: 500,
                            aggregate_id: None,
                            event_type: Some(personal.event_type.to_owned()),
                        },
                    )
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.position;
                for e in &page {
                    let Some((from, to, payload)) =
                        nova_infra::personal::sealed_form(keys, e).await?
                    else {
                        continue;
                    };
                    if self
                        .inner
                        .rewrite_payload(E::DOMAIN, e.position, from, to, &payload)
                        .await?
                    {
                        rewritten += 1;
                    }
                }
            }
        }
        if rewritten > 0 {
            tracing::info!(
                domain = E::DOMAIN.as_str(),
                events = rewritten,
                "plaintext personal data sealed"
            );
        }
        Ok(rewritten)
    }

    /// The append recorded under `command_key` in `domain`, if any.
    pub async fn recorded(
        &self,
        domain: Domain,
        command_key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        self.inner.recorded(domain, command_key).await
    }
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
    store: CommandStore,
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
    A::Command: CommandName,
    A::Event: Owned,
    A::State: Clone,
{
    /// A repository of `A`, for the owner of `A`'s events only: it takes their writer.
    pub fn new(store: &CommandStore, writer: <A::Event as Owned>::Writer) -> Self {
        let _ = writer;
        let cap = NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Repository {
            store: store.clone(),
            cache: Arc::new(Mutex::new(LruCache::new(cap))),
        }
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
            .inner
            .load(<A::Event as DomainEvent>::DOMAIN, id, from)
            .await
            .map_err(CommandError::from)?;
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
                .map_err(|err| CommandError::Internal(err.to_string()))?;
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
    ///
    /// Runs in a `command` span (domain, aggregate type and id, the command's name, request and
    /// correlation ids) — never the command's fields, which may hold secrets' hashes.
    #[tracing::instrument(name = "command", skip_all, fields(
        domain = <A::Event as DomainEvent>::DOMAIN.as_str(),
        aggregate_type = A::NAME,
        aggregate_id = %id,
        command = tracing::field::Empty,
        request_id = ctx.request_id.as_deref(),
        correlation_id = %ctx.correlation_id,
    ))]
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
                    .inner
                    .recorded(<A::Event as DomainEvent>::DOMAIN, key)
                    .await
                    .map_err(CommandError::from)?
                {
                    return self.replayed(original).await;
                }
            }
            let loaded = self.load(id).await?;
            let command = make(&loaded.state).map_err(CommandError::Refused)?;
            tracing::Span::current().record("command", command.name());
            let events =
                A::handle_command(&loaded.state, command).map_err(CommandError::Refused)?;
            if events.is_empty() {
                return Ok(Executed {
                    aggregate_id: id,
                    state: loaded.state,
                    events,
                    appended: None,
                    version: loaded.version,
                });
            }
            #[allow(clippy::disallowed_methods)]
            let appended = self
                .store
                .inner
                .append_keyed(
                    vec![(id, A::NAME, loaded.version, events.clone())],
                    ctx.metadata(),
                    command_key.clone(),
                )
                .await;
            match appended {
                Ok(appended) if appended.replayed.is_some() => {
                    return self.replayed(appended).await;
                }
                Ok(appended) => {
                    tracing::debug!(
                        position = appended.last_position,
                        events = events.len(),
                        "command appended"
                    );
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
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The result of a command whose key was already recorded: the original append, its
    /// events and the aggregate's current state.
    async fn replayed(&self, original: Appended) -> Result<Executed<A>, CommandError<A::Error>> {
        let Some(&(id, first, last)) = original.replayed.as_ref().and_then(|s| s.first()) else {
            return Err(CommandError::Internal(
                "replayed append without streams".into(),
            ));
        };
        let loaded = self.load(id).await?;
        let mut events = Vec::new();
        for e in self
            .store
            .inner
            .load(<A::Event as DomainEvent>::DOMAIN, id, first - 1)
            .await
            .map_err(CommandError::from)?
            .into_iter()
            .take_while(|e| e.version <= last)
        {
            events.push(
                e.decode()
                    .map_err(|err| CommandError::Internal(err.to_string()))?,
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
