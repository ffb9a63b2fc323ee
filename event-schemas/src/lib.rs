//! Nova's stored event types: the envelope every event travels in, and one module per domain
//! with that domain's event payloads.
//!
//! Invariants kept here:
//! - an event type's name (`event_type`) and its schema version never change once stored; a
//!   changed payload is a new version with an upcaster in `from_stored` (the procedure, step by
//!   step, is in this crate's `README.md`);
//! - every (type, version) pair has a checked-in JSON Schema under `schemas/<domain>/`, and the
//!   `schemas_match_checked_in_files` test fails when the Rust type and the file disagree;
//! - payloads never carry plaintext secrets: only hashes of passwords and tokens;
//! - personal data (text a person wrote or that identifies them) is listed in
//!   [`personal::PERSONAL`] and stored sealed under its owner's key, erasable (ADR 0025).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

pub mod conversation;
pub mod experiment;
pub mod follow;
pub mod personal;
pub mod post;
pub mod stream;
pub mod user;

/// The six domains. Each owns exactly one events table and one event enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    User,
    Follow,
    Conversation,
    Post,
    Stream,
    Experiment,
}

impl Domain {
    pub const ALL: [Domain; 6] = [
        Domain::User,
        Domain::Follow,
        Domain::Conversation,
        Domain::Post,
        Domain::Stream,
        Domain::Experiment,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::User => "user",
            Domain::Follow => "follow",
            Domain::Conversation => "conversation",
            Domain::Post => "post",
            Domain::Stream => "stream",
            Domain::Experiment => "experiment",
        }
    }

    /// The one table this domain's events live in.
    pub const fn events_table(self) -> &'static str {
        match self {
            Domain::User => "user_events",
            Domain::Follow => "follow_events",
            Domain::Conversation => "conversation_events",
            Domain::Post => "post_events",
            Domain::Stream => "stream_events",
            Domain::Experiment => "experiment_events",
        }
    }

    pub fn parse(s: &str) -> Option<Domain> {
        Domain::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused an event and in which request. Stored beside every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by every event caused, directly or through policies, by one client request.
    pub correlation_id: Uuid,
    /// The event (or command) that caused this one, when it was caused by another event.
    pub causation_id: Option<Uuid>,
    /// The authenticated user on whose behalf the command ran.
    pub actor_id: Option<Uuid>,
    /// The HTTP request id (`X-Request-Id`) or CLI invocation id.
    pub request_id: Option<String>,
}

/// A stored payload could not be turned back into a typed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {domain}.{event_type}")]
    UnknownType { domain: Domain, event_type: String },
    #[error("no upcaster for {domain}.{event_type} v{version}")]
    UnknownVersion {
        domain: Domain,
        event_type: String,
        version: i32,
    },
    #[error("payload of {domain}.{event_type} v{version} does not match its schema: {source}")]
    Payload {
        domain: Domain,
        event_type: String,
        version: i32,
        source: serde_json::Error,
    },
}

/// A domain's event enum. Implemented by `domain_events!` in this crate only: the trait is
/// sealed, so the event types of each domain are exactly the ones declared here, and no other
/// crate can declare a type that would be stored in a domain's table (the command side binds
/// each of these types to its one owner, ADR 0008). Outside this crate it cannot be
/// implemented:
///
/// ```compile_fail,E0277
/// use nova_event_schemas::{DecodeError, Domain, DomainEvent};
///
/// #[derive(Debug, Clone)]
/// struct Impostor;
///
/// impl DomainEvent for Impostor {
///     const DOMAIN: Domain = Domain::User;
///     const TYPES: &'static [(&'static str, i32)] = &[("deactivated", 1)];
///     fn event_type(&self) -> &'static str { "deactivated" }
///     fn schema_version(&self) -> i32 { 1 }
///     fn to_payload(&self) -> serde_json::Value { serde_json::Value::Null }
///     fn from_stored(_: &str, _: i32, _: serde_json::Value) -> Result<Self, DecodeError> {
///         Ok(Impostor)
///     }
///     fn current_schemas() -> Vec<(String, serde_json::Value)> { Vec::new() }
/// }
/// ```
pub trait DomainEvent:
    sealed::Sealed + Sized + Clone + std::fmt::Debug + Send + Sync + 'static
{
    const DOMAIN: Domain;
    /// Every (event type, current schema version) this enum can produce.
    const TYPES: &'static [(&'static str, i32)];
    fn event_type(&self) -> &'static str;
    fn schema_version(&self) -> i32;
    /// The payload as stored (the variant's struct, without an enum tag).
    fn to_payload(&self) -> serde_json::Value;
    /// Decodes a stored payload, upcasting older schema versions to the current one.
    fn from_stored(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError>;
    /// JSON Schemas of the current versions, keyed by file name (`<type>.v<N>.json`).
    fn current_schemas() -> Vec<(String, serde_json::Value)>;
    /// JSON Schemas of the older versions still found in stores (the upcasters' inputs), keyed
    /// like [`DomainEvent::current_schemas`]. Their files stay checked in and checked.
    fn superseded_schemas() -> Vec<(String, serde_json::Value)> {
        Vec::new()
    }
}

/// Decodes one payload struct, wrapping serde errors with the event's coordinates.
pub fn decode_payload<T: DeserializeOwned>(
    domain: Domain,
    event_type: &str,
    version: i32,
    payload: serde_json::Value,
) -> Result<T, DecodeError> {
    serde_json::from_value(payload).map_err(|source| DecodeError::Payload {
        domain,
        event_type: event_type.to_owned(),
        version,
        source,
    })
}

/// Serializes a payload struct. Payload structs are plain data (strings, numbers, UUIDs,
/// timestamps), for which serde_json cannot fail.
pub fn encode_payload<T: Serialize>(payload: &T) -> serde_json::Value {
    serde_json::to_value(payload).unwrap_or(serde_json::Value::Null)
}

mod sealed {
    /// Implemented by `domain_events!` only; see [`DomainEvent`](super::DomainEvent).
    pub trait Sealed {}
}

/// Upcasts one stored payload: decodes it as the old version's struct `Old` (errors carry the
/// old coordinates), converts it with `convert` and encodes the result. `convert` reports a
/// value the new type cannot hold as a message, which becomes a [`DecodeError::Payload`].
pub fn upcast_payload<Old: DeserializeOwned, New: Serialize>(
    domain: Domain,
    event_type: &str,
    version: i32,
    payload: serde_json::Value,
    convert: impl FnOnce(Old) -> Result<New, String>,
) -> Result<serde_json::Value, DecodeError> {
    let old: Old = decode_payload(domain, event_type, version, payload)?;
    let new = convert(old).map_err(|message| DecodeError::Payload {
        domain,
        event_type: event_type.to_owned(),
        version,
        source: <serde_json::Error as serde::de::Error>::custom(message),
    })?;
    Ok(encode_payload(&new))
}

/// Declares a domain's event enum: one variant per event type, each wrapping its payload
/// struct, with the type name and schema version that are stored with it. Used by this crate
/// only (`DomainEvent` is sealed).
///
/// `upcast` rewrites a stored `(type, version, payload)` of an older version into the current
/// one (it may use `?` with a [`DecodeError`]); `superseded` lists the payload structs of those
/// older versions, so their checked-in JSON Schemas stay verified. See `README.md` for the
/// procedure of changing an event.
macro_rules! domain_events {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $domain:path {
            $( $variant:ident($payload:ty) = ($ty:literal, $ver:literal) ),+ $(,)?
        }
        upcast($ut:ident, $uv:ident, $up:ident) { $($upcasters:tt)* }
        $( superseded {
            $( $old:ty = ($oty:literal, $over:literal) ),* $(,)?
        } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name { $( $variant($payload) ),+ }

        impl $crate::sealed::Sealed for $name {}

        impl $crate::DomainEvent for $name {
            const DOMAIN: $crate::Domain = $domain;
            const TYPES: &'static [(&'static str, i32)] = &[ $( ($ty, $ver) ),+ ];
            fn event_type(&self) -> &'static str {
                match self { $( $name::$variant(_) => $ty ),+ }
            }
            fn schema_version(&self) -> i32 {
                match self { $( $name::$variant(_) => $ver ),+ }
            }
            fn to_payload(&self) -> serde_json::Value {
                match self { $( $name::$variant(p) => $crate::encode_payload(p) ),+ }
            }
            fn from_stored(
                $ut: &str,
                $uv: i32,
                $up: serde_json::Value,
            ) -> Result<Self, $crate::DecodeError> {
                // Older versions are first brought up to date by the upcasters.
                let ($ut, $uv, $up): (&str, i32, serde_json::Value) = { $($upcasters)* };
                match $ut {
                    $( $ty => {
                        if $uv != $ver {
                            return Err($crate::DecodeError::UnknownVersion {
                                domain: $domain, event_type: $ut.to_owned(), version: $uv,
                            });
                        }
                        Ok($name::$variant($crate::decode_payload($domain, $ut, $uv, $up)?))
                    } )+
                    other => Err($crate::DecodeError::UnknownType {
                        domain: $domain, event_type: other.to_owned(),
                    }),
                }
            }
            fn current_schemas() -> Vec<(String, serde_json::Value)> {
                vec![ $( (
                    format!("{}.v{}.json", $ty, $ver),
                    $crate::encode_payload(&schemars::schema_for!($payload)),
                ) ),+ ]
            }
            fn superseded_schemas() -> Vec<(String, serde_json::Value)> {
                vec![ $( $( (
                    format!("{}.v{}.json", $oty, $over),
                    $crate::encode_payload(&schemars::schema_for!($old)),
                ) ),* )? ]
            }
        }
    };
}
pub(crate) use domain_events;
