//! Which stored fields are a person's personal data, and whose (ADR 0025).
//!
//! From the versions listed here on, these fields are stored *sealed*: encrypted under a data
//! key of their owner, held by the user domain outside the events. The event store seals them
//! on append and opens them on read (`nova_infra::personal`); destroying the owner's key
//! (erasure) leaves them unreadable for good, and they then read as [`ERASED`]. Older versions
//! of the same events were stored in plaintext and are read as they are.
//!
//! The payload structs keep their plain `String` fields: a consumer only ever sees the opened
//! value (or [`ERASED`]), never the sealed form.

use crate::Domain;

/// What an erased field reads as, in every consumer (aggregates, projections, policies, export,
/// time travel).
pub const ERASED: &str = "[erased]";

/// True if `value` is the marker of erased personal data.
pub fn is_erased(value: &str) -> bool {
    value == ERASED
}

/// Whose data key seals an event's personal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The user id in this payload field.
    Field(&'static str),
    /// The aggregate the event belongs to (a user's own stream).
    Aggregate,
    /// The user the command ran for (`EventMetadata::actor_id`): for an event that names no
    /// owner itself, such as a post's edit (only its author can edit).
    Actor,
}

/// The personal fields of one event type, from a schema version on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalFields {
    pub domain: Domain,
    pub event_type: &'static str,
    /// The first schema version whose fields are sealed; earlier versions are plaintext.
    pub sealed_from: i32,
    pub owner: Owner,
    /// Top-level payload fields: a string, an optional string (null stays null) or an array of
    /// strings (each element sealed on its own).
    pub fields: &'static [&'static str],
}

/// The list decided in ADR 0025. A new event type carrying text a person wrote or that
/// identifies them gets a line here (and a version whose schema says the fields are sealed).
pub const PERSONAL: &[PersonalFields] = &[
    PersonalFields {
        domain: Domain::User,
        event_type: "username_claimed",
        sealed_from: 2,
        owner: Owner::Field("user_id"),
        fields: &["username"],
    },
    PersonalFields {
        domain: Domain::User,
        event_type: "registered",
        sealed_from: 3,
        owner: Owner::Field("user_id"),
        fields: &["username", "display_name"],
    },
    PersonalFields {
        domain: Domain::User,
        event_type: "profile_updated",
        sealed_from: 2,
        owner: Owner::Aggregate,
        fields: &["display_name", "status", "profile_picture_url"],
    },
    PersonalFields {
        domain: Domain::Post,
        event_type: "created",
        sealed_from: 2,
        owner: Owner::Field("author_id"),
        fields: &["content", "media_urls"],
    },
    PersonalFields {
        domain: Domain::Post,
        event_type: "edited",
        sealed_from: 2,
        owner: Owner::Actor,
        fields: &["content", "media_urls"],
    },
    PersonalFields {
        domain: Domain::Post,
        event_type: "comment_added",
        sealed_from: 2,
        owner: Owner::Field("author_id"),
        fields: &["content"],
    },
    PersonalFields {
        domain: Domain::Stream,
        event_type: "created",
        sealed_from: 2,
        owner: Owner::Field("broadcaster_id"),
        fields: &["title", "description"],
    },
];

/// The personal fields of a stored `(domain, event_type, schema_version)`, if that version
/// stores them sealed.
pub fn sealed_fields(
    domain: Domain,
    event_type: &str,
    schema_version: i32,
) -> Option<&'static PersonalFields> {
    PERSONAL.iter().find(|p| {
        p.domain == domain && p.event_type == event_type && schema_version >= p.sealed_from
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    /// Every line names a current event type whose current version is sealed, and fields the
    /// payload has.
    #[test]
    fn every_personal_line_matches_a_current_event_version() {
        fn types(domain: Domain) -> &'static [(&'static str, i32)] {
            match domain {
                Domain::User => crate::user::UserEvent::TYPES,
                Domain::Post => crate::post::PostEvent::TYPES,
                Domain::Stream => crate::stream::StreamEvent::TYPES,
                Domain::Follow => crate::follow::FollowEvent::TYPES,
                Domain::Conversation => crate::conversation::ConversationEvent::TYPES,
                Domain::Experiment => crate::experiment::ExperimentEvent::TYPES,
            }
        }
        for p in PERSONAL {
            let current = types(p.domain)
                .iter()
                .find(|(t, _)| *t == p.event_type)
                .map(|(_, v)| *v);
            assert_eq!(
                current,
                Some(p.sealed_from),
                "{}.{}",
                p.domain,
                p.event_type
            );
            assert!(sealed_fields(p.domain, p.event_type, p.sealed_from).is_some());
            assert!(sealed_fields(p.domain, p.event_type, p.sealed_from - 1).is_none());
        }
    }
}
