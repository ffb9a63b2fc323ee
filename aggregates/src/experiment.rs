//! The `experiment` domain: the [`Experiment`] aggregate (one per key: definition and
//! lifecycle) and the [`Participant`] aggregate (one per experiment and user: exposure and
//! conversions), plus GrowthBook-compatible assignment ([`assign`]).
//!
//! Invariants kept here:
//! - an experiment goes draft → running → stopped, never back; a stopped one is not changed;
//! - while running, an update changes weights and coverage only, never the variants' names;
//! - a participant is exposed at most once, to one variant, and keeps it (stickiness): weights
//!   changed later apply only to users not exposed yet;
//! - a conversion counts once per participant and metric, only after the exposure, and never
//!   after the participant was withdrawn (the user was deactivated).
//!
//! Why two aggregates (ADR 0014): every first read of a running experiment appends an
//! exposure. On one stream per experiment, those appends would conflict with each other and
//! serialize; on one stream per (experiment, user) they never meet. The participant needs
//! only facts from the definition (the variant, computed by the command handler from the
//! definition it loaded), handed in with the command.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_event_schemas::experiment::*;
use uuid::Uuid;

pub mod assign;

/// The `aggregate_type` of every aggregate of the `experiment` domain.
pub const AGGREGATE_TYPES: &[&str] = &[
    <Experiment as Aggregate>::NAME,
    <Participant as Aggregate>::NAME,
];

pub use nova_event_schemas::experiment::{experiment_id, participant_id, Variant};

/// Why the experiment domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExperimentError {
    #[error("experiment not found")]
    NotFound,
    #[error("an experiment with this key already exists")]
    AlreadyExists,
    #[error("the experiment has been stopped")]
    Stopped,
    #[error("the experiment has not been started")]
    NotStarted,
    #[error("the experiment is not running")]
    NotRunning,
    /// A running experiment's update must keep its variants' names, in order.
    #[error("a running experiment's variants cannot be renamed, added or removed")]
    VariantsChanged,
    /// The command is for another experiment or user than this participant's.
    #[error("the command is for another participant")]
    WrongParticipant,
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// A defined experiment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Definition {
    pub key: String,
    pub variants: Vec<Variant>,
    pub coverage: f64,
    pub seed: String,
    pub status: Status,
}

impl Definition {
    /// The control (first) variant's name.
    pub fn control(&self) -> &str {
        self.variants.first().map_or("", |v| v.name.as_str())
    }

    /// The variant the user with `user_id` is assigned to now, `None` if outside coverage.
    pub fn variant_of(&self, user_id: &str) -> Option<&Variant> {
        let weights: Vec<f64> = self.variants.iter().map(|v| v.weight / 100.0).collect();
        let n = assign::hash(&self.seed, user_id, 2)?;
        let ranges = assign::bucket_ranges(self.variants.len(), self.coverage, Some(&weights));
        let i = assign::choose_variation(n, &ranges)?;
        self.variants.get(i)
    }
}

/// The experiment aggregate's state: `None` until created.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ExperimentState {
    pub definition: Option<Definition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentCommand {
    /// Variants, coverage and seed are validated by the command handler.
    Create {
        key: String,
        variants: Vec<Variant>,
        coverage: f64,
        seed: String,
        now: DateTime<Utc>,
    },
    Start {
        now: DateTime<Utc>,
    },
    Stop {
        now: DateTime<Utc>,
    },
    Update {
        variants: Option<Vec<Variant>>,
        coverage: Option<f64>,
        now: DateTime<Utc>,
    },
}

pub struct Experiment;

impl Aggregate for Experiment {
    const NAME: &'static str = "experiment";
    type State = ExperimentState;
    type Command = ExperimentCommand;
    type Event = ExperimentEvent;
    type Error = ExperimentError;

    fn handle_command(
        state: &ExperimentState,
        command: ExperimentCommand,
    ) -> Result<Vec<ExperimentEvent>, ExperimentError> {
        if let ExperimentCommand::Create {
            key,
            variants,
            coverage,
            seed,
            now,
        } = command
        {
            if state.definition.is_some() {
                return Err(ExperimentError::AlreadyExists);
            }
            return Ok(vec![ExperimentEvent::Created(Created {
                key,
                variants,
                coverage,
                seed,
                created_at: now,
            })]);
        }
        let def = state.definition.as_ref().ok_or(ExperimentError::NotFound)?;
        let key = def.key.clone();
        match command {
            ExperimentCommand::Create { .. } => Err(ExperimentError::AlreadyExists),
            ExperimentCommand::Start { now } => match def.status {
                Status::Draft => Ok(vec![ExperimentEvent::Started(Started {
                    key,
                    started_at: now,
                })]),
                Status::Running => Ok(vec![]),
                Status::Stopped => Err(ExperimentError::Stopped),
            },
            ExperimentCommand::Stop { now } => match def.status {
                Status::Draft => Err(ExperimentError::NotStarted),
                Status::Running => Ok(vec![ExperimentEvent::Stopped(Stopped {
                    key,
                    stopped_at: now,
                })]),
                Status::Stopped => Ok(vec![]),
            },
            ExperimentCommand::Update {
                variants,
                coverage,
                now,
            } => {
                if def.status == Status::Stopped {
                    return Err(ExperimentError::Stopped);
                }
                let variants = variants.unwrap_or_else(|| def.variants.clone());
                if def.status == Status::Running {
                    let same_names = variants.len() == def.variants.len()
                        && variants
                            .iter()
                            .zip(&def.variants)
                            .all(|(a, b)| a.name == b.name);
                    if !same_names {
                        return Err(ExperimentError::VariantsChanged);
                    }
                }
                let coverage = coverage.unwrap_or(def.coverage);
                if variants == def.variants && coverage == def.coverage {
                    return Ok(vec![]);
                }
                Ok(vec![ExperimentEvent::Updated(Updated {
                    key,
                    variants,
                    coverage,
                    updated_at: now,
                })])
            }
        }
    }

    fn apply_event(mut state: ExperimentState, event: ExperimentEvent) -> ExperimentState {
        match event {
            ExperimentEvent::Created(e) => {
                state.definition = Some(Definition {
                    key: e.key,
                    variants: e.variants,
                    coverage: e.coverage,
                    seed: e.seed,
                    status: Status::Draft,
                });
            }
            ExperimentEvent::Started(_) => set_status(&mut state, Status::Running),
            ExperimentEvent::Stopped(_) => set_status(&mut state, Status::Stopped),
            ExperimentEvent::Updated(e) => {
                if let Some(def) = state.definition.as_mut() {
                    def.variants = e.variants;
                    def.coverage = e.coverage;
                }
            }
            // Participant events live on participant streams.
            ExperimentEvent::Exposed(_)
            | ExperimentEvent::Converted(_)
            | ExperimentEvent::Withdrawn(_) => {}
        }
        state
    }
}

fn set_status(state: &mut ExperimentState, status: Status) {
    if let Some(def) = state.definition.as_mut() {
        def.status = status;
    }
}

/// One user's participation in one experiment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ParticipantState {
    /// (experiment key, user) once anything happened.
    pub who: Option<(String, Uuid)>,
    /// The variant of the first exposure (sticky).
    pub variant: Option<String>,
    /// Metrics already converted on.
    pub metrics: BTreeSet<String>,
    pub withdrawn: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantCommand {
    /// Record the exposure to `variant` (computed from the definition by the handler) unless
    /// the participant was already exposed.
    Expose {
        key: String,
        user: Uuid,
        variant: String,
        now: DateTime<Utc>,
    },
    /// Count a conversion on `metric` if exposed, not withdrawn and not yet converted on it.
    Convert {
        key: String,
        user: Uuid,
        metric: String,
        now: DateTime<Utc>,
    },
    /// Stop counting this participant's future conversions (user deactivated).
    Withdraw {
        key: String,
        user: Uuid,
        now: DateTime<Utc>,
    },
}

pub struct Participant;

impl Aggregate for Participant {
    const NAME: &'static str = "participant";
    type State = ParticipantState;
    type Command = ParticipantCommand;
    type Event = ExperimentEvent;
    type Error = ExperimentError;

    fn handle_command(
        state: &ParticipantState,
        command: ParticipantCommand,
    ) -> Result<Vec<ExperimentEvent>, ExperimentError> {
        match command {
            ParticipantCommand::Expose {
                key,
                user,
                variant,
                now,
            } => {
                check_who(state, &key, user)?;
                if state.variant.is_some() || state.withdrawn {
                    return Ok(vec![]);
                }
                Ok(vec![ExperimentEvent::Exposed(Exposed {
                    experiment_key: key,
                    user_id: user,
                    variant,
                    exposed_at: now,
                })])
            }
            ParticipantCommand::Convert {
                key,
                user,
                metric,
                now,
            } => {
                check_who(state, &key, user)?;
                let Some(variant) = &state.variant else {
                    return Ok(vec![]);
                };
                if state.withdrawn || state.metrics.contains(&metric) {
                    return Ok(vec![]);
                }
                Ok(vec![ExperimentEvent::Converted(Converted {
                    experiment_key: key,
                    user_id: user,
                    metric,
                    variant: variant.clone(),
                    converted_at: now,
                })])
            }
            ParticipantCommand::Withdraw { key, user, now } => {
                check_who(state, &key, user)?;
                if state.withdrawn {
                    return Ok(vec![]);
                }
                Ok(vec![ExperimentEvent::Withdrawn(Withdrawn {
                    experiment_key: key,
                    user_id: user,
                    withdrawn_at: now,
                })])
            }
        }
    }

    fn apply_event(mut state: ParticipantState, event: ExperimentEvent) -> ParticipantState {
        match event {
            ExperimentEvent::Exposed(e) => {
                state.who.get_or_insert((e.experiment_key, e.user_id));
                // The first exposure is the one that counts (stickiness).
                state.variant.get_or_insert(e.variant);
            }
            ExperimentEvent::Converted(e) => {
                state.who.get_or_insert((e.experiment_key, e.user_id));
                state.metrics.insert(e.metric);
            }
            ExperimentEvent::Withdrawn(e) => {
                state.who.get_or_insert((e.experiment_key, e.user_id));
                state.withdrawn = true;
            }
            ExperimentEvent::Created(_)
            | ExperimentEvent::Started(_)
            | ExperimentEvent::Stopped(_)
            | ExperimentEvent::Updated(_) => {}
        }
        state
    }
}

fn check_who(state: &ParticipantState, key: &str, user: Uuid) -> Result<(), ExperimentError> {
    match &state.who {
        Some((k, u)) if k != key || *u != user => Err(ExperimentError::WrongParticipant),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

impl crate::CommandName for ExperimentCommand {
    fn name(&self) -> &'static str {
        match self {
            ExperimentCommand::Create { .. } => "create",
            ExperimentCommand::Start { .. } => "start",
            ExperimentCommand::Stop { .. } => "stop",
            ExperimentCommand::Update { .. } => "update",
        }
    }
}

impl crate::CommandName for ParticipantCommand {
    fn name(&self) -> &'static str {
        match self {
            ParticipantCommand::Expose { .. } => "expose",
            ParticipantCommand::Convert { .. } => "convert",
            ParticipantCommand::Withdraw { .. } => "withdraw",
        }
    }
}
