//! The `stream` domain: the [`Stream`] aggregate, one per broadcast.
//!
//! Invariants kept here:
//! - a stream goes created → live → ended, never back; an ended stream does not go live again;
//! - only its broadcaster starts, ends or re-keys it through the API; the media server starts
//!   and ends it only with the stream's *current* key (a rotated-away key is refused at once);
//! - a disabled stream (its broadcaster was deactivated) never goes live and takes no key;
//! - an ending records its summary: duration, peak and unique viewers.
//!
//! Keys are never seen here: the handler hashes the presented key, finds the key id it belongs
//! to in the stream domain's key table and passes that id in (ADR 0017). Viewer counts come
//! from the domain's presence tables, read by the handler and passed in with the end.

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_event_schemas::stream::*;
use uuid::Uuid;

pub use nova_event_schemas::stream::Trigger;

/// The `aggregate_type` of every aggregate of the `stream` domain.
pub const AGGREGATE_TYPES: &[&str] = &[<Stream as Aggregate>::NAME];

/// Why the stream domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream not found")]
    NotFound,
    #[error("a stream with this id already exists")]
    AlreadyExists,
    /// The caller is not the stream's broadcaster.
    #[error("only the stream's broadcaster may do this")]
    NotBroadcaster,
    /// The presented stream key is not the stream's current key (or the stream is disabled).
    #[error("the stream key is not valid")]
    KeyRefused,
    #[error("the stream has ended")]
    Ended,
    #[error("the stream is not live")]
    NotLive,
    /// The broadcaster was deactivated.
    #[error("the stream is disabled")]
    Disabled,
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    Created,
    Live,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Live => "live",
            Status::Ended => "ended",
        }
    }
}

/// A created stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Broadcast {
    pub stream_id: Uuid,
    pub broadcaster: Uuid,
    pub title: String,
    /// The current key's id; the only key that works.
    pub key_id: Uuid,
    pub status: Status,
    pub started_at: Option<DateTime<Utc>>,
    pub disabled: bool,
}

/// The stream's state: `None` until created.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StreamState {
    pub broadcast: Option<Broadcast>,
}

/// Who asks a stream to start or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// An authenticated user through the API (must be the broadcaster).
    User(Uuid),
    /// The media server, with the key id the presented key hashed to.
    Ingest { key_id: Uuid },
    /// The stream domain's own deactivation policy.
    Deactivation,
}

impl By {
    fn trigger(self) -> Trigger {
        match self {
            By::User(_) => Trigger::Broadcaster,
            By::Ingest { .. } => Trigger::Ingest,
            By::Deactivation => Trigger::Deactivation,
        }
    }
}

/// How many watched, as the presence tables report it at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audience {
    pub peak: i64,
    pub unique: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamCommand {
    /// Title and description are validated by the handler; `key_id` names the key's hash,
    /// stored by the handler before this command.
    Create {
        stream_id: Uuid,
        broadcaster: Uuid,
        title: String,
        description: Option<String>,
        key_id: Uuid,
        now: DateTime<Utc>,
    },
    RotateKey {
        actor: Uuid,
        key_id: Uuid,
        now: DateTime<Utc>,
    },
    Start {
        by: By,
        now: DateTime<Utc>,
    },
    End {
        by: By,
        audience: Audience,
        now: DateTime<Utc>,
    },
    /// The broadcaster was deactivated: end the stream if live, then refuse it for good.
    Disable {
        audience: Audience,
        now: DateTime<Utc>,
    },
}

pub struct Stream;

impl Stream {
    fn check(b: &Broadcast, by: By) -> Result<(), StreamError> {
        match by {
            By::User(user) if user != b.broadcaster => Err(StreamError::NotBroadcaster),
            By::Ingest { key_id } if key_id != b.key_id || b.disabled => {
                Err(StreamError::KeyRefused)
            }
            _ => Ok(()),
        }
    }

    fn ended(b: &Broadcast, by: By, audience: Audience, now: DateTime<Utc>) -> StreamEvent {
        let started_at = b.started_at.unwrap_or(now);
        StreamEvent::Ended(Ended {
            stream_id: b.stream_id,
            broadcaster_id: b.broadcaster,
            trigger: by.trigger(),
            started_at,
            ended_at: now,
            duration_secs: (now - started_at).num_seconds().max(0),
            peak_viewers: audience.peak,
            unique_viewers: audience.unique,
        })
    }
}

impl Aggregate for Stream {
    const NAME: &'static str = "stream";
    type State = StreamState;
    type Command = StreamCommand;
    type Event = StreamEvent;
    type Error = StreamError;

    fn handle_command(
        state: &StreamState,
        command: StreamCommand,
    ) -> Result<Vec<StreamEvent>, StreamError> {
        if let StreamCommand::Create {
            stream_id,
            broadcaster,
            title,
            description,
            key_id,
            now,
        } = command
        {
            if state.broadcast.is_some() {
                return Err(StreamError::AlreadyExists);
            }
            return Ok(vec![StreamEvent::Created(Created {
                stream_id,
                broadcaster_id: broadcaster,
                title,
                description,
                key_id,
                created_at: now,
            })]);
        }
        let b = state.broadcast.as_ref().ok_or(StreamError::NotFound)?;
        match command {
            StreamCommand::Create { .. } => Err(StreamError::AlreadyExists),
            StreamCommand::RotateKey { actor, key_id, now } => {
                Stream::check(b, By::User(actor))?;
                if b.disabled {
                    return Err(StreamError::Disabled);
                }
                if b.status == Status::Ended {
                    return Err(StreamError::Ended);
                }
                Ok(vec![StreamEvent::KeyRotated(KeyRotated {
                    stream_id: b.stream_id,
                    key_id,
                    rotated_at: now,
                })])
            }
            StreamCommand::Start { by, now } => {
                Stream::check(b, by)?;
                if b.disabled {
                    return Err(StreamError::Disabled);
                }
                match b.status {
                    Status::Created => Ok(vec![StreamEvent::Started(Started {
                        stream_id: b.stream_id,
                        broadcaster_id: b.broadcaster,
                        title: b.title.clone(),
                        trigger: by.trigger(),
                        started_at: now,
                    })]),
                    Status::Live => Ok(vec![]),
                    Status::Ended => Err(StreamError::Ended),
                }
            }
            StreamCommand::End { by, audience, now } => {
                Stream::check(b, by)?;
                match b.status {
                    Status::Created => Err(StreamError::NotLive),
                    Status::Live => Ok(vec![Stream::ended(b, by, audience, now)]),
                    Status::Ended => Ok(vec![]),
                }
            }
            StreamCommand::Disable { audience, now } => {
                let mut events = Vec::new();
                if b.status == Status::Live {
                    events.push(Stream::ended(b, By::Deactivation, audience, now));
                }
                if !b.disabled {
                    events.push(StreamEvent::Disabled(Disabled {
                        stream_id: b.stream_id,
                        broadcaster_id: b.broadcaster,
                        disabled_at: now,
                    }));
                }
                Ok(events)
            }
        }
    }

    fn apply_event(mut state: StreamState, event: StreamEvent) -> StreamState {
        match event {
            StreamEvent::Created(e) => {
                state.broadcast = Some(Broadcast {
                    stream_id: e.stream_id,
                    broadcaster: e.broadcaster_id,
                    title: e.title,
                    key_id: e.key_id,
                    status: Status::Created,
                    started_at: None,
                    disabled: false,
                });
            }
            StreamEvent::KeyRotated(e) => {
                if let Some(b) = state.broadcast.as_mut() {
                    b.key_id = e.key_id;
                }
            }
            StreamEvent::Started(e) => {
                if let Some(b) = state.broadcast.as_mut() {
                    b.status = Status::Live;
                    b.started_at = Some(e.started_at);
                }
            }
            StreamEvent::Ended(_) => {
                if let Some(b) = state.broadcast.as_mut() {
                    b.status = Status::Ended;
                }
            }
            StreamEvent::Disabled(_) => {
                if let Some(b) = state.broadcast.as_mut() {
                    b.disabled = true;
                }
            }
        }
        state
    }
}

impl crate::CommandName for StreamCommand {
    fn name(&self) -> &'static str {
        match self {
            StreamCommand::Create { .. } => "create",
            StreamCommand::RotateKey { .. } => "rotate_key",
            StreamCommand::Start { .. } => "start",
            StreamCommand::End { .. } => "end",
            StreamCommand::Disable { .. } => "disable",
        }
    }
}

#[cfg(test)]
mod tests;
