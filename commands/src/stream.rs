//! Command handlers of the `stream` domain: creating a stream (with its key, shown once),
//! rotating the key, starting and ending it (by the broadcaster through the API, or by the
//! media server's publish hooks with the key), viewers joining and leaving, and disabling the
//! streams of a deactivated broadcaster (the domain's policy).
//!
//! Keys live in [`keys`] (hash only, ADR 0017) and viewers in [`presence`] (state, not
//! events); both tables belong to this domain and are touched by this module only. Only this
//! module can create a [`StreamWriter`].

use std::time::Duration;

use nova_aggregates::stream::{
    Audience, Broadcast, By, Status, Stream, StreamCommand, StreamError,
};
use nova_event_schemas::stream::StreamEvent;
use nova_event_schemas::Domain;
use nova_infra::clock::Clock;
use secrecy::SecretString;
use sqlx::AnyPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{CommandContext, CommandError, CommandStore, Done, Owned, Repository};

pub mod keys;
pub mod presence;

pub use presence::Counts;

/// The stream domain's writer (see `repository`): only this module can create one.
pub struct StreamWriter(());

impl Owned for StreamEvent {
    type Writer = StreamWriter;
}

/// Seals the personal data this domain's events stored in plaintext before ADR 0025 (run at
/// start, before any relay or projector reads the history; see `CommandStore::seal_history`).
pub async fn seal_history(
    store: &CommandStore,
    keys: &dyn nova_infra::personal::DataKeys,
) -> std::result::Result<u64, nova_infra::store::StoreError> {
    store
        .seal_history::<StreamEvent>(&StreamWriter(()), keys)
        .await
}

/// Why a stream command failed: the one command error, with the domain's refusals.
pub type StreamCommandError = CommandError<StreamError>;

type Result<T> = std::result::Result<T, StreamCommandError>;

/// Longest title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;

fn unavailable(e: sqlx::Error) -> StreamCommandError {
    // The error names the table or the connection problem, never a bound value (a key hash).
    CommandError::Unavailable(format!("stream tables: {e}"))
}

/// A created stream: its id and its key, which is never shown again.
pub struct NewStream {
    pub stream_id: Uuid,
    pub key: SecretString,
    pub done: Done,
}

#[derive(Clone)]
pub struct StreamCommands {
    store: CommandStore,
    streams: Repository<Stream>,
    keys: keys::Keys,
    presence: presence::Presence,
    /// Event times (presence keeps whole seconds; events keep the instant).
    clock: Clock,
}

impl StreamCommands {
    /// `pool` holds the domain's key and presence tables; `clock` times presence.
    pub fn new(store: CommandStore, pool: AnyPool, clock: Clock) -> Self {
        StreamCommands {
            streams: Repository::new(&store, StreamWriter(())),
            keys: keys::Keys::new(pool.clone()),
            presence: presence::Presence::new(pool, clock.clone()),
            clock,
            store,
        }
    }

    /// Sets up a stream of `broadcaster` with a fresh key.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        broadcaster: Uuid,
        title: &str,
        description: Option<&str>,
    ) -> Result<NewStream> {
        let title = check_text("title", title, MAX_TITLE)?;
        let description = description
            .map(|d| check_text("description", d, MAX_DESCRIPTION))
            .transpose()?;
        let stream_id = Uuid::now_v7();
        let now = self.clock.now();
        let (key, hash) = keys::generate();
        // The hash is stored before the event naming it: a failed append leaves a row no event
        // names, which therefore never works (ADR 0017).
        let key_id = self
            .keys
            .insert(stream_id, &hash, now)
            .await
            .map_err(unavailable)?;
        let e = self
            .streams
            .execute(stream_id, ctx, |_| {
                Ok(StreamCommand::Create {
                    stream_id,
                    broadcaster,
                    title: title.clone(),
                    description: description.clone(),
                    key_id,
                    now,
                })
            })
            .await?;
        Ok(NewStream {
            stream_id: e.aggregate_id,
            key,
            done: e.done(),
        })
    }

    /// Replaces the stream's key; the old one is refused from the next publish on.
    pub async fn rotate_key(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        stream: Uuid,
    ) -> Result<(SecretString, Done)> {
        // Refuse before storing anything for a stream the caller cannot re-key.
        let b = self.broadcast(stream).await?;
        if b.broadcaster != actor {
            return Err(CommandError::Refused(StreamError::NotBroadcaster));
        }
        let now = self.clock.now();
        let (key, hash) = keys::generate();
        let key_id = self
            .keys
            .insert(stream, &hash, now)
            .await
            .map_err(unavailable)?;
        let e = self
            .streams
            .execute(stream, ctx, |_| {
                Ok(StreamCommand::RotateKey { actor, key_id, now })
            })
            .await?;
        Ok((key, e.done()))
    }

    /// The broadcaster starts the stream through the API.
    pub async fn start(&self, ctx: &CommandContext, actor: Uuid, stream: Uuid) -> Result<Done> {
        self.start_by(ctx, stream, By::User(actor)).await
    }

    /// The broadcaster ends the stream through the API.
    pub async fn end(&self, ctx: &CommandContext, actor: Uuid, stream: Uuid) -> Result<Done> {
        self.end_by(ctx, stream, By::User(actor)).await
    }

    /// The media server's publish with `key` began: the stream goes live if the key is its
    /// current key. An unknown key is [`StreamError::KeyRefused`].
    pub async fn publish(&self, ctx: &CommandContext, key: &SecretString) -> Result<Done> {
        let (key_id, stream) = self.key(key).await?;
        self.start_by(ctx, stream, By::Ingest { key_id }).await
    }

    /// The media server's publish with `key` ended: so does the stream.
    pub async fn publish_done(&self, ctx: &CommandContext, key: &SecretString) -> Result<Done> {
        let (key_id, stream) = self.key(key).await?;
        match self.end_by(ctx, stream, By::Ingest { key_id }).await {
            // A publish that ends before the stream went live (refused, or ended by the
            // broadcaster meanwhile) has nothing to end.
            Err(CommandError::Refused(StreamError::NotLive)) => {
                let loaded = self.streams.load(stream).await?;
                Ok(Done {
                    version: loaded.version,
                    position: None,
                })
            }
            other => other,
        }
    }

    /// The broadcaster was deactivated: ends the stream if live and refuses it for good.
    pub async fn disable(&self, ctx: &CommandContext, stream: Uuid) -> Result<Done> {
        let audience = self.final_audience(stream).await?;
        let e = self
            .streams
            .execute(stream, ctx, |_| {
                Ok(StreamCommand::Disable {
                    audience,
                    now: self.clock.now(),
                })
            })
            .await?;
        if e.events.iter().any(|e| matches!(e, StreamEvent::Ended(_))) {
            self.presence.clear(stream).await.map_err(unavailable)?;
        }
        Ok(e.done())
    }

    /// A viewer's join or heartbeat. Only a live stream can be watched.
    pub async fn join(&self, viewer: Uuid, stream: Uuid) -> Result<Counts> {
        if self.presence.touch(stream, viewer) {
            return Ok(Counts::default());
        }
        let b = self.broadcast(stream).await?;
        match b.status {
            Status::Live => self
                .presence
                .join(stream, viewer)
                .await
                .map_err(unavailable),
            Status::Created => Err(CommandError::Refused(StreamError::NotLive)),
            Status::Ended => Err(CommandError::Refused(StreamError::Ended)),
        }
    }

    /// The viewer left. Leaving a stream that is not live has nothing to undo.
    pub async fn leave(&self, viewer: Uuid, stream: Uuid) -> Result<Counts> {
        if self.broadcast(stream).await?.status != Status::Live {
            return Ok(Counts::default());
        }
        self.presence
            .leave(stream, viewer)
            .await
            .map_err(unavailable)
    }

    /// The counts of a live stream, exact as of now (this process's heartbeats written
    /// first).
    pub async fn audience(&self, stream: Uuid) -> Result<Counts> {
        self.presence.flush().await.map_err(unavailable)?;
        self.presence.recount(stream).await.map_err(unavailable)
    }

    /// Writes buffered heartbeats and recounts every live stream, once a second, until `stop`
    /// (run by every process that serves the API).
    pub async fn run_presence(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            let flushed = self.presence.flush().await;
            if let Err(e) = flushed.and(self.presence.sweep().await) {
                tracing::warn!(error = %e, "viewer presence flush failed; retrying");
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Writes buffered heartbeats now (benchmarks and tests; the loop does it every second).
    pub async fn flush_presence(&self) -> Result<usize> {
        self.presence.flush().await.map_err(unavailable)
    }

    /// Position of the stream domain's latest event.
    pub async fn head(&self) -> Result<i64> {
        self.store
            .head(Domain::Stream)
            .await
            .map_err(|e| StreamCommandError::Unavailable(e.to_string()))
    }

    async fn key(&self, key: &SecretString) -> Result<(Uuid, Uuid)> {
        self.keys
            .find(key)
            .await
            .map_err(unavailable)?
            .ok_or(CommandError::Refused(StreamError::KeyRefused))
    }

    async fn broadcast(&self, stream: Uuid) -> Result<Broadcast> {
        let loaded = self.streams.load_shared(stream).await?;
        loaded
            .state
            .broadcast
            .clone()
            .ok_or(CommandError::Refused(StreamError::NotFound))
    }

    async fn start_by(&self, ctx: &CommandContext, stream: Uuid, by: By) -> Result<Done> {
        let e = self
            .streams
            .execute(stream, ctx, |_| {
                Ok(StreamCommand::Start {
                    by,
                    now: self.clock.now(),
                })
            })
            .await?;
        // The live list walks the audience table in viewer order: a live stream has a row from
        // its start (a crash right here leaves it to the first join to write it).
        self.presence.recount(stream).await.map_err(unavailable)?;
        Ok(e.done())
    }

    async fn end_by(&self, ctx: &CommandContext, stream: Uuid, by: By) -> Result<Done> {
        // Authorization first: a stranger's end must not even recount the audience.
        let b = self.broadcast(stream).await?;
        match by {
            By::User(u) if u != b.broadcaster => {
                return Err(CommandError::Refused(StreamError::NotBroadcaster))
            }
            By::Ingest { key_id } if key_id != b.key_id => {
                return Err(CommandError::Refused(StreamError::KeyRefused))
            }
            _ => {}
        }
        let audience = if b.status == Status::Live {
            self.final_audience(stream).await?
        } else {
            Audience::default()
        };
        let e = self
            .streams
            .execute(stream, ctx, |_| {
                Ok(StreamCommand::End {
                    by,
                    audience,
                    now: self.clock.now(),
                })
            })
            .await?;
        if !e.events.is_empty() {
            self.presence.clear(stream).await.map_err(unavailable)?;
        }
        Ok(e.done())
    }

    async fn final_audience(&self, stream: Uuid) -> Result<Audience> {
        let c = self.audience(stream).await?;
        Ok(Audience {
            peak: c.peak,
            unique: c.unique,
        })
    }
}

/// 1–`max` characters, not only whitespace, no control characters (newlines and tabs are
/// allowed in descriptions only). Returns the text trimmed.
fn check_text(field: &'static str, text: &str, max: usize) -> Result<String> {
    let trimmed = text.trim();
    let controls_ok =
        |c: char| !c.is_control() || (field == "description" && (c == '\n' || c == '\t'));
    // The length as sent (the OpenAPI document's `maxLength`), the rest after trimming.
    if trimmed.is_empty() || text.chars().count() > max || !trimmed.chars().all(controls_ok) {
        return Err(CommandError::invalid(
            field,
            format!("must be 1–{max} characters, not blank, without control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_descriptions_are_checked() {
        assert_eq!(check_text("title", "  Hi  ", 200).unwrap(), "Hi");
        assert!(check_text("title", &"x".repeat(200), 200).is_ok());
        assert!(check_text("title", &"é".repeat(200), 200).is_ok());
        for bad in ["", "   ", "a\u{0}b", "a\nb"] {
            assert!(check_text("title", bad, 200).is_err(), "{bad:?}");
        }
        assert!(check_text("title", &"x".repeat(201), 200).is_err());
        assert!(check_text("description", "line\nline", 2000).is_ok());
    }
}
