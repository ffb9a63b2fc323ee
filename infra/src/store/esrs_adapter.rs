//! Our store behind esrs's own `EventStore` trait, so esrs's `AggregateManager` (or any code
//! written against esrs) runs on Nova's tables: optimistic appends with a typed conflict,
//! domain positions and metadata included.
//!
//! Where the trait asks for what Nova's rules forbid, the adapter says no instead of
//! pretending: `delete` is refused (history is immutable, DESIGN rule 6), and `publish` does
//! nothing because delivery happens from the store (projectors tail it; the relay reads it),
//! never as a fire-and-forget after commit. `lock` serialises access to one aggregate within
//! this process; across processes the version check on append still decides.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use esrs::store::{EventStoreLockGuard, StoreEvent, UnlockOnDrop};
use esrs::{Aggregate, AggregateState};
use nova_event_schemas::{DomainEvent, EventMetadata};
use uuid::Uuid;

use super::{EventStore, StoreError};

type Locks = Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>;

/// An esrs `EventStore` for aggregate `A`, writing to `A::Event`'s domain table.
pub struct EsrsStore<A> {
    store: EventStore,
    metadata: EventMetadata,
    locks: Arc<Locks>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> EsrsStore<A> {
    /// `metadata` is recorded with every event this adapter persists.
    pub fn new(store: EventStore, metadata: EventMetadata) -> Self {
        EsrsStore {
            store,
            metadata,
            locks: Arc::default(),
            _aggregate: PhantomData,
        }
    }
}

struct Guard(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);
impl UnlockOnDrop for Guard {}

fn to_store_event<E: DomainEvent>(e: &super::RecordedEvent) -> Result<StoreEvent<E>, StoreError> {
    Ok(StoreEvent {
        id: e.event_id,
        aggregate_id: e.aggregate_id,
        payload: e
            .decode()
            .map_err(|err| StoreError::Invalid(err.to_string()))?,
        occurred_on: e.recorded_at,
        sequence_number: sequence(e.version)?,
        version: Some(e.schema_version),
    })
}

fn sequence(version: i64) -> Result<i32, StoreError> {
    i32::try_from(version).map_err(|_| {
        StoreError::Invalid(format!(
            "version {version} exceeds esrs's i32 sequence numbers"
        ))
    })
}

#[async_trait]
impl<A> esrs::store::EventStore for EsrsStore<A>
where
    A: Aggregate + Send + Sync + 'static,
    A::Event: DomainEvent,
    A::State: Send + Sync,
{
    type Aggregate = A;
    type Error = StoreError;

    async fn lock(&self, aggregate_id: Uuid) -> Result<EventStoreLockGuard, StoreError> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(aggregate_id).or_default().clone()
        };
        Ok(EventStoreLockGuard::new(Guard(lock.lock_owned().await)))
    }

    async fn by_aggregate_id(
        &self,
        aggregate_id: Uuid,
    ) -> Result<Vec<StoreEvent<A::Event>>, StoreError> {
        self.store
            .load(A::Event::DOMAIN, aggregate_id, 0)
            .await?
            .iter()
            .map(to_store_event)
            .collect()
    }

    async fn persist(
        &self,
        aggregate_state: &mut AggregateState<A::State>,
        events: Vec<A::Event>,
    ) -> Result<Vec<StoreEvent<A::Event>>, StoreError> {
        let id = *aggregate_state.id();
        let expected = i64::from(*aggregate_state.sequence_number());
        let n = events.len() as i64;
        self.store
            .append(vec![(id, A::NAME, expected, events)], self.metadata.clone())
            .await?;
        let written = self.store.load(A::Event::DOMAIN, id, expected).await?;
        written
            .iter()
            .take(n as usize)
            .map(to_store_event)
            .collect()
    }

    async fn publish(&self, _store_events: &[StoreEvent<A::Event>]) {}

    async fn delete(&self, aggregate_id: Uuid) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "refusing to delete aggregate {aggregate_id}: stored history is immutable"
        )))
    }
}
