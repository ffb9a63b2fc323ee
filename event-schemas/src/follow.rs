//! Events of the `follow` domain (the social graph).
//!
//! One aggregate kind, the relationship between two users (id = [`relationship_id`] of the
//! unordered pair). Both directions of following and of blocking live in that one aggregate, so
//! "a block removes follows both ways" and "no follow across a block" are decided atomically
//! on one stream, with no cross-aggregate coordination.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

/// Namespace for the name-based ids of relationships.
const RELATIONSHIP_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d66_6f6c_6c6f_7772_656c_0001);

/// The aggregate id of the relationship between `a` and `b`; the same for `(b, a)`.
pub fn relationship_id(a: Uuid, b: Uuid) -> Uuid {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(lo.as_bytes());
    name[16..].copy_from_slice(hi.as_bytes());
    Uuid::new_v5(&RELATIONSHIP_NAMESPACE, &name)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Followed {
    pub follower_id: Uuid,
    pub followee_id: Uuid,
    pub followed_at: DateTime<Utc>,
}

/// Why a follow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnfollowReason {
    /// The follower unfollowed.
    Unfollowed,
    /// One of the two blocked the other.
    Blocked,
    /// One of the two deactivated their account (issued by the deactivation policy).
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unfollowed {
    pub follower_id: Uuid,
    pub followee_id: Uuid,
    pub reason: UnfollowReason,
    pub unfollowed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
    pub blocked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unblocked {
    pub blocker_id: Uuid,
    pub blocked_id: Uuid,
    pub unblocked_at: DateTime<Utc>,
}

crate::domain_events! {
    /// Every event the `follow` domain stores.
    pub enum FollowEvent in Domain::Follow {
        Followed(Followed) = ("followed", 1),
        Unfollowed(Unfollowed) = ("unfollowed", 1),
        Blocked(Blocked) = ("blocked", 1),
        Unblocked(Unblocked) = ("unblocked", 1),
    }
    upcast(event_type, version, payload) {
        (event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_id_ignores_order_and_separates_pairs() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(relationship_id(a, b), relationship_id(b, a));
        assert_ne!(relationship_id(a, b), relationship_id(a, c));
    }
}
