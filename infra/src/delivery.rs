//! Where projectors get events from. Two sources, one interface: [`StoreTail`] reads the
//! event store (embedded mode), [`JetStreamSource`] a durable JetStream pull consumer. Both
//! hand out a domain's events in position order, starting after the projector's checkpoint;
//! the projector code does not know which one it runs on.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use nova_event_schemas::Domain;
use tokio::sync::Mutex;

use crate::nats::{Envelope, Names};
use crate::store::{EventStore, ReadFilter, RecordedEvent, StoreError};

/// A domain's events after a position, in position order.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    async fn next_batch(
        &self,
        domain: Domain,
        after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;
    /// Resolves when there may be new events (or after a poll interval).
    async fn wait_for_more(&self, domain: Domain, seen: i64);
    /// Called after the projector committed everything up to `position`: the source may now
    /// forget (acknowledge) those events. Until then they must be delivered again.
    async fn acknowledge(&self, _domain: Domain, _position: i64) {}
}

/// Embedded source: tails the event store, woken by this process's appends and polling for
/// other processes'.
pub struct StoreTail {
    store: EventStore,
    poll: Duration,
}

impl StoreTail {
    pub fn new(store: EventStore) -> Self {
        StoreTail {
            store,
            poll: Duration::from_millis(500),
        }
    }
}

#[async_trait]
impl EventSource for StoreTail {
    async fn next_batch(
        &self,
        domain: Domain,
        after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store
            .read(
                domain,
                &ReadFilter {
                    after_position: after,
                    limit: max,
                    ..Default::default()
                },
            )
            .await
    }

    async fn wait_for_more(&self, domain: Domain, seen: i64) {
        let mut rx = self.store.subscribe(domain);
        if *rx.borrow_and_update() > seen {
            return;
        }
        let _ = tokio::time::timeout(self.poll, rx.changed()).await;
    }
}

/// Messages received but not yet acknowledged, by position.
type Pending = BTreeMap<i64, (Envelope, jetstream::Message)>;

/// A durable pull consumer per (projection, domain), explicit acks, bounded in flight.
///
/// JetStream may deliver out of order (a redelivery overtakes later messages; a retried
/// publish lands after its successors) and more than once. This source therefore never trusts
/// arrival order: each message names the position before it (`prev_position`), and only an
/// unbroken chain starting at the projector's checkpoint is handed out. A break is filled from
/// the event store — the source of truth — never by waiting for a timeout and never by
/// skipping. Positions at or below the checkpoint are acknowledged and dropped (duplicates).
/// When JetStream is unreachable the store serves the batch, so projections keep up during an
/// outage.
pub struct JetStreamSource {
    js: jetstream::Context,
    names: Names,
    ack_wait: Duration,
    /// The store, which fills gaps and serves when JetStream cannot.
    tail: StoreTail,
    store: EventStore,
    durable_prefix: String,
    consumers: Mutex<HashMap<Domain, consumer::PullConsumer>>,
    streams: Mutex<HashMap<Domain, consumer::pull::Stream>>,
    pending: Mutex<HashMap<Domain, Pending>>,
    fetch_wait: Duration,
}

/// Acknowledges without ever blocking the projector: while NATS is unreachable the client's
/// queue can be full; an ack that cannot be sent is simply redelivered later and dropped as a
/// duplicate.
async fn ack(msg: &jetstream::Message) {
    match tokio::time::timeout(Duration::from_millis(250), msg.ack()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "ack failed"),
        Err(_) => tracing::debug!("ack timed out"),
    }
}

/// Unacknowledged messages per consumer; JetStream stops delivering beyond this.
pub const MAX_ACK_PENDING: i64 = 2048;
/// A message not acknowledged within this time is redelivered.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

impl JetStreamSource {
    /// `projection` names the durable consumers (`<projection>_<domain>`).
    pub fn new(js: jetstream::Context, names: Names, store: EventStore, projection: &str) -> Self {
        Self::with_ack_wait(js, names, store, projection, ACK_WAIT)
    }

    /// As `new`, with a custom redelivery delay (tests use a short one).
    pub fn with_ack_wait(
        js: jetstream::Context,
        names: Names,
        store: EventStore,
        projection: &str,
        ack_wait: Duration,
    ) -> Self {
        JetStreamSource {
            js,
            names,
            ack_wait,
            tail: StoreTail::new(store.clone()),
            store,
            durable_prefix: projection.to_owned(),
            consumers: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            fetch_wait: Duration::from_millis(500),
        }
    }

    pub fn durable_name(&self, domain: Domain) -> String {
        format!("{}_{}", self.durable_prefix, domain.as_str())
    }

    async fn consumer(&self, domain: Domain) -> Result<consumer::PullConsumer, String> {
        let mut consumers = self.consumers.lock().await;
        if let Some(c) = consumers.get(&domain) {
            return Ok(c.clone());
        }
        let stream = self
            .js
            .get_stream(self.names.stream(domain))
            .await
            .map_err(|e| e.to_string())?;
        let name = self.durable_name(domain);
        // Always "deliver all": the projector's own checkpoint decides what is new, so a
        // changed start position never matters.
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let mut c = stream
            .get_or_create_consumer(&name, config.clone())
            .await
            .map_err(|e| e.to_string())?;
        // `get_or_create` hands back an existing consumer as it is: settings changed since it
        // was made (redelivery delay, messages in flight) are applied here, by a create with
        // the same durable name, which the server treats as an update of the editable fields.
        let have = &c.cached_info().config;
        if have.ack_wait != config.ack_wait || have.max_ack_pending != config.max_ack_pending {
            tracing::info!(consumer = %name, ack_wait = ?config.ack_wait,
                max_ack_pending = config.max_ack_pending, "updating consumer settings");
            c = stream
                .create_consumer(config)
                .await
                .map_err(|e| e.to_string())?;
        }
        consumers.insert(domain, c.clone());
        Ok(c)
    }

    /// Waits (up to `fetch_wait`) for the first new message, then takes whatever else has
    /// already arrived, into `pending`; duplicates are acknowledged at once. Messages come from
    /// a long-lived pull subscription (with heartbeats), so an event is handed on as soon as
    /// it arrives, not when a batch fills or expires.
    async fn pull(&self, domain: Domain, after: i64, max: i64) -> Result<(), String> {
        let mut streams = self.streams.lock().await;
        let stream = match streams.entry(domain) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let consumer = self.consumer(domain).await?;
                let stream = consumer
                    .stream()
                    .max_messages_per_batch(max.clamp(1, MAX_ACK_PENDING) as usize)
                    .expires(Duration::from_secs(5))
                    .heartbeat(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                v.insert(stream)
            }
        };
        let mut received = Vec::new();
        // Set when the subscription failed: it is dropped and re-made next time.
        let mut broken: Option<String> = None;
        match tokio::time::timeout(self.fetch_wait, stream.next()).await {
            Err(_) => return Ok(()),
            Ok(Some(Ok(m))) => received.push(m),
            Ok(Some(Err(e))) => broken = Some(e.to_string()),
            Ok(None) => broken = Some("message stream ended".into()),
        }
        while broken.is_none() && (received.len() as i64) < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => received.push(m),
                Some(Some(Err(e))) => broken = Some(e.to_string()),
                Some(None) => broken = Some("message stream ended".into()),
                None => break,
            }
        }
        if let Some(e) = broken {
            streams.remove(&domain);
            if received.is_empty() {
                return Err(e);
            }
            tracing::debug!(%domain, error = %e, "message stream failed; reopening");
        }
        drop(streams);
        let mut pending = self.pending.lock().await;
        let pending = pending.entry(domain).or_default();
        for msg in received {
            let envelope = match Envelope::decode(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    // Not ours to interpret; terminate so it is never redelivered.
                    tracing::error!(%domain, error = %e, "undecodable message; terminating it");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let position = envelope.event.position;
            if position <= after {
                ack(&msg).await;
                continue;
            }
            // A redelivered copy replaces the older one (whose ack would be stale anyway).
            pending.insert(position, (envelope, msg));
        }
        Ok(())
    }
}

#[async_trait]
impl EventSource for JetStreamSource {
    async fn next_batch(
        &self,
        domain: Domain,
        after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // The batch's expiry is enforced by the server; while the server is unreachable only a
        // client-side bound keeps the projector from waiting forever.
        let pulled = tokio::time::timeout(
            self.fetch_wait + Duration::from_secs(2),
            self.pull(domain, after, max),
        )
        .await
        .unwrap_or_else(|_| Err("pull timed out".to_owned()));
        if let Err(e) = pulled {
            // Forget the consumer and its subscription: both are re-made once JetStream
            // answers again.
            self.streams.lock().await.remove(&domain);
            self.consumers.lock().await.remove(&domain);
            tracing::warn!(%domain, error = %e, "JetStream unavailable; reading the store");
            return self.tail.next_batch(domain, after, max).await;
        }
        // Entries at or below the checkpoint (it may have jumped: a rebuild swap, another
        // projector process) are done: acknowledge and forget them.
        let stale = {
            let mut pending = self.pending.lock().await;
            let entry = pending.entry(domain).or_default();
            let rest = entry.split_off(&(after + 1));
            std::mem::replace(entry, rest)
        };
        for (_, (_, m)) in stale {
            ack(&m).await;
        }
        let pending = self.pending.lock().await;
        let Some(pending) = pending.get(&domain).filter(|p| !p.is_empty()) else {
            drop(pending);
            // Nothing from JetStream although the store has more: the relay is behind, the
            // messages are held by a dead consumer's unacknowledged deliveries, or the stream
            // lost them. The store serves; JetStream's copies are dropped as duplicates later.
            if self.store.head(domain).await? > after {
                return self.tail.next_batch(domain, after, max).await;
            }
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // Indexes in `out` of events as JetStream carries them (personal fields sealed);
        // those from the store are opened already.
        let mut from_stream = Vec::new();
        let mut cursor = after;
        for (&position, (envelope, _)) in pending.range(after + 1..) {
            if out.len() as i64 >= max {
                break;
            }
            if envelope.prev_position > cursor {
                // Something between `cursor` and `position` has not arrived (yet): take it
                // from the store instead of waiting.
                let missing = self
                    .tail
                    .next_batch(domain, cursor, max - out.len() as i64)
                    .await?;
                for e in missing.into_iter().take_while(|e| e.position < position) {
                    cursor = e.position;
                    out.push(e);
                }
                if envelope.prev_position > cursor {
                    break;
                }
            }
            cursor = position;
            from_stream.push(out.len());
            out.push(envelope.event.clone());
        }
        let mut sealed: Vec<RecordedEvent> = from_stream.iter().map(|&i| out[i].clone()).collect();
        self.store.open(&mut sealed).await?;
        for (i, event) in from_stream.into_iter().zip(sealed) {
            out[i] = event;
        }
        Ok(out)
    }

    async fn wait_for_more(&self, _domain: Domain, _seen: i64) {
        // `next_batch` already waited up to `fetch_wait` for the next message.
    }

    async fn acknowledge(&self, domain: Domain, position: i64) {
        let acked: Vec<jetstream::Message> = {
            let mut pending = self.pending.lock().await;
            let Some(pending) = pending.get_mut(&domain) else {
                return;
            };
            let rest = pending.split_off(&(position + 1));
            let done = std::mem::replace(pending, rest);
            done.into_values().map(|(_, m)| m).collect()
        };
        for m in acked {
            ack(&m).await;
        }
    }
}
