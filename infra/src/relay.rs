//! The relay: moves a domain's committed events from the store to its JetStream stream.
//!
//! - It reads after its durable checkpoint (`relay_checkpoints`), in position order.
//! - Publishes are pipelined: a batch is written to the connection in order (so JetStream
//!   stores it in order) and all acks are awaited concurrently — every ack is awaited; an
//!   un-awaited ack would hide a failed publish.
//! - The checkpoint advances only over the unbroken prefix of acknowledged publishes, so a
//!   crash or an outage re-sends from the first unconfirmed event. A re-send within the
//!   duplicate window is dropped by JetStream (`Nats-Msg-Id` = event id); after it, consumers
//!   drop it (position at or below their checkpoint) — the relay does not rely on the window.
//! - One relay per domain is active at a time. On PostgreSQL ([`Relay::with_session_lock`]) the
//!   leader holds a session-level advisory lock on a connection of its own: when its process
//!   dies the connection drops and PostgreSQL releases the lock at once, so a standby (trying
//!   every [`STANDBY_POLL`]) takes over in well under a second; the leader checks its
//!   connection before publishing whenever [`LOCK_CHECK`] has passed, and stops when it is gone.
//!   Elsewhere (SQLite) a lease row in `relay_checkpoints` renewed at half-life. Either way a
//!   leader that lost its place and publishes once more at worst sends duplicates, which
//!   consumers handle anyway; and `save` names the owner, so it cannot move the checkpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::IntoFuture;

use async_nats::jetstream::{self, message::PublishMessage};
use nova_event_schemas::Domain;
use sqlx::AnyPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::nats::{Envelope, Names};
use crate::store::{EventStore, ReadFilter, RecordedEvent, StoreError};

/// Events published per round (all in flight at once).
pub const BATCH: i64 = 1024;
const LEASE_MS: i64 = 10_000;
/// How often a standby asks for the session lock of a domain (PostgreSQL).
pub const STANDBY_POLL: Duration = Duration::from_millis(200);
/// How long a leader publishes on its session lock without checking that its connection (and
/// so the lock) is still there.
pub const LOCK_CHECK: Duration = Duration::from_millis(250);
/// A lock check that takes longer than this counts as a lost connection.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longest time a busy relay goes without writing its durable checkpoint.
const SAVE_EVERY_MS: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("relay bookkeeping: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publish failed after position {confirmed}: {message}")]
    Publish { confirmed: i64, message: String },
}

/// Counters for metrics and status.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub published: AtomicU64,
    pub checkpoint: AtomicI64,
    pub failures: AtomicU64,
}

pub struct Relay {
    store: EventStore,
    js: jetstream::Context,
    pool: AnyPool,
    domain: Domain,
    names: Names,
    owner: String,
    /// How this relay knows it leads its domain.
    leadership: Leadership,
    /// Until when (ms) this relay's lease is known to hold; renewed at half-life.
    lease_until: AtomicI64,
    last_save: AtomicI64,
    /// (after position, events) read ahead during the previous round.
    prefetched: std::sync::Mutex<Option<(i64, Vec<RecordedEvent>)>>,
    pub stats: Arc<RelayStats>,
}

/// How a relay becomes and stays its domain's only publisher.
enum Leadership {
    /// A lease row in `relay_checkpoints`, renewed at half-life (any engine).
    Lease,
    /// A session-level advisory lock on a connection of its own (PostgreSQL).
    SessionLock {
        pool: sqlx::PgPool,
        session: tokio::sync::Mutex<Option<Session>>,
    },
}

/// The dedicated connection of a relay on the session lock, and whether it holds the lock.
struct Session {
    conn: sqlx::PgConnection,
    held: bool,
    checked: std::time::Instant,
}

/// The advisory lock key of a domain's relay: a prefix ("nvrl") and the domain's index (the
/// append locks use another prefix).
pub fn relay_lock_key(domain: Domain) -> i64 {
    let idx = Domain::ALL.iter().position(|d| *d == domain).unwrap_or(0) as i64;
    0x6e76_726c_0000_0000 + idx
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Published(usize),
    Idle,
    /// Another process holds the lease.
    NotLeader,
}

impl Relay {
    pub fn new(
        store: EventStore,
        js: jetstream::Context,
        names: Names,
        pool: AnyPool,
        domain: Domain,
    ) -> Self {
        Relay {
            store,
            js,
            pool,
            domain,
            names,
            owner: Uuid::new_v4().to_string(),
            leadership: Leadership::Lease,
            lease_until: AtomicI64::new(0),
            prefetched: std::sync::Mutex::new(None),
            last_save: AtomicI64::new(0),
            stats: Arc::default(),
        }
    }

    /// Leads by a session-level advisory lock on a connection of its own, made with `pool`'s
    /// settings (outside the pool, so the pool never hands it to anyone else): the lock goes the
    /// moment this process's connection does.
    pub fn with_session_lock(mut self, pool: sqlx::PgPool) -> Self {
        self.leadership = Leadership::SessionLock {
            pool,
            session: tokio::sync::Mutex::new(None),
        };
        self
    }

    /// Whether this relay holds its domain's session lock now (asking for it if it does not,
    /// checking the connection if the last check is older than [`LOCK_CHECK`]). On taking it,
    /// the relay becomes the owner of the checkpoint row, so a former leader's `save` fails.
    async fn session_checkpoint(
        &self,
        pool: &sqlx::PgPool,
        session: &tokio::sync::Mutex<Option<Session>>,
    ) -> Result<Option<i64>, sqlx::Error> {
        use sqlx::Connection;
        let mut guard = session.lock().await;
        if guard.is_none() {
            let conn = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
            *guard = Some(Session {
                conn,
                held: false,
                checked: std::time::Instant::now(),
            });
        }
        let Some(s) = guard.as_mut() else {
            return Ok(None);
        };
        if s.held {
            if s.checked.elapsed() < LOCK_CHECK {
                return Ok(Some(self.stats.checkpoint.load(Ordering::Relaxed)));
            }
            let alive = tokio::time::timeout(LOCK_CHECK_TIMEOUT, s.conn.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                s.checked = std::time::Instant::now();
                return Ok(Some(self.stats.checkpoint.load(Ordering::Relaxed)));
            }
            // The connection (and with it the lock) is gone: step down, start over.
            tracing::warn!(domain = %self.domain, "relay lost its session lock; standing by");
            *guard = None;
            return Ok(None);
        }
        let got: Result<bool, sqlx::Error> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(relay_lock_key(self.domain))
            .fetch_one(&mut s.conn)
            .await;
        match got {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                *guard = None;
                return Err(e);
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        sqlx::query(
            "INSERT INTO relay_checkpoints (domain, position, updated_at, owner, lease_until) \
             VALUES ($1, 0, $2, NULL, 0) ON CONFLICT (domain) DO NOTHING",
        )
        .bind(self.domain.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        let (position,): (i64,) = sqlx::query_as(
            "UPDATE relay_checkpoints SET owner = $2, lease_until = 0 WHERE domain = $1 \
             RETURNING position",
        )
        .bind(self.domain.as_str())
        .bind(&self.owner)
        .fetch_one(&self.pool)
        .await?;
        s.held = true;
        s.checked = std::time::Instant::now();
        self.stats.checkpoint.store(position, Ordering::Relaxed);
        tracing::info!(domain = %self.domain, position, "relay took its domain's session lock");
        Ok(Some(position))
    }

    /// The last position JetStream acknowledged.
    pub async fn checkpoint(pool: &AnyPool, domain: Domain) -> Result<i64, sqlx::Error> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT position FROM relay_checkpoints WHERE domain = $1")
                .bind(domain.as_str())
                .fetch_optional(pool)
                .await?;
        Ok(row.map_or(0, |r| r.0))
    }

    /// Takes or renews the lease; returns this relay's checkpoint if it is the leader.
    async fn lease(&self) -> Result<Option<i64>, sqlx::Error> {
        let now = chrono::Utc::now().timestamp_millis();
        sqlx::query(
            "INSERT INTO relay_checkpoints (domain, position, updated_at, owner, lease_until) \
             VALUES ($1, 0, $2, NULL, 0) ON CONFLICT (domain) DO NOTHING",
        )
        .bind(self.domain.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE relay_checkpoints SET owner = $2, lease_until = $3 \
             WHERE domain = $1 AND (owner = $2 OR owner IS NULL OR lease_until < $4) \
             RETURNING position",
        )
        .bind(self.domain.as_str())
        .bind(&self.owner)
        .bind(now + LEASE_MS)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    async fn save(&self, position: i64) -> Result<(), sqlx::Error> {
        let saved = sqlx::query(
            "UPDATE relay_checkpoints SET position = $2, updated_at = $3 \
             WHERE domain = $1 AND owner = $4",
        )
        .bind(self.domain.as_str())
        .bind(position)
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(&self.owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if saved == 0 {
            // Someone else holds the lease now; ask again next round.
            self.lease_until.store(0, Ordering::Relaxed);
            if let Leadership::SessionLock { session, .. } = &self.leadership {
                // Another relay took the row: whatever this connection believes, step down.
                *session.lock().await = None;
            }
        }
        self.stats.checkpoint.store(position, Ordering::Relaxed);
        Ok(())
    }

    async fn read_after(&self, position: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        // As stored: personal fields travel sealed (ADR 0025).
        self.store
            .read_sealed(
                self.domain,
                &ReadFilter {
                    after_position: position,
                    limit: BATCH,
                    ..Default::default()
                },
            )
            .await
    }

    /// This relay's checkpoint if it leads: from memory while the lease is fresh, else by
    /// taking or renewing the lease in the database.
    async fn leading_checkpoint(&self) -> Result<Option<i64>, sqlx::Error> {
        if let Leadership::SessionLock { pool, session } = &self.leadership {
            return self.session_checkpoint(pool, session).await;
        }
        let now = chrono::Utc::now().timestamp_millis();
        if self.lease_until.load(Ordering::Relaxed) - LEASE_MS / 2 > now {
            return Ok(Some(self.stats.checkpoint.load(Ordering::Relaxed)));
        }
        let was_leading = self.lease_until.load(Ordering::Relaxed) > now;
        let checkpoint = self.lease().await?.map(|stored| {
            // While this relay held the lease continuously, its own (possibly not yet
            // written) checkpoint is the newer one.
            if was_leading {
                stored.max(self.stats.checkpoint.load(Ordering::Relaxed))
            } else {
                stored
            }
        });
        match checkpoint {
            Some(cp) => {
                self.lease_until.store(now + LEASE_MS, Ordering::Relaxed);
                self.stats.checkpoint.store(cp, Ordering::Relaxed);
            }
            None => self.lease_until.store(0, Ordering::Relaxed),
        }
        Ok(checkpoint)
    }

    /// Publishes the next batch after the checkpoint.
    pub async fn relay_once(&self) -> Result<Round, RelayError> {
        let Some(checkpoint) = self.leading_checkpoint().await? else {
            return Ok(Round::NotLeader);
        };
        // While disconnected, publishes would only pile up in the client's buffer (and be
        // flushed as stale duplicates on reconnect): wait instead.
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(RelayError::Publish {
                confirmed: checkpoint,
                message: "not connected to NATS".into(),
            });
        }
        // The batch read while the previous round's acks were outstanding, if it starts here.
        let prefetched = self
            .prefetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|(after, _)| *after == checkpoint)
            .map(|(_, events)| events);
        let events = match prefetched {
            Some(events) => events,
            None => self.read_after(checkpoint).await?,
        };
        if events.is_empty() {
            metrics::gauge!("nova_relay_backlog_events", "domain" => self.domain.as_str()).set(0.0);
            return Ok(Round::Idle);
        }
        // Send in order; collect the ack futures.
        let mut acks = Vec::with_capacity(events.len());
        let mut prev = checkpoint;
        let mut send_error = None;
        for event in events {
            let position = event.position;
            let envelope = Envelope {
                prev_position: prev,
                event,
            };
            prev = position;
            let publish = PublishMessage::build()
                .payload(envelope.encode())
                .headers(envelope.headers());
            match self
                .js
                .send_publish(
                    self.names.subject(self.domain, &envelope.event.event_type),
                    publish,
                )
                .await
            {
                Ok(ack) => acks.push((position, ack)),
                Err(e) => {
                    send_error = Some(e.to_string());
                    break;
                }
            }
        }
        // Await every ack, concurrently — and meanwhile read the next batch, which is used if
        // this one is confirmed whole.
        let positions: Vec<i64> = acks.iter().map(|(p, _)| *p).collect();
        let (results, next) = tokio::join!(
            futures::future::join_all(acks.into_iter().map(|(_, ack)| ack.into_future())),
            self.read_after(prev)
        );
        if let Ok(next) = next {
            if !next.is_empty() {
                *self.prefetched.lock().unwrap_or_else(|p| p.into_inner()) = Some((prev, next));
            }
        }
        let mut confirmed = checkpoint;
        let mut count = 0usize;
        let mut ack_error = None;
        for (position, result) in positions.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    confirmed = position;
                    count += 1;
                }
                Err(e) => {
                    ack_error = Some(e.to_string());
                    break;
                }
            }
        }
        if count > 0 {
            // Under a full backlog the durable checkpoint is written at most every
            // SAVE_EVERY_MS (a crash re-sends at most that much, dropped as duplicates);
            // a partial round — the relay caught up — always writes it.
            let now = chrono::Utc::now().timestamp_millis();
            let due = now - self.last_save.load(Ordering::Relaxed) >= SAVE_EVERY_MS;
            if due || (count as i64) < BATCH || ack_error.is_some() || send_error.is_some() {
                self.save(confirmed).await?;
                self.last_save.store(now, Ordering::Relaxed);
                if let Ok(head) = self.store.head(self.domain).await {
                    metrics::gauge!("nova_relay_backlog_events", "domain" => self.domain.as_str())
                        .set((head - confirmed).max(0) as f64);
                }
            } else {
                self.stats.checkpoint.store(confirmed, Ordering::Relaxed);
            }
            self.stats
                .published
                .fetch_add(count as u64, Ordering::Relaxed);
            metrics::counter!("nova_relay_published_events_total", "domain" => self.domain.as_str())
                .increment(count as u64);
        }
        match ack_error.or(send_error) {
            Some(message) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("nova_relay_publish_failures_total", "domain" => self.domain.as_str())
                    .increment(1);
                Err(RelayError::Publish { confirmed, message })
            }
            None => Ok(Round::Published(count)),
        }
    }

    /// Runs until `stop` flips, backing off while NATS or the database is unavailable.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wake = self.store.subscribe(self.domain);
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            let pause = match self.relay_once().await {
                Ok(Round::Published(_)) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Round::Idle) => None,
                Ok(Round::NotLeader) => {
                    // Another process publishes; this one's view of the backlog is stale.
                    metrics::gauge!("nova_relay_backlog_events", "domain" => self.domain.as_str())
                        .set(0.0);
                    Some(match self.leadership {
                        Leadership::Lease => Duration::from_millis(LEASE_MS as u64 / 2),
                        Leadership::SessionLock { .. } => STANDBY_POLL,
                    })
                }
                Err(e) => {
                    tracing::warn!(domain = %self.domain, error = %e, "relay round failed");
                    if matches!(e, RelayError::Publish { .. }) {
                        // NATS may have come back without its streams (new storage, a deleted
                        // stream): recreate them; idempotent when they exist.
                        let _ = crate::nats::ensure_streams(&self.js, &self.names).await;
                    }
                    let b = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    Some(b)
                }
            };
            match pause {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = stop.changed() => {}
                    }
                }
                None => {
                    // New appends in this process wake us; other processes' by polling.
                    tokio::select! {
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}
