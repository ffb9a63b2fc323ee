//! Tests of the `experiment` domain: given/when/then examples for every rule of both
//! aggregates, then property tests: random participant command sequences keep stickiness and
//! count-once, and assignment over 100,000 random ids splits traffic as the weights say.

use proptest::prelude::*;

use super::*;
use crate::given::given;

const USER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const OTHER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000, 0).expect("valid timestamp")
}

fn variants(weights: &[(&str, f64)]) -> Vec<Variant> {
    weights
        .iter()
        .map(|&(name, weight)| Variant {
            name: name.to_owned(),
            weight,
        })
        .collect()
}

fn created() -> ExperimentEvent {
    ExperimentEvent::Created(Created {
        key: "checkout".into(),
        variants: variants(&[("control", 50.0), ("treatment", 50.0)]),
        coverage: 1.0,
        seed: "checkout".into(),
        created_at: t0(),
    })
}

fn started() -> ExperimentEvent {
    ExperimentEvent::Started(Started {
        key: "checkout".into(),
        started_at: t0(),
    })
}

fn stopped() -> ExperimentEvent {
    ExperimentEvent::Stopped(Stopped {
        key: "checkout".into(),
        stopped_at: t0(),
    })
}

fn create() -> ExperimentCommand {
    ExperimentCommand::Create {
        key: "checkout".into(),
        variants: variants(&[("control", 50.0), ("treatment", 50.0)]),
        coverage: 1.0,
        seed: "checkout".into(),
        now: t0(),
    }
}

fn update(weights: Option<&[(&str, f64)]>, coverage: Option<f64>) -> ExperimentCommand {
    ExperimentCommand::Update {
        variants: weights.map(variants),
        coverage,
        now: t0(),
    }
}

#[test]
fn an_experiment_is_created_once() {
    given::<Experiment>([]).when(create()).then(vec![created()]);
    given::<Experiment>([created()])
        .when(create())
        .then_err(ExperimentError::AlreadyExists);
}

#[test]
fn lifecycle_is_draft_running_stopped() {
    let start = || ExperimentCommand::Start { now: t0() };
    let stop = || ExperimentCommand::Stop { now: t0() };
    given::<Experiment>([])
        .when(start())
        .then_err(ExperimentError::NotFound);
    given::<Experiment>([created()])
        .when(start())
        .then(vec![started()]);
    given::<Experiment>([created(), started()])
        .when(start())
        .then(vec![]);
    given::<Experiment>([created(), started(), stopped()])
        .when(start())
        .then_err(ExperimentError::Stopped);
    given::<Experiment>([created()])
        .when(stop())
        .then_err(ExperimentError::NotStarted);
    given::<Experiment>([created(), started()])
        .when(stop())
        .then(vec![stopped()]);
    given::<Experiment>([created(), started(), stopped()])
        .when(stop())
        .then(vec![]);
}

#[test]
fn a_running_experiment_changes_weights_but_not_names() {
    let events = given::<Experiment>([created(), started()])
        .when(update(
            Some(&[("control", 20.0), ("treatment", 80.0)]),
            Some(0.5),
        ))
        .events();
    assert_eq!(
        events,
        vec![ExperimentEvent::Updated(Updated {
            key: "checkout".into(),
            variants: variants(&[("control", 20.0), ("treatment", 80.0)]),
            coverage: 0.5,
            updated_at: t0(),
        })]
    );
    given::<Experiment>([created(), started()])
        .when(update(Some(&[("control", 50.0), ("other", 50.0)]), None))
        .then_err(ExperimentError::VariantsChanged);
    // A draft may still be reshaped.
    assert_eq!(
        given::<Experiment>([created()])
            .when(update(Some(&[("a", 30.0), ("b", 30.0), ("c", 40.0)]), None))
            .events()
            .len(),
        1
    );
    // Nothing changes: nothing appended.
    given::<Experiment>([created(), started()])
        .when(update(None, Some(1.0)))
        .then(vec![]);
    given::<Experiment>([created(), started(), stopped()])
        .when(update(None, Some(0.5)))
        .then_err(ExperimentError::Stopped);
}

fn expose(user: Uuid, variant: &str) -> ParticipantCommand {
    ParticipantCommand::Expose {
        key: "checkout".into(),
        user,
        variant: variant.into(),
        now: t0(),
    }
}

fn convert(user: Uuid, metric: &str) -> ParticipantCommand {
    ParticipantCommand::Convert {
        key: "checkout".into(),
        user,
        metric: metric.into(),
        now: t0(),
    }
}

fn exposed(variant: &str) -> ExperimentEvent {
    ExperimentEvent::Exposed(Exposed {
        experiment_key: "checkout".into(),
        user_id: USER,
        variant: variant.into(),
        exposed_at: t0(),
    })
}

fn converted(metric: &str, variant: &str) -> ExperimentEvent {
    ExperimentEvent::Converted(Converted {
        experiment_key: "checkout".into(),
        user_id: USER,
        metric: metric.into(),
        variant: variant.into(),
        converted_at: t0(),
    })
}

fn withdrawn() -> ExperimentEvent {
    ExperimentEvent::Withdrawn(Withdrawn {
        experiment_key: "checkout".into(),
        user_id: USER,
        withdrawn_at: t0(),
    })
}

#[test]
fn the_first_exposure_sticks() {
    given::<Participant>([])
        .when(expose(USER, "treatment"))
        .then(vec![exposed("treatment")]);
    // Weights changed since: the handler computes another variant, the participant keeps its own.
    given::<Participant>([exposed("treatment")])
        .when(expose(USER, "control"))
        .then(vec![]);
}

#[test]
fn conversions_count_once_and_only_after_exposure() {
    given::<Participant>([])
        .when(convert(USER, "purchase"))
        .then(vec![]);
    given::<Participant>([exposed("treatment")])
        .when(convert(USER, "purchase"))
        .then(vec![converted("purchase", "treatment")]);
    given::<Participant>([exposed("treatment"), converted("purchase", "treatment")])
        .when(convert(USER, "purchase"))
        .then(vec![]);
    given::<Participant>([exposed("treatment"), converted("purchase", "treatment")])
        .when(convert(USER, "signup"))
        .then(vec![converted("signup", "treatment")]);
}

#[test]
fn a_withdrawn_participant_stops_counting() {
    let withdraw = || ParticipantCommand::Withdraw {
        key: "checkout".into(),
        user: USER,
        now: t0(),
    };
    given::<Participant>([exposed("control")])
        .when(withdraw())
        .then(vec![withdrawn()]);
    given::<Participant>([exposed("control"), withdrawn()])
        .when(withdraw())
        .then(vec![]);
    given::<Participant>([exposed("control"), withdrawn()])
        .when(convert(USER, "purchase"))
        .then(vec![]);
    given::<Participant>([withdrawn()])
        .when(expose(USER, "control"))
        .then(vec![]);
}

#[test]
fn a_participant_stream_is_for_one_user() {
    given::<Participant>([exposed("control")])
        .when(convert(OTHER, "purchase"))
        .then_err(ExperimentError::WrongParticipant);
}

fn participant_command() -> impl Strategy<Value = ParticipantCommand> {
    let variant = prop_oneof![Just("control"), Just("treatment")];
    let metric = prop_oneof![Just("purchase"), Just("signup")];
    prop_oneof![
        variant.prop_map(|v| expose(USER, v)),
        metric.prop_map(|m| convert(USER, m)),
        Just(ParticipantCommand::Withdraw {
            key: "checkout".into(),
            user: USER,
            now: t0(),
        }),
    ]
}

/// A small deterministic generator for ids (splitmix64), seeded by proptest.
fn ids(seed: u64, n: usize) -> impl Iterator<Item = Uuid> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n).map(move |_| {
        uuid::Builder::from_random_bytes(
            ((u128::from(next()) << 64) | u128::from(next())).to_le_bytes(),
        )
        .into_uuid()
    })
}

proptest! {
    #[test]
    fn exposure_sticks_and_conversions_count_once(
        commands in prop::collection::vec(participant_command(), 0..30)
    ) {
        let mut state = ParticipantState::default();
        let mut exposures = 0;
        let mut conversions: Vec<String> = Vec::new();
        for c in commands {
            let events = Participant::handle_command(&state, c.clone());
            prop_assert!(events.is_ok(), "{c:?}");
            for e in events.unwrap_or_default() {
                match &e {
                    ExperimentEvent::Exposed(_) => exposures += 1,
                    ExperimentEvent::Converted(x) => {
                        prop_assert!(state.variant.as_deref() == Some(x.variant.as_str()));
                        prop_assert!(!state.withdrawn);
                        conversions.push(x.metric.clone());
                    }
                    _ => {}
                }
                state = Participant::apply_event(state, e);
            }
            prop_assert!(exposures <= 1);
        }
        let mut unique = conversions.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), conversions.len(), "a metric counted twice");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Over 100,000 random user ids, each variant's share of the users is within one
    /// percentage point of its weight.
    #[test]
    fn shares_follow_the_weights(
        seed in any::<u64>(),
        raw in prop::collection::vec(1u32..=100, 2..=5),
    ) {
        // Integer percentages summing to 100 (the last takes the rounding rest).
        let total: u32 = raw.iter().sum();
        let mut weights: Vec<f64> = raw.iter().map(|w| f64::from(w * 100 / total)).collect();
        let rest = 100.0 - weights.iter().sum::<f64>();
        if let Some(last) = weights.last_mut() {
            *last += rest;
        }
        let def = Definition {
            key: "prop".into(),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Variant { name: format!("v{i}"), weight })
                .collect(),
            coverage: 1.0,
            seed: format!("seed-{seed}"),
            status: Status::Running,
        };
        const N: usize = 100_000;
        let mut counts = vec![0usize; weights.len()];
        for id in ids(seed, N) {
            let v = def.variant_of(&id.to_string());
            prop_assert!(v.is_some(), "full coverage assigns everyone");
            if let Some(i) = def.variants.iter().position(|x| Some(x) == v) {
                counts[i] += 1;
            }
        }
        for (i, &c) in counts.iter().enumerate() {
            let share = c as f64 / N as f64;
            prop_assert!(
                (share - weights[i] / 100.0).abs() < 0.01,
                "variant {i}: share {share} vs weight {}", weights[i]
            );
        }
    }
}
