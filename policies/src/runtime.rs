//! Policies: consumers that react to another domain's events by issuing commands to their **own**
//! domain's aggregates (DESIGN rule 1) — e.g. "when a user is deactivated, end their follows".
//!
//! A policy runs on the same sources as projections (store tail or JetStream) with its own
//! checkpoint, but its effects are appends through the command path, not rows in a read-model
//! transaction. Delivery is therefore at-least-once: the checkpoint moves after an event's
//! commands succeeded, and a crash in between repeats them. Policies must be idempotent — their
//! commands decide "nothing to do" on a second run.
//!
//! A failure that retrying cannot cure — an event that does not decode, or a reaction the policy
//! declares impossible ([`PolicyError::Poison`]) — is parked in `dead_letters` with the
//! checkpoint moved past it in the same transaction, so one poison event no longer stalls its
//! domain; `nova projections status` counts the parked events, `/metrics` has
//! `nova_policy_dead_letters_total`, and [`retry_dead_letters`] (`nova projections retry
//! <policy>`) handles them again. Every other failure is retried, never parked.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nova_event_schemas::Domain;
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use sqlx::AnyPool;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use nova_projections::checkpoint::Caught;
use nova_projections::{Checkpoints, EventSource, StoreTail};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("checkpoint database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event source error: {0}")]
    Source(#[from] StoreError),
    #[error("event cannot be decoded: {0}")]
    Decode(#[from] nova_event_schemas::DecodeError),
    /// The reaction could not be carried out now (store or read model unavailable, conflicts);
    /// the event is retried.
    #[error("{0}")]
    Retry(String),
    /// The event can never be handled as it is (retrying cannot help): it is parked in
    /// `dead_letters` and the policy moves on.
    #[error("the event cannot be handled: {0}")]
    Poison(String),
}

impl PolicyError {
    /// Whether retrying the event can never help: it cannot be decoded, or the policy says so.
    /// Only such events are parked; trouble that may pass (an outage) is retried, never
    /// parked, so no reaction is lost to it.
    pub fn is_poison(&self) -> bool {
        matches!(self, PolicyError::Decode(_) | PolicyError::Poison(_))
    }
}

#[async_trait]
pub trait Policy: Send + Sync + 'static {
    /// Stable name; also the checkpoint key (prefixed `policy.` by convention).
    fn name(&self) -> &str;
    /// The domains whose events this policy reacts to.
    fn domains(&self) -> &'static [Domain];
    /// The policy's own domain: the only one it may issue commands to (DESIGN rule 1).
    fn domain(&self) -> Domain;
    /// Event types this policy reacts to, as `<domain>.<event_type>`.
    fn consumes(&self) -> &'static [&'static str];
    /// Commands this policy issues, as `<domain>.<command>`; each must be of the policy's own domain.
    fn issues(&self) -> &'static [&'static str];
    /// Reacts to one event. Idempotent: handling the same event twice has the effect of once.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError>;
}

const BATCH: i64 = 100;

/// Handles the next batch of events after the policy's checkpoint. Returns whether anything was
/// handled. The checkpoint moves after each handled event, so a failure part-way through a
/// batch repeats only the failed event.
pub async fn react_once(
    policy: &dyn Policy,
    domain: Domain,
    source: &dyn EventSource,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<bool, PolicyError> {
    let name = policy.name();
    let checkpoint = checkpoints.load(pool, name, domain).await?;
    let events = source.next_batch(domain, checkpoint, BATCH).await?;
    let (Some(from), Some(to)) = (events.first(), events.last()) else {
        return Ok(false);
    };
    // The commands a policy issues run in their own `command` spans, below this one; they
    // carry the request and correlation ids of the event that caused them.
    let span = tracing::info_span!(
        "react",
        policy = name,
        %domain,
        from = from.position,
        to = to.position,
        events = events.len(),
    );
    handle_batch(
        policy,
        domain,
        source,
        pool,
        checkpoints,
        checkpoint,
        &events,
    )
    .instrument(span)
    .await?;
    Ok(true)
}

/// [`react_once`]'s loop over a batch, in its `react` span; each handled event gets a `debug!`
/// line with its position, type and the request and correlation ids of its metadata.
async fn handle_batch(
    policy: &dyn Policy,
    domain: Domain,
    source: &dyn EventSource,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    checkpoint: i64,
    events: &[RecordedEvent],
) -> Result<(), PolicyError> {
    let name = policy.name();
    let mut position = checkpoint;
    for event in events {
        if event.position <= position {
            continue;
        }
        let outcome = policy.handle(event).await;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_poison() => {
                // Parked with the checkpoint past it, in one transaction: what follows flows on.
                park(pool, checkpoints, name, event, &e).await?;
                position = event.position;
                continue;
            }
            Err(e) => {
                save(pool, checkpoints, name, domain, position).await?;
                return Err(e);
            }
        }
        position = event.position;
        tracing::debug!(
            position,
            event_type = %event.event_type,
            request_id = event.metadata.request_id.as_deref(),
            correlation_id = %event.metadata.correlation_id,
            "event handled"
        );
        metrics::counter!("nova_policy_handled_events_total",
            "policy" => name.to_owned(), "domain" => domain.as_str())
        .increment(1);
    }
    save(pool, checkpoints, name, domain, position).await?;
    source.acknowledge(domain, position).await;
    Ok(())
}

/// Parks `event` in `dead_letters` for policy `name` and moves the checkpoint past it, in one
/// transaction.
async fn park(
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    name: &str,
    event: &RecordedEvent,
    error: &PolicyError,
) -> Result<(), sqlx::Error> {
    tracing::warn!(policy = name, domain = %event.domain, position = event.position,
        event_type = %event.event_type, %error, "event parked in dead_letters");
    let mut tx = pool.begin().await?;
    let stored = Checkpoints::load_in(&mut tx, name, event.domain).await?;
    sqlx::query(
        "INSERT INTO dead_letters \
           (consumer, domain, position, event_id, event_type, error, attempts, parked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7) \
         ON CONFLICT (consumer, domain, position) DO UPDATE \
         SET error = excluded.error, attempts = dead_letters.attempts + 1",
    )
    .bind(name)
    .bind(event.domain.as_str())
    .bind(event.position)
    .bind(event.event_id.to_string())
    .bind(&event.event_type)
    .bind(error.to_string())
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(&mut *tx)
    .await?;
    if event.position > stored {
        Checkpoints::save_in(&mut tx, name, event.domain, event.position).await?;
    }
    tx.commit().await?;
    checkpoints.publish(name, event.domain, event.position.max(stored));
    metrics::counter!("nova_policy_dead_letters_total",
        "policy" => name.to_owned(), "domain" => event.domain.as_str())
    .increment(1);
    Ok(())
}

/// What [`retry_dead_letters`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retried {
    /// Handled now, and removed from `dead_letters`.
    pub handled: usize,
    /// Still failing; kept, with the new error and one more attempt.
    pub failed: usize,
}

/// Handles `policy`'s parked events again, oldest position first per domain: each one handled
/// is removed from `dead_letters`, each one that fails again stays with its new error. The
/// reactions are idempotent, so handling one late (after later events) has the effect the
/// policy would have had in order, for the deactivation policies Nova runs.
pub async fn retry_dead_letters(
    policy: &dyn Policy,
    store: &EventStore,
    pool: &AnyPool,
) -> Result<Retried, PolicyError> {
    let name = policy.name();
    let parked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT domain, position FROM dead_letters WHERE consumer = $1 ORDER BY domain, position",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let mut retried = Retried::default();
    for (domain_name, position) in parked {
        let Some(domain) = Domain::parse(&domain_name) else {
            continue;
        };
        let filter = nova_infra::store::ReadFilter {
            after_position: position - 1,
            limit: 1,
            ..Default::default()
        };
        let event = store.read(domain, &filter).await?.into_iter().next();
        let outcome = match &event {
            Some(e) if e.position == position => policy.handle(e).await,
            _ => Err(PolicyError::Poison(format!(
                "{domain}:{position} is not in the store"
            ))),
        };
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "DELETE FROM dead_letters WHERE consumer = $1 AND domain = $2 AND position = $3",
                )
                .bind(name)
                .bind(&domain_name)
                .bind(position)
                .execute(pool)
                .await?;
                retried.handled += 1;
            }
            Err(e) => {
                sqlx::query(
                    "UPDATE dead_letters SET error = $4, attempts = attempts + 1 \
                     WHERE consumer = $1 AND domain = $2 AND position = $3",
                )
                .bind(name)
                .bind(&domain_name)
                .bind(position)
                .bind(e.to_string())
                .execute(pool)
                .await?;
                retried.failed += 1;
            }
        }
    }
    Ok(retried)
}

async fn save(
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    name: &str,
    domain: Domain,
    position: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Never move a checkpoint backwards (another process may have run ahead).
    let stored = Checkpoints::load_in(&mut tx, name, domain).await?;
    if position > stored {
        Checkpoints::save_in(&mut tx, name, domain, position).await?;
    }
    tx.commit().await?;
    checkpoints.publish(name, domain, position.max(stored));
    Ok(())
}

/// Runs one policy for one domain until `stop` flips to true; failures are retried with
/// backoff, never skipped.
pub async fn run_policy(
    policy: Arc<dyn Policy>,
    domain: Domain,
    source: Arc<dyn EventSource>,
    pool: AnyPool,
    checkpoints: Checkpoints,
    mut stop: watch::Receiver<bool>,
) {
    let name = policy.name().to_owned();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        match react_once(&*policy, domain, &*source, &pool, &checkpoints).await {
            Ok(true) => backoff = Duration::from_millis(100),
            Ok(false) => {
                let seen = checkpoints.cached(&name, domain);
                tokio::select! {
                    _ = source.wait_for_more(domain, seen) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(policy = %name, %domain, error = %e, "policy failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs a policy over everything currently in the store (used by tests).
pub async fn react_all(
    policy: &dyn Policy,
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
) -> Result<(), PolicyError> {
    let source = StoreTail::new(store.clone());
    for &domain in policy.domains() {
        while react_once(policy, domain, &source, pool, checkpoints).await? {}
    }
    Ok(())
}

/// Waits until projection `projection` has applied `domain` up to the domain's current head —
/// what a policy does before it lists an aggregate set from a read model, so that nothing
/// committed before the triggering event is missed.
pub async fn wait_until_current(
    store: &EventStore,
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    projection: &str,
    domain: Domain,
) -> Result<(), PolicyError> {
    let head = store.head(domain).await?;
    wait_until_applied(pool, checkpoints, projection, domain, head).await
}

/// Waits (up to 10 s, then [`PolicyError::Retry`]) until projection `projection` has applied
/// `domain` up to position `head`.
pub async fn wait_until_applied(
    pool: &AnyPool,
    checkpoints: &Checkpoints,
    projection: &str,
    domain: Domain,
    head: i64,
) -> Result<(), PolicyError> {
    match checkpoints
        .wait_for(pool, projection, domain, head, Duration::from_secs(10))
        .await?
    {
        Caught::Up => Ok(()),
        Caught::TimedOut => Err(PolicyError::Retry(format!(
            "projection {projection} is behind {domain} position {head}"
        ))),
    }
}

/// What a policy needs to wait for a read model to catch up: the read-model pool and the
/// projections' checkpoints. A policy lists the aggregates it commands from a read model only
/// after the read model has reached the head of their domain (which the domain's command
/// service reports), so that nothing committed before the triggering event is missed.
#[derive(Clone)]
pub struct CatchUp {
    pool: AnyPool,
    checkpoints: Checkpoints,
}

impl CatchUp {
    pub fn new(pool: AnyPool, checkpoints: Checkpoints) -> Self {
        CatchUp { pool, checkpoints }
    }

    /// Waits until `projection` has applied `domain` up to `head`.
    pub async fn until(
        &self,
        projection: &str,
        domain: Domain,
        head: i64,
    ) -> Result<(), PolicyError> {
        wait_until_applied(&self.pool, &self.checkpoints, projection, domain, head).await
    }
}

/// A reaction that failed for a reason a later attempt may not have (store or read model
/// trouble, a conflict): the event is retried.
pub fn retry(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Retry(e.to_string())
}

/// The user that `event` deactivates, if it is a `user.deactivated` event (the one event every
/// deactivation policy reacts to); other events are not decoded.
pub fn deactivated_user(event: &RecordedEvent) -> Result<Option<Uuid>, PolicyError> {
    if event.domain != Domain::User || event.event_type != "deactivated" {
        return Ok(None);
    }
    let nova_event_schemas::user::UserEvent::Deactivated(_) = event.decode()? else {
        return Ok(None);
    };
    Ok(Some(event.aggregate_id))
}

/// The context of the commands a policy issues in reaction to `event`: the same correlation,
/// caused by the event, no acting user, and the causing request's id, so that a request can be
/// followed into the reactions it set off.
pub fn reaction_context(event: &RecordedEvent) -> nova_commands::CommandContext {
    nova_commands::CommandContext {
        correlation_id: event.metadata.correlation_id,
        causation_id: Some(event.event_id),
        actor_id: None,
        request_id: event.metadata.request_id.clone(),
        idempotency: None,
    }
}
