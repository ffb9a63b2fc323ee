//! NATS JetStream plumbing shared by the relay and the JetStream event source: one stream per
//! domain (`NOVA_<DOMAIN>`, subjects `nova.<domain>.<event_type>`, file storage), the message
//! format, and idempotent stream set-up. Only features of nats-server 2.9 are used.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use nova_event_schemas::Domain;
use serde::{Deserialize, Serialize};

use crate::store::RecordedEvent;

/// JetStream drops a re-publish with a known `Nats-Msg-Id` within this window. The relay does
/// not depend on it (consumers also skip positions they have applied); it only saves work.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long JetStream keeps events. Consumers that fall further behind read the store (the
/// source of truth), so this only bounds the stream's size.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Stream and subject names. Production uses the defaults (`NOVA_<DOMAIN>`,
/// `nova.<domain>.<event_type>`); tests use a unique prefix so they can share one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub stream_prefix: String,
    pub subject_prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            stream_prefix: "NOVA".into(),
            subject_prefix: "nova".into(),
        }
    }
}

impl Names {
    /// Unique names for one test.
    pub fn unique() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let tag = &tag[..12];
        Names {
            stream_prefix: format!("NOVA_T{tag}"),
            subject_prefix: format!("t{tag}.nova"),
        }
    }

    pub fn stream(&self, domain: Domain) -> String {
        format!("{}_{}", self.stream_prefix, domain.as_str().to_uppercase())
    }

    pub fn subject(&self, domain: Domain, event_type: &str) -> String {
        format!("{}.{}.{}", self.subject_prefix, domain.as_str(), event_type)
    }

    pub fn stream_config(&self, domain: Domain) -> stream::Config {
        stream::Config {
            name: self.stream(domain),
            subjects: vec![format!("{}.{}.>", self.subject_prefix, domain.as_str())],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: MAX_AGE,
            ..Default::default()
        }
    }

    /// Deletes this namespace's streams (tests clean up after themselves).
    pub async fn delete_streams(&self, js: &jetstream::Context) {
        for domain in Domain::ALL {
            let _ = js.delete_stream(self.stream(domain)).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("JetStream: {0}")]
    JetStream(String),
}

pub async fn connect(url: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))
}

/// Creates every domain's stream, or updates it when its configuration drifted. Idempotent;
/// safe to run from every process at start-up.
pub async fn ensure_streams(js: &jetstream::Context, names: &Names) -> Result<(), NatsError> {
    for domain in Domain::ALL {
        let wanted = names.stream_config(domain);
        match js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let info = existing
                    .info()
                    .await
                    .map_err(|e| NatsError::JetStream(e.to_string()))?;
                let c = &info.config;
                if c.subjects != wanted.subjects
                    || c.duplicate_window != wanted.duplicate_window
                    || c.max_age != wanted.max_age
                {
                    js.update_stream(wanted)
                        .await
                        .map_err(|e| NatsError::JetStream(e.to_string()))?;
                }
            }
            Err(_) => {
                js.create_stream(wanted)
                    .await
                    .map_err(|e| NatsError::JetStream(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// What a JetStream message carries: the stored event, plus the position of the event before
/// it in the same domain, so a consumer can tell a gap (an earlier message still to come, or
/// redelivered later) from "nothing in between".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub prev_position: i64,
    #[serde(flatten)]
    pub event: RecordedEvent,
}

impl Envelope {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(payload: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Envelope metadata as headers, for tools that route or inspect without parsing bodies.
    pub fn headers(&self) -> HeaderMap {
        let e = &self.event;
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
        h.insert("Nova-Domain", e.domain.as_str());
        h.insert("Nova-Position", e.position.to_string().as_str());
        h.insert(
            "Nova-Prev-Position",
            self.prev_position.to_string().as_str(),
        );
        h.insert("Nova-Aggregate-Id", e.aggregate_id.to_string().as_str());
        h.insert("Nova-Aggregate-Version", e.version.to_string().as_str());
        h.insert("Nova-Event-Type", e.event_type.as_str());
        h.insert("Nova-Schema-Version", e.schema_version.to_string().as_str());
        h.insert(
            "Nova-Correlation-Id",
            e.metadata.correlation_id.to_string().as_str(),
        );
        if let Some(c) = e.metadata.causation_id {
            h.insert("Nova-Causation-Id", c.to_string().as_str());
        }
        if let Some(a) = e.metadata.actor_id {
            h.insert("Nova-Actor-Id", a.to_string().as_str());
        }
        h
    }
}
