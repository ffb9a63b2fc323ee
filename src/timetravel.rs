//! Time travel for analysts (API.md "Analysts and ops", ADR 0024): any aggregate's state at a
//! version or at an instant, folded with its own `esrs::Aggregate::apply_event` over its events
//! as the store holds them, each upcast to its latest schema version. Shared by
//! `GET /v1/aggregates/{domain}/{id}/state` and `nova aggregates state`.
//!
//! The per-domain dispatch is the table [`AGGREGATES`]: one line per aggregate type. A domain
//! with no line has no aggregates yet and answers [`StateError::NoAggregates`].

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_aggregates::{conversation, experiment, follow, post, stream, user};
use nova_event_schemas::{DecodeError, Domain, DomainEvent};
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use serde::Serialize;
use uuid::Uuid;

/// Folds an aggregate's events (upcast) into its state, as JSON.
type Fold = fn(&[RecordedEvent]) -> Result<serde_json::Value, StateError>;

/// Every aggregate whose state can be asked for: (domain, `aggregate_type`, its fold). A new
/// domain adds one line per aggregate type (a test checks that every type the ownership
/// matrix lists is here).
pub const AGGREGATES: &[(Domain, &str, Fold)] = &[
    (Domain::User, user::User::NAME, fold::<user::User>),
    (
        Domain::User,
        user::UsernameClaim::NAME,
        fold::<user::UsernameClaim>,
    ),
    (
        Domain::Follow,
        follow::Relationship::NAME,
        fold::<follow::Relationship>,
    ),
    (Domain::Post, post::Post::NAME, fold::<post::Post>),
    (Domain::Post, post::Like::NAME, fold::<post::Like>),
    (Domain::Post, post::Bookmark::NAME, fold::<post::Bookmark>),
    (
        Domain::Experiment,
        experiment::Experiment::NAME,
        fold::<experiment::Experiment>,
    ),
    (
        Domain::Experiment,
        experiment::Participant::NAME,
        fold::<experiment::Participant>,
    ),
    (Domain::Stream, stream::Stream::NAME, fold::<stream::Stream>),
    (
        Domain::Conversation,
        conversation::Conversation::NAME,
        fold::<conversation::Conversation>,
    ),
];

fn fold<A>(events: &[RecordedEvent]) -> Result<serde_json::Value, StateError>
where
    A: Aggregate,
    A::Event: DomainEvent,
    A::State: Serialize,
{
    let mut state = A::State::default();
    for e in events {
        state = A::apply_event(state, e.decode::<A::Event>()?);
    }
    serde_json::to_value(&state).map_err(|e| StateError::Serialize(e.to_string()))
}

/// Which point of an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After its latest event.
    Current,
    /// After the event with this version (1 = the first).
    Version(i64),
    /// After its last event recorded at or before this instant (inclusive).
    Instant(DateTime<Utc>),
}

impl At {
    /// From the two optional query parameters; both at once are refused (there is no order in
    /// which they would both hold in general).
    pub fn from_params(
        version: Option<i64>,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<At, StateError> {
        match (version, as_of) {
            (Some(_), Some(_)) => Err(StateError::Invalid(
                "give either version or as_of, not both",
            )),
            (Some(v), None) if v < 1 => Err(StateError::Invalid("version must be at least 1")),
            (Some(v), None) => Ok(At::Version(v)),
            (None, Some(t)) => Ok(At::Instant(t)),
            (None, None) => Ok(At::Current),
        }
    }
}

/// An aggregate's state at a point of its history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StateAt {
    #[schema(value_type = String)]
    pub domain: Domain,
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    /// Version of the last event folded in.
    pub version: i64,
    /// The instant asked for, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// When the last event folded in was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The aggregate's state struct, serialized.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the {0} domain has no aggregates yet")]
    NoAggregates(Domain),
    #[error("no such aggregate")]
    UnknownAggregate,
    #[error("the aggregate did not exist yet at that instant")]
    NotYet,
    #[error("the aggregate has {last} version(s)")]
    BeyondLast { last: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("aggregate type {0} has no fold (a line is missing in timetravel::AGGREGATES)")]
    NoFold(String),
    #[error("state does not serialize: {0}")]
    Serialize(String),
}

/// The state of aggregate `id` of `domain` at `at`.
pub async fn state_at(
    store: &EventStore,
    domain: Domain,
    id: Uuid,
    at: At,
) -> Result<StateAt, StateError> {
    if !AGGREGATES.iter().any(|(d, _, _)| *d == domain) {
        return Err(StateError::NoAggregates(domain));
    }
    // An aggregate's whole history (its state is in memory anyway when it is loaded for a
    // command); the cut is taken here.
    let mut events = store.load(domain, id, 0).await?;
    let Some(first) = events.first() else {
        return Err(StateError::UnknownAggregate);
    };
    let aggregate_type = first.aggregate_type.clone();
    let fold = AGGREGATES
        .iter()
        .find(|(d, t, _)| *d == domain && *t == aggregate_type)
        .map(|(_, _, f)| *f)
        .ok_or_else(|| StateError::NoFold(aggregate_type.clone()))?;
    let last = events.last().map_or(0, |e| e.version);
    let keep = match at {
        At::Current => events.len(),
        At::Version(v) if v > last => return Err(StateError::BeyondLast { last }),
        At::Version(v) => events.iter().take_while(|e| e.version <= v).count(),
        // A prefix: versions are recorded in order, and should a clock step back, the state is
        // still one the aggregate really had.
        At::Instant(t) => events.iter().take_while(|e| e.recorded_at <= t).count(),
    };
    events.truncate(keep);
    let Some(tip) = events.last() else {
        return Err(StateError::NotYet);
    };
    Ok(StateAt {
        domain,
        aggregate_id: id,
        aggregate_type,
        version: tip.version,
        as_of: match at {
            At::Instant(t) => Some(t),
            _ => None,
        },
        recorded_at: tip.recorded_at,
        state: fold(&events)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every aggregate type the aggregates crate lists (as the ownership matrix reads them) has
    /// its line, and no line names another.
    #[test]
    fn every_aggregate_type_has_a_fold() {
        let mut listed = 0;
        for domain in Domain::ALL {
            for t in crate::boundaries::aggregate_types(domain) {
                assert!(
                    AGGREGATES.iter().any(|(d, n, _)| *d == domain && n == t),
                    "{domain}.{t} is missing in AGGREGATES"
                );
                listed += 1;
            }
        }
        assert_eq!(AGGREGATES.len(), listed);
    }

    /// The states of the domains merged after this table was written have a JSON form, also
    /// with their maps and sets filled (a map keyed by a pair would have none).
    #[test]
    fn stream_and_conversation_states_serialize() {
        use std::collections::{BTreeMap, BTreeSet};
        let (a, b, m) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let conversation = conversation::ConversationState {
            id: Some(Uuid::now_v7()),
            members: BTreeSet::from([a, b]),
            admins: BTreeSet::from([a]),
            last_seq: 1,
            messages: BTreeMap::from([(
                m,
                conversation::MessageInfo {
                    seq: 1,
                    sender: a,
                    recalled: false,
                },
            )]),
            client_ids: BTreeMap::from([((a, "c1".to_owned()), (m, 1))]),
            reactions: BTreeSet::from([(m, b, "ok".to_owned())]),
            read: BTreeMap::from([(b, 1)]),
            ..Default::default()
        };
        let json = serde_json::to_value(&conversation).unwrap();
        assert_eq!(json["last_seq"], 1);
        assert!(json.get("client_ids").is_none());
        let stream = serde_json::to_value(stream::StreamState::default()).unwrap();
        assert!(stream["broadcast"].is_null());
    }

    #[test]
    fn version_and_as_of_are_exclusive() {
        assert!(At::from_params(Some(1), Some(Utc::now())).is_err());
        assert!(At::from_params(Some(0), None).is_err());
        assert_eq!(At::from_params(None, None).unwrap(), At::Current);
        assert_eq!(At::from_params(Some(3), None).unwrap(), At::Version(3));
    }
}
