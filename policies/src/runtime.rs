//! Policies: consumers that react to another domain's events by issuing commands to their **own**
//! domain's aggregates (DESIGN rule 1) — e.g. "when a user is deactivated, end their follows".
//!
//! A policy runs on the same sources as projections (store tail or JetStream) with its own
//! checkpoint, but its effects are appends through the command path, not rows in a read-model
//! transaction. Delivery is therefore at-least-once: the checkpoint moves after an event's
//! commands succeeded, and a crash in between repeats them. Policies must be idempotent — their
//! commands decide "nothing to do" on a second run.

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
        if let Err(e) = outcome {
            save(pool, checkpoints, name, domain, position).await?;
            return Err(e);
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
