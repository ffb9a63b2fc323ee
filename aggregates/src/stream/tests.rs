//! Tests of the `stream` domain: given/when/then examples for every rule, then a property test:
//! over random command sequences a stream never leaves `ended`, never goes live disabled, and
//! the media server gets in only with the current key.

use proptest::prelude::*;

use super::*;
use crate::given::given;

const STREAM: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0101);
const ALICE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const MALLORY: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const KEY1: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a01);
const KEY2: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a02);

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000 + secs, 0).expect("valid timestamp")
}

fn created() -> StreamEvent {
    StreamEvent::Created(Created {
        stream_id: STREAM,
        broadcaster_id: ALICE,
        title: "Live".into(),
        description: None,
        key_id: KEY1,
        created_at: t(0),
    })
}

fn started(trigger: Trigger) -> StreamEvent {
    StreamEvent::Started(Started {
        stream_id: STREAM,
        broadcaster_id: ALICE,
        title: "Live".into(),
        trigger,
        started_at: t(10),
    })
}

fn ended(trigger: Trigger, at: i64, peak: i64, unique: i64) -> StreamEvent {
    StreamEvent::Ended(Ended {
        stream_id: STREAM,
        broadcaster_id: ALICE,
        trigger,
        started_at: t(10),
        ended_at: t(at),
        duration_secs: at - 10,
        peak_viewers: peak,
        unique_viewers: unique,
    })
}

fn rotated(key: Uuid) -> StreamEvent {
    StreamEvent::KeyRotated(KeyRotated {
        stream_id: STREAM,
        key_id: key,
        rotated_at: t(5),
    })
}

fn disabled(at: i64) -> StreamEvent {
    StreamEvent::Disabled(Disabled {
        stream_id: STREAM,
        broadcaster_id: ALICE,
        disabled_at: t(at),
    })
}

fn start(by: By) -> StreamCommand {
    StreamCommand::Start { by, now: t(10) }
}

fn end(by: By, at: i64, peak: i64, unique: i64) -> StreamCommand {
    StreamCommand::End {
        by,
        audience: Audience { peak, unique },
        now: t(at),
    }
}

#[test]
fn create_once() {
    let create = StreamCommand::Create {
        stream_id: STREAM,
        broadcaster: ALICE,
        title: "Live".into(),
        description: None,
        key_id: KEY1,
        now: t(0),
    };
    given::<Stream>([])
        .when(create.clone())
        .then(vec![created()]);
    given::<Stream>([created()])
        .when(create)
        .then_err(StreamError::AlreadyExists);
    given::<Stream>([])
        .when(start(By::User(ALICE)))
        .then_err(StreamError::NotFound);
}

#[test]
fn the_broadcaster_starts_and_ends_with_a_summary() {
    given::<Stream>([created()])
        .when(start(By::User(ALICE)))
        .then(vec![started(Trigger::Broadcaster)]);
    given::<Stream>([created(), started(Trigger::Broadcaster)])
        .when(start(By::User(ALICE)))
        .then(vec![]);
    given::<Stream>([created(), started(Trigger::Broadcaster)])
        .when(end(By::User(ALICE), 70, 3, 5))
        .then(vec![ended(Trigger::Broadcaster, 70, 3, 5)]);
    given::<Stream>([
        created(),
        started(Trigger::Broadcaster),
        ended(Trigger::Broadcaster, 70, 3, 5),
    ])
    .when(end(By::User(ALICE), 80, 0, 0))
    .then(vec![]);
    given::<Stream>([created()])
        .when(end(By::User(ALICE), 80, 0, 0))
        .then_err(StreamError::NotLive);
}

#[test]
fn nobody_else_starts_ends_or_rekeys() {
    given::<Stream>([created()])
        .when(start(By::User(MALLORY)))
        .then_err(StreamError::NotBroadcaster);
    given::<Stream>([created(), started(Trigger::Broadcaster)])
        .when(end(By::User(MALLORY), 20, 0, 0))
        .then_err(StreamError::NotBroadcaster);
    given::<Stream>([created()])
        .when(StreamCommand::RotateKey {
            actor: MALLORY,
            key_id: KEY2,
            now: t(5),
        })
        .then_err(StreamError::NotBroadcaster);
}

#[test]
fn an_ended_stream_stays_ended() {
    let history = [
        created(),
        started(Trigger::Ingest),
        ended(Trigger::Ingest, 30, 0, 0),
    ];
    given::<Stream>(history.clone())
        .when(start(By::User(ALICE)))
        .then_err(StreamError::Ended);
    given::<Stream>(history.clone())
        .when(start(By::Ingest { key_id: KEY1 }))
        .then_err(StreamError::Ended);
    given::<Stream>(history)
        .when(StreamCommand::RotateKey {
            actor: ALICE,
            key_id: KEY2,
            now: t(40),
        })
        .then_err(StreamError::Ended);
}

#[test]
fn ingest_needs_the_current_key() {
    given::<Stream>([created()])
        .when(start(By::Ingest { key_id: KEY1 }))
        .then(vec![started(Trigger::Ingest)]);
    given::<Stream>([created()])
        .when(start(By::Ingest { key_id: KEY2 }))
        .then_err(StreamError::KeyRefused);
    // After a rotation the old key is refused at once and the new one works.
    given::<Stream>([created()])
        .when(StreamCommand::RotateKey {
            actor: ALICE,
            key_id: KEY2,
            now: t(5),
        })
        .then(vec![rotated(KEY2)]);
    given::<Stream>([created(), rotated(KEY2)])
        .when(start(By::Ingest { key_id: KEY1 }))
        .then_err(StreamError::KeyRefused);
    given::<Stream>([created(), rotated(KEY2)])
        .when(start(By::Ingest { key_id: KEY2 }))
        .then(vec![started(Trigger::Ingest)]);
    given::<Stream>([created(), rotated(KEY2), started(Trigger::Ingest)])
        .when(end(By::Ingest { key_id: KEY1 }, 20, 0, 0))
        .then_err(StreamError::KeyRefused);
}

#[test]
fn disabling_ends_a_live_stream_and_refuses_its_key() {
    given::<Stream>([created(), started(Trigger::Ingest)])
        .when(StreamCommand::Disable {
            audience: Audience { peak: 2, unique: 4 },
            now: t(100),
        })
        .then(vec![ended(Trigger::Deactivation, 100, 2, 4), disabled(100)]);
    given::<Stream>([created()])
        .when(StreamCommand::Disable {
            audience: Audience::default(),
            now: t(100),
        })
        .then(vec![disabled(100)]);
    given::<Stream>([created(), disabled(100)])
        .when(StreamCommand::Disable {
            audience: Audience::default(),
            now: t(110),
        })
        .then(vec![]);
    given::<Stream>([created(), disabled(100)])
        .when(start(By::Ingest { key_id: KEY1 }))
        .then_err(StreamError::KeyRefused);
    given::<Stream>([created(), disabled(100)])
        .when(start(By::User(ALICE)))
        .then_err(StreamError::Disabled);
}

#[derive(Debug, Clone)]
enum Op {
    Start(u8),
    End(u8),
    Rotate,
    Disable,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Start),
        (0u8..4).prop_map(Op::End),
        Just(Op::Rotate),
        Just(Op::Disable),
    ]
}

proptest! {
    /// Whatever happens: no event after `ended` makes the stream live again, a disabled stream
    /// never starts, and an ingest start is accepted only with the key of the latest rotation.
    #[test]
    fn lifecycle_invariants(ops in proptest::collection::vec(op(), 0..40)) {
        let mut state = Stream::apply_event(StreamState::default(), created());
        let mut current_key = KEY1;
        let mut ended_once = false;
        for (i, op) in ops.into_iter().enumerate() {
            let now = t(20 + i as i64);
            let old_keys = [KEY1, KEY2, Uuid::from_u128(7)];
            let by = |n: u8| match n {
                0 => By::User(ALICE),
                1 => By::User(MALLORY),
                2 => By::Ingest { key_id: current_key },
                _ => By::Ingest { key_id: old_keys[i % 3] },
            };
            let command = match op {
                Op::Start(n) => StreamCommand::Start { by: by(n), now },
                Op::End(n) => StreamCommand::End { by: by(n), audience: Audience::default(), now },
                Op::Rotate => StreamCommand::RotateKey {
                    actor: ALICE,
                    key_id: Uuid::from_u128(1000 + i as u128),
                    now,
                },
                Op::Disable => StreamCommand::Disable { audience: Audience::default(), now },
            };
            let before = state.broadcast.clone().expect("created");
            if let Ok(events) = Stream::handle_command(&state, command.clone()) {
                for e in events {
                    if let StreamEvent::Started(_) = e {
                        prop_assert!(!ended_once && !before.disabled);
                        if let StreamCommand::Start { by: By::Ingest { key_id }, .. } = command {
                            prop_assert_eq!(key_id, current_key);
                        }
                    }
                    if let StreamEvent::Ended(_) = e {
                        ended_once = true;
                    }
                    if let StreamEvent::KeyRotated(k) = &e {
                        current_key = k.key_id;
                    }
                    state = Stream::apply_event(state, e);
                }
            }
            let after = state.broadcast.clone().expect("created");
            if ended_once {
                prop_assert_eq!(after.status, Status::Ended);
            }
            prop_assert_eq!(after.key_id, current_key);
        }
    }
}
