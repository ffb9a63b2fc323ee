//! Command handlers: load an aggregate, let it decide, append what it decided with the version
//! it was loaded at — retried on a version conflict (reload, re-decide) up to
//! [`MAX_ATTEMPTS`] times, then reported as [`CommandError::Conflict`].
//!
//! Everything impure that an aggregate needs (time, ids, password verification, random tokens)
//! happens here and is handed to the aggregate inside the command. Each domain has one module,
//! and a module can append only its own domain's events: it alone can create the writer that
//! [`Repository::new`] and [`CommandStore::append`] require (see [`repository`], ADR 0008).
//!
//! This crate depends on aggregates, event schemas and the store only. Facts about other
//! domains come through the narrow traits of [`facts`], implemented over the read models
//! outside this crate and handed in when the application is assembled.

use std::sync::Arc;

use nova_event_schemas::EventMetadata;
use nova_infra::store::StoreError;
use uuid::Uuid;

pub mod conversation;
pub mod experiment;
pub mod facts;
pub mod follow;
pub mod idempotency;
pub mod post;
pub mod repository;
pub mod stream;
pub mod user;

pub use facts::FactError;
pub use repository::{CommandStore, Executed, Loaded, Owned, Repository, CACHE_CAPACITY};

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

/// Why a command did not take effect — one type for every domain, generic over the domain's
/// refusal `R` (its aggregate's error enum). Domain refusals, bad input, concurrency and store
/// trouble stay apart, so the HTTP edge maps each kind once: a refusal by the refusal's own
/// status and code, the rest by kind (400, 409, 503, 500).
#[derive(Debug, thiserror::Error)]
pub enum CommandError<R: std::error::Error> {
    /// A field of the input is malformed (checked before anything is decided).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The domain said no.
    #[error(transparent)]
    Refused(R),
    /// The aggregate kept changing concurrently ([`MAX_ATTEMPTS`] tries); retry.
    #[error("the aggregate kept changing concurrently; retry")]
    Conflict,
    /// The server is at capacity for this kind of work (e.g. password hashing); retry shortly.
    #[error("too much work of this kind in progress; retry shortly")]
    Busy,
    /// The event store or a read model could not be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored event did not decode, or an invariant broke: a bug, never the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl<R: std::error::Error> CommandError<R> {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        CommandError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl<R: std::error::Error> From<StoreError> for CommandError<R> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => CommandError::Conflict,
            other => CommandError::Unavailable(other.to_string()),
        }
    }
}

impl<R: std::error::Error> From<FactError> for CommandError<R> {
    fn from(e: FactError) -> Self {
        CommandError::Unavailable(e.to_string())
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
