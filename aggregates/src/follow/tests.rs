//! Tests of the `follow` domain: given/when/then examples for every rule, then property tests
//! that drive random command sequences through `handle_command` + `apply_event` and compare
//! with a plain set-based model.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::given::given;

const A: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000a);
const B: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000b);
const C: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000c);

/// 2024-06-01T00:00:00Z.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000, 0).expect("valid timestamp")
}

fn fold(events: impl IntoIterator<Item = FollowEvent>) -> RelationshipState {
    events
        .into_iter()
        .fold(RelationshipState::default(), Relationship::apply_event)
}

fn follow(actor: Uuid, target: Uuid) -> FollowCommand {
    FollowCommand::Follow {
        actor,
        target,
        now: t0(),
    }
}
fn unfollow_cmd(actor: Uuid, target: Uuid) -> FollowCommand {
    FollowCommand::Unfollow {
        actor,
        target,
        now: t0(),
    }
}
fn block(actor: Uuid, target: Uuid) -> FollowCommand {
    FollowCommand::Block {
        actor,
        target,
        now: t0(),
    }
}
fn unblock(actor: Uuid, target: Uuid) -> FollowCommand {
    FollowCommand::Unblock {
        actor,
        target,
        now: t0(),
    }
}
fn remove(user: Uuid) -> FollowCommand {
    FollowCommand::RemoveUser { user, now: t0() }
}

fn followed(from: Uuid, to: Uuid) -> FollowEvent {
    FollowEvent::Followed(Followed {
        follower_id: from,
        followee_id: to,
        followed_at: t0(),
    })
}
fn unfollowed(from: Uuid, to: Uuid, reason: UnfollowReason) -> FollowEvent {
    FollowEvent::Unfollowed(Unfollowed {
        follower_id: from,
        followee_id: to,
        reason,
        unfollowed_at: t0(),
    })
}
fn blocked(by: Uuid, whom: Uuid) -> FollowEvent {
    FollowEvent::Blocked(Blocked {
        blocker_id: by,
        blocked_id: whom,
        blocked_at: t0(),
    })
}
fn unblocked(by: Uuid, whom: Uuid) -> FollowEvent {
    FollowEvent::Unblocked(Unblocked {
        blocker_id: by,
        blocked_id: whom,
        unblocked_at: t0(),
    })
}

// ---------------------------------------------------------------------------------------------
// Follow and unfollow.
// ---------------------------------------------------------------------------------------------

#[test]
fn follow_emits_followed() {
    given::<Relationship>([])
        .when(follow(A, B))
        .then(vec![followed(A, B)]);
    // Direction matters: the pair's order is not the follow's.
    given::<Relationship>([])
        .when(follow(B, A))
        .then(vec![followed(B, A)]);
}

#[test]
fn followed_state_records_one_direction() {
    let s = fold([followed(B, A)]);
    assert!(s.follows(B, A));
    assert!(!s.follows(A, B));
    assert_eq!(s.pair, Some((A, B)));
    assert_eq!(s.edges(), vec![(B, A)]);
}

#[test]
fn following_twice_appends_nothing() {
    given::<Relationship>([followed(A, B)])
        .when(follow(A, B))
        .then(vec![]);
}

#[test]
fn following_back_is_a_new_follow() {
    given::<Relationship>([followed(A, B)])
        .when(follow(B, A))
        .then(vec![followed(B, A)]);
}

#[test]
fn self_follow_is_refused() {
    given::<Relationship>([])
        .when(follow(A, A))
        .then_err(FollowError::SelfFollow);
    given::<Relationship>([])
        .when(unfollow_cmd(A, A))
        .then_err(FollowError::SelfFollow);
}

#[test]
fn unfollow_ends_the_follow() {
    given::<Relationship>([followed(A, B), followed(B, A)])
        .when(unfollow_cmd(A, B))
        .then(vec![unfollowed(A, B, UnfollowReason::Unfollowed)]);
}

#[test]
fn unfollow_when_not_following_appends_nothing() {
    given::<Relationship>([])
        .when(unfollow_cmd(A, B))
        .then(vec![]);
    given::<Relationship>([followed(B, A)])
        .when(unfollow_cmd(A, B))
        .then(vec![]);
    given::<Relationship>([followed(A, B), unfollowed(A, B, UnfollowReason::Unfollowed)])
        .when(unfollow_cmd(A, B))
        .then(vec![]);
}

#[test]
fn follow_is_refused_across_a_block_either_way_with_the_same_error() {
    given::<Relationship>([blocked(B, A)])
        .when(follow(A, B))
        .then_err(FollowError::Blocked);
    given::<Relationship>([blocked(A, B)])
        .when(follow(A, B))
        .then_err(FollowError::Blocked);
}

#[test]
fn a_command_for_another_pair_is_refused() {
    given::<Relationship>([followed(A, B)])
        .when(follow(A, C))
        .then_err(FollowError::WrongPair);
    given::<Relationship>([followed(A, B)])
        .when(block(C, B))
        .then_err(FollowError::WrongPair);
}

// ---------------------------------------------------------------------------------------------
// Block and unblock.
// ---------------------------------------------------------------------------------------------

#[test]
fn block_emits_blocked() {
    given::<Relationship>([])
        .when(block(A, B))
        .then(vec![blocked(A, B)]);
}

#[test]
fn block_ends_follows_in_both_directions_first() {
    given::<Relationship>([followed(A, B), followed(B, A)])
        .when(block(A, B))
        .then(vec![
            unfollowed(A, B, UnfollowReason::Blocked),
            unfollowed(B, A, UnfollowReason::Blocked),
            blocked(A, B),
        ]);
    given::<Relationship>([followed(B, A)])
        .when(block(A, B))
        .then(vec![
            unfollowed(B, A, UnfollowReason::Blocked),
            blocked(A, B),
        ]);
}

#[test]
fn blocking_twice_appends_nothing() {
    given::<Relationship>([blocked(A, B)])
        .when(block(A, B))
        .then(vec![]);
}

#[test]
fn both_may_block_each_other() {
    given::<Relationship>([blocked(A, B)])
        .when(block(B, A))
        .then(vec![blocked(B, A)]);
}

#[test]
fn self_block_is_refused() {
    given::<Relationship>([])
        .when(block(A, A))
        .then_err(FollowError::SelfBlock);
    given::<Relationship>([])
        .when(unblock(A, A))
        .then_err(FollowError::SelfBlock);
}

#[test]
fn unblock_lifts_the_block() {
    given::<Relationship>([blocked(A, B)])
        .when(unblock(A, B))
        .then(vec![unblocked(A, B)]);
}

#[test]
fn unblock_when_not_blocked_appends_nothing() {
    given::<Relationship>([]).when(unblock(A, B)).then(vec![]);
    // The blocked user cannot lift the other's block.
    given::<Relationship>([blocked(A, B)])
        .when(unblock(B, A))
        .then(vec![]);
}

#[test]
fn unblock_does_not_restore_follows() {
    let s = fold([
        followed(A, B),
        followed(B, A),
        unfollowed(A, B, UnfollowReason::Blocked),
        unfollowed(B, A, UnfollowReason::Blocked),
        blocked(A, B),
        unblocked(A, B),
    ]);
    assert!(s.edges().is_empty());
    assert!(!s.any_block());
}

#[test]
fn follow_is_allowed_after_unblock_unless_the_other_still_blocks() {
    given::<Relationship>([blocked(A, B), unblocked(A, B)])
        .when(follow(B, A))
        .then(vec![followed(B, A)]);
    given::<Relationship>([blocked(A, B), blocked(B, A), unblocked(A, B)])
        .when(follow(A, B))
        .then_err(FollowError::Blocked);
}

// ---------------------------------------------------------------------------------------------
// Removal of a deactivated user.
// ---------------------------------------------------------------------------------------------

#[test]
fn remove_user_ends_every_follow_of_the_user_and_keeps_blocks() {
    given::<Relationship>([followed(A, B), followed(B, A)])
        .when(remove(B))
        .then(vec![
            unfollowed(A, B, UnfollowReason::Deactivated),
            unfollowed(B, A, UnfollowReason::Deactivated),
        ]);
    let events = given::<Relationship>([blocked(A, B)])
        .when(remove(A))
        .events();
    assert!(events.is_empty());
    assert!(fold([blocked(A, B)]).blocks(A, B));
}

#[test]
fn remove_user_is_idempotent_and_ignores_strangers() {
    given::<Relationship>([
        followed(A, B),
        unfollowed(A, B, UnfollowReason::Deactivated),
    ])
    .when(remove(B))
    .then(vec![]);
    given::<Relationship>([]).when(remove(A)).then(vec![]);
    given::<Relationship>([followed(A, B)])
        .when(remove(C))
        .then(vec![]);
}

// ---------------------------------------------------------------------------------------------
// Properties over random command sequences.
// ---------------------------------------------------------------------------------------------

/// The rules restated over plain sets, independently of the aggregate's representation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Model {
    follows: BTreeSet<(Uuid, Uuid)>,
    blocks: BTreeSet<(Uuid, Uuid)>,
}

impl Model {
    fn any_block(&self, x: Uuid, y: Uuid) -> bool {
        self.blocks.contains(&(x, y)) || self.blocks.contains(&(y, x))
    }

    /// Returns whether the command is refused.
    fn step(&mut self, c: &FollowCommand) -> bool {
        match *c {
            FollowCommand::Follow { actor, target, .. } => {
                if actor == target || self.any_block(actor, target) {
                    return true;
                }
                self.follows.insert((actor, target));
            }
            FollowCommand::Unfollow { actor, target, .. } => {
                if actor == target {
                    return true;
                }
                self.follows.remove(&(actor, target));
            }
            FollowCommand::Block { actor, target, .. } => {
                if actor == target {
                    return true;
                }
                self.follows.remove(&(actor, target));
                self.follows.remove(&(target, actor));
                self.blocks.insert((actor, target));
            }
            FollowCommand::Unblock { actor, target, .. } => {
                if actor == target {
                    return true;
                }
                self.blocks.remove(&(actor, target));
            }
            FollowCommand::RemoveUser { user, .. } => {
                self.follows.retain(|(f, t)| *f != user && *t != user);
            }
        }
        false
    }

    fn of(state: &RelationshipState) -> Model {
        let mut m = Model::default();
        if let Some((a, b)) = state.pair {
            let pick = |flag: bool, pair| flag.then_some(pair);
            m.follows.extend(pick(state.a_follows_b, (a, b)));
            m.follows.extend(pick(state.b_follows_a, (b, a)));
            m.blocks.extend(pick(state.a_blocks_b, (a, b)));
            m.blocks.extend(pick(state.b_blocks_a, (b, a)));
        }
        m
    }
}

fn user() -> impl Strategy<Value = Uuid> {
    // Mostly the pair, sometimes the same user twice (self-commands).
    prop_oneof![4 => Just(A), 4 => Just(B)]
}

fn command() -> impl Strategy<Value = FollowCommand> {
    (0..5u8, user(), user(), 0..1_000i64).prop_map(|(kind, actor, target, secs)| {
        let now = t0() + chrono::Duration::seconds(secs);
        match kind {
            0 => FollowCommand::Follow { actor, target, now },
            1 => FollowCommand::Unfollow { actor, target, now },
            2 => FollowCommand::Block { actor, target, now },
            3 => FollowCommand::Unblock { actor, target, now },
            _ => FollowCommand::RemoveUser { user: actor, now },
        }
    })
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(commands in prop::collection::vec(command(), 0..40)) {
        let mut state = RelationshipState::default();
        let mut history = Vec::new();
        let mut model = Model::default();
        for c in commands {
            let refused = model.step(&c);
            match Relationship::handle_command(&state, c.clone()) {
                Ok(events) => {
                    prop_assert!(!refused, "{c:?} should be refused");
                    for e in events {
                        state = Relationship::apply_event(state, e.clone());
                        history.push(e);
                    }
                    // Idempotence: the same command again decides nothing.
                    let again = Relationship::handle_command(&state, c.clone());
                    prop_assert_eq!(again, Ok(vec![]), "repeating {:?}", c);
                }
                Err(e) => prop_assert!(refused, "{c:?} refused with {e:?}"),
            }
            // Never a follow while a block exists, in either direction.
            prop_assert!(!state.any_block() || state.edges().is_empty(), "{state:?}");
            // The state is the fold of the history, and agrees with the model.
            prop_assert_eq!(&fold(history.clone()), &state);
            prop_assert_eq!(Model::of(&state), model.clone());
        }
    }

    #[test]
    fn every_event_changes_the_state(commands in prop::collection::vec(command(), 0..40)) {
        // No command appends a no-op event: each one flips exactly what it says.
        let mut state = RelationshipState::default();
        for c in commands {
            if let Ok(events) = Relationship::handle_command(&state, c) {
                for e in events {
                    let next = Relationship::apply_event(state.clone(), e.clone());
                    prop_assert_ne!(&next, &state, "{:?} changed nothing", e);
                    state = next;
                }
            }
        }
    }
}
