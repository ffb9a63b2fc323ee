//! Command handlers of the `experiment` domain: definitions (create, start, stop, update),
//! assignment with its exposure, conversions, and withdrawal of deactivated users.
//!
//! Input is validated here (malformed definitions are [`CommandError::Invalid`], a 400), the
//! aggregates decide the rest. Assignment reads the experiment's definition (cached by the
//! repository, one index probe per read), then the caller's participant stream: an exposed
//! participant keeps its variant; otherwise the variant is computed from the current weights
//! and the exposure appended to the participant's own stream (ADR 0014), so first reads of
//! different users never conflict. Only this module can create an [`ExperimentWriter`].

use chrono::Utc;
use nova_aggregates::experiment::{
    experiment_id, participant_id, Definition, Experiment, ExperimentCommand, ExperimentError,
    Participant, ParticipantCommand, Status, Variant,
};
use nova_event_schemas::experiment::ExperimentEvent;
use nova_event_schemas::Domain;
use uuid::Uuid;

use crate::{CommandContext, CommandError, CommandStore, Done, Owned, Repository};

/// The experiment domain's writer (see `repository`): only this module can create one.
pub struct ExperimentWriter(());

impl Owned for ExperimentEvent {
    type Writer = ExperimentWriter;
}

/// Why an experiment command failed: the one command error, with the domain's refusals.
pub type ExperimentCommandError = CommandError<ExperimentError>;

type Result<T> = std::result::Result<T, ExperimentCommandError>;

/// Most variants an experiment may have.
pub const MAX_VARIANTS: usize = 20;
/// Longest key, variant name or metric name.
pub const MAX_NAME: usize = 64;
/// Longest hash seed.
pub const MAX_SEED: usize = 128;

/// A new experiment as the client described it.
#[derive(Debug, Clone)]
pub struct NewExperiment {
    pub key: String,
    pub variants: Vec<Variant>,
    pub coverage: Option<f64>,
    pub seed: Option<String>,
}

/// The caller's variant. Outside the experiment (not running, outside coverage, withdrawn)
/// the control variant with `in_experiment: false`, as GrowthBook's SDKs answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub variant: String,
    pub in_experiment: bool,
    /// Position of the exposure, when this read was the first.
    pub position: Option<i64>,
}

#[derive(Clone)]
pub struct ExperimentCommands {
    store: CommandStore,
    experiments: Repository<Experiment>,
    participants: Repository<Participant>,
}

impl ExperimentCommands {
    pub fn new(store: CommandStore) -> Self {
        ExperimentCommands {
            experiments: Repository::new(&store, ExperimentWriter(())),
            participants: Repository::new(&store, ExperimentWriter(())),
            store,
        }
    }

    /// Defines a new experiment (draft).
    pub async fn create(&self, ctx: &CommandContext, new: NewExperiment) -> Result<Done> {
        check_key(&new.key)?;
        check_variants(&new.variants)?;
        let coverage = new.coverage.unwrap_or(1.0);
        check_coverage(coverage)?;
        let seed = new.seed.unwrap_or_else(|| new.key.clone());
        if seed.is_empty() || seed.chars().count() > MAX_SEED || seed.chars().any(char::is_control)
        {
            return Err(CommandError::invalid(
                "seed",
                format!("must be 1–{MAX_SEED} printable characters"),
            ));
        }
        let e = self
            .experiments
            .execute(experiment_id(&new.key), ctx, |_| {
                Ok(ExperimentCommand::Create {
                    key: new.key.clone(),
                    variants: new.variants.clone(),
                    coverage,
                    seed: seed.clone(),
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// draft → running.
    pub async fn start(&self, ctx: &CommandContext, key: &str) -> Result<Done> {
        self.run(ctx, key, || ExperimentCommand::Start { now: Utc::now() })
            .await
    }

    /// running → stopped.
    pub async fn stop(&self, ctx: &CommandContext, key: &str) -> Result<Done> {
        self.run(ctx, key, || ExperimentCommand::Stop { now: Utc::now() })
            .await
    }

    /// New weights and/or coverage; they apply to users not exposed yet.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        key: &str,
        variants: Option<Vec<Variant>>,
        coverage: Option<f64>,
    ) -> Result<Done> {
        if let Some(v) = &variants {
            check_variants(v)?;
        }
        if let Some(c) = coverage {
            check_coverage(c)?;
        }
        self.run(ctx, key, || ExperimentCommand::Update {
            variants: variants.clone(),
            coverage,
            now: Utc::now(),
        })
        .await
    }

    /// The experiment's current definition (`NotFound` refusal if there is none).
    pub async fn definition(&self, key: &str) -> Result<Definition> {
        if check_key(key).is_err() {
            return Err(CommandError::Refused(ExperimentError::NotFound));
        }
        let loaded = self.experiments.load_shared(experiment_id(key)).await?;
        loaded
            .state
            .definition
            .clone()
            .ok_or(CommandError::Refused(ExperimentError::NotFound))
    }

    /// The variant of `user`; the first read while the experiment runs is the exposure.
    pub async fn assign(&self, ctx: &CommandContext, key: &str, user: Uuid) -> Result<Assignment> {
        let def = self.definition(key).await?;
        let outside = || Assignment {
            variant: def.control().to_owned(),
            in_experiment: false,
            position: None,
        };
        if def.status != Status::Running {
            return Ok(outside());
        }
        let id = participant_id(key, user);
        let current = self.participants.load_shared(id).await?;
        if let Some(variant) = &current.state.variant {
            return Ok(Assignment {
                variant: variant.clone(),
                in_experiment: !current.state.withdrawn,
                position: None,
            });
        }
        if current.state.withdrawn {
            return Ok(outside());
        }
        let Some(variant) = def.variant_of(&user.to_string()) else {
            return Ok(outside());
        };
        let variant = variant.name.clone();
        let e = self
            .participants
            .execute(id, ctx, |_| {
                Ok(ParticipantCommand::Expose {
                    key: key.to_owned(),
                    user,
                    variant: variant.clone(),
                    now: Utc::now(),
                })
            })
            .await?;
        // A concurrent first read may have exposed the user first: its variant holds.
        match e.state.variant.clone() {
            Some(variant) => Ok(Assignment {
                variant,
                in_experiment: !e.state.withdrawn,
                position: e.position(),
            }),
            None => Ok(outside()),
        }
    }

    /// Counts `user`'s conversion on `metric` once, if they were exposed. Returns whether this
    /// call counted it, and the participant's version.
    pub async fn convert(
        &self,
        ctx: &CommandContext,
        key: &str,
        user: Uuid,
        metric: &str,
    ) -> Result<(bool, Done)> {
        check_name("metric", metric)?;
        let def = self.definition(key).await?;
        if def.status != Status::Running {
            return Err(CommandError::Refused(ExperimentError::NotRunning));
        }
        let e = self
            .participants
            .execute(participant_id(key, user), ctx, |_| {
                Ok(ParticipantCommand::Convert {
                    key: key.to_owned(),
                    user,
                    metric: metric.to_owned(),
                    now: Utc::now(),
                })
            })
            .await?;
        Ok((!e.events.is_empty(), e.done()))
    }

    /// Stops counting `user`'s future conversions in `key` (the deactivation policy).
    pub async fn withdraw(&self, ctx: &CommandContext, key: &str, user: Uuid) -> Result<Done> {
        let e = self
            .participants
            .execute(participant_id(key, user), ctx, |_| {
                Ok(ParticipantCommand::Withdraw {
                    key: key.to_owned(),
                    user,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// Position of the experiment domain's latest event.
    pub async fn head(&self) -> Result<i64> {
        self.store
            .head(Domain::Experiment)
            .await
            .map_err(|e| ExperimentCommandError::Unavailable(e.to_string()))
    }

    async fn run(
        &self,
        ctx: &CommandContext,
        key: &str,
        make: impl Fn() -> ExperimentCommand,
    ) -> Result<Done> {
        if check_key(key).is_err() {
            return Err(CommandError::Refused(ExperimentError::NotFound));
        }
        let e = self
            .experiments
            .execute(experiment_id(key), ctx, |_| Ok(make()))
            .await?;
        Ok(e.done())
    }
}

/// Keys and metric names: lower-case letters, digits, `_`, `-`, `.`; starting with a letter or
/// digit; at most [`MAX_NAME`] characters.
fn check_name(field: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CommandError::invalid(
            field,
            format!(
                "must be 1–{MAX_NAME} characters of a-z, 0-9, '_', '-', '.', starting with a \
                 letter or digit"
            ),
        ))
    }
}

fn check_key(key: &str) -> Result<()> {
    check_name("key", key)
}

fn check_coverage(coverage: f64) -> Result<()> {
    if coverage.is_finite() && (0.0..=1.0).contains(&coverage) {
        Ok(())
    } else {
        Err(CommandError::invalid("coverage", "must be between 0 and 1"))
    }
}

/// 2–[`MAX_VARIANTS`] variants with distinct names, weights ≥ 0 summing to 100.
fn check_variants(variants: &[Variant]) -> Result<()> {
    let invalid = |m: String| Err(CommandError::invalid("variants", m));
    if variants.len() < 2 || variants.len() > MAX_VARIANTS {
        return invalid(format!("must list 2–{MAX_VARIANTS} variants"));
    }
    for (i, v) in variants.iter().enumerate() {
        let name_ok = !v.name.is_empty()
            && v.name.len() <= MAX_NAME
            && v.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return invalid(format!(
                "name {:?} must be 1–{MAX_NAME} characters of A-Z, a-z, 0-9, '_', '-', '.'",
                v.name
            ));
        }
        if variants[..i].iter().any(|w| w.name == v.name) {
            return invalid(format!("name {:?} appears twice", v.name));
        }
        if !v.weight.is_finite() || v.weight < 0.0 {
            return invalid(format!("weight of {:?} must be a number ≥ 0", v.name));
        }
    }
    let total: f64 = variants.iter().map(|v| v.weight).sum();
    if (total - 100.0).abs() > 1e-6 {
        return invalid(format!("weights must sum to 100 (they sum to {total})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nova_infra::testing::TestDb;

    use super::*;

    fn v(name: &str, weight: f64) -> Variant {
        Variant {
            name: name.into(),
            weight,
        }
    }

    #[test]
    fn definitions_are_validated() {
        assert!(check_variants(&[v("a", 50.0), v("b", 50.0)]).is_ok());
        assert!(check_variants(&[v("a", 33.3), v("b", 33.3), v("c", 33.4)]).is_ok());
        for bad in [
            vec![],
            vec![v("a", 100.0)],
            vec![v("a", 60.0), v("b", 60.0)],
            vec![v("a", -10.0), v("b", 110.0)],
            vec![v("a", 50.0), v("a", 50.0)],
            vec![v("", 50.0), v("b", 50.0)],
            vec![v("a", f64::NAN), v("b", 50.0)],
        ] {
            assert!(check_variants(&bad).is_err(), "{bad:?}");
        }
        assert!(check_key("checkout-2024").is_ok());
        for bad in ["", "Checkout", "-x", "a b", &"x".repeat(65)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_coverage(0.0).is_ok() && check_coverage(1.0).is_ok());
        assert!(check_coverage(1.5).is_err() && check_coverage(-0.1).is_err());
    }

    /// Stickiness through the store: after the weights move everything to the treatment, a
    /// user exposed to the control stays there; a withdrawn user's conversions do not count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exposure_sticks_across_weight_changes() {
        let t = TestDb::sqlite();
        let db = t.open().await;
        let x = ExperimentCommands::new(CommandStore::new(db.store.clone()));
        let ctx = CommandContext::new(None, None);
        x.create(
            &ctx,
            NewExperiment {
                key: "sticky".into(),
                variants: vec![v("control", 100.0), v("treatment", 0.0)],
                coverage: None,
                seed: None,
            },
        )
        .await
        .unwrap();
        let user = Uuid::now_v7();
        // Draft: nobody is in it, nothing is recorded.
        let a = x.assign(&ctx, "sticky", user).await.unwrap();
        assert_eq!((a.variant.as_str(), a.in_experiment), ("control", false));
        x.start(&ctx, "sticky").await.unwrap();
        let a = x.assign(&ctx, "sticky", user).await.unwrap();
        assert_eq!((a.variant.as_str(), a.in_experiment), ("control", true));
        assert!(a.position.is_some());
        x.update(
            &ctx,
            "sticky",
            Some(vec![v("control", 0.0), v("treatment", 100.0)]),
            None,
        )
        .await
        .unwrap();
        let a = x.assign(&ctx, "sticky", user).await.unwrap();
        assert_eq!((a.variant.as_str(), a.position), ("control", None));
        let newcomer = x.assign(&ctx, "sticky", Uuid::now_v7()).await.unwrap();
        assert_eq!(newcomer.variant, "treatment");

        assert!(x.convert(&ctx, "sticky", user, "buy").await.unwrap().0);
        assert!(!x.convert(&ctx, "sticky", user, "buy").await.unwrap().0);
        let stranger = Uuid::now_v7();
        assert!(!x.convert(&ctx, "sticky", stranger, "buy").await.unwrap().0);
        x.withdraw(&ctx, "sticky", user).await.unwrap();
        assert!(!x.convert(&ctx, "sticky", user, "other").await.unwrap().0);
        db.close().await;
    }
}
