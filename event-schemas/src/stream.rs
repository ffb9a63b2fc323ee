//! Events of the `stream` domain (live streams).
//!
//! One aggregate kind, the **stream** (id = a UUIDv7 chosen at creation): a broadcast's title,
//! its broadcaster, which stream key is current, and its life created → live → ended. The key
//! itself never appears in an event: the stream domain keeps its hash in `stream_keys` and an
//! event names it by `key_id` (ADR 0017). Viewer heartbeats are not events either: presence is
//! state the stream domain keeps in its own tables; only its summary (peak and unique viewers)
//! is recorded, in [`Ended`].

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

/// A broadcast was set up; its first key is `key_id` (the key was shown once to the
/// broadcaster and is stored only as a hash, outside the events).
///
/// Version 2: `title` and `description` are stored sealed under the broadcaster's data key
/// (ADR 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Created {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    /// Personal data of the broadcaster (sealed in storage).
    pub title: String,
    /// Personal data of the broadcaster (sealed in storage).
    pub description: Option<String>,
    pub key_id: Uuid,
    pub created_at: DateTime<Utc>,
}

// Version 1 of `Created` (plaintext title), kept for its checked-in schema.
/// A broadcast was set up; its first key is `key_id` (the key was shown once to the
/// broadcaster and is stored only as a hash, outside the events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Created")]
pub struct CreatedV1 {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub key_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// The broadcaster replaced the stream key; only `key_id` works from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRotated {
    pub stream_id: Uuid,
    pub key_id: Uuid,
    pub rotated_at: DateTime<Utc>,
}

/// What started or ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The broadcaster, through the API.
    Broadcaster,
    /// The media server's publish hooks (the publish with the stream key began or ended).
    Ingest,
    /// The broadcaster's account was deactivated (the stream domain's policy).
    Deactivation,
}

/// The stream went live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Started {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub title: String,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
}

/// The stream ended, with its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ended {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Whole seconds between `started_at` and `ended_at`.
    pub duration_secs: i64,
    /// Most viewers watching at once.
    pub peak_viewers: i64,
    /// Distinct signed-in users who watched.
    pub unique_viewers: i64,
}

/// The broadcaster was deactivated: the stream cannot go live again and its key is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disabled {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub disabled_at: DateTime<Utc>,
}

crate::domain_events! {
    /// Every event the `stream` domain stores.
    pub enum StreamEvent in Domain::Stream {
        Created(Created) = ("created", 2),
        KeyRotated(KeyRotated) = ("key_rotated", 1),
        Started(Started) = ("started", 1),
        Ended(Ended) = ("ended", 1),
        Disabled(Disabled) = ("disabled", 1),
    }
    upcast(event_type, version, payload) {
        // v1 → v2: same shape; v2 stores the title sealed (ADR 0025).
        match (event_type, version) {
            ("created", 1) => ("created", 2, payload),
            _ => (event_type, version, payload),
        }
    }
    superseded {
        CreatedV1 = ("created", 1),
    }
}
