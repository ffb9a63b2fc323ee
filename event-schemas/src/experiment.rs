//! Events of the `experiment` domain (A/B experiments).
//!
//! Two aggregate kinds (ADR 0014):
//! - the **experiment** (id = [`experiment_id`] of its key): the definition — variants and
//!   weights, coverage, hash seed — and its lifecycle draft → running → stopped;
//! - the **participant** (id = [`participant_id`] of experiment key and user): one user's
//!   exposure to one experiment and the metrics they converted on. A stream per participant
//!   keeps first reads of different users from serializing on one experiment stream.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

/// Namespace for the name-based ids of experiments.
const EXPERIMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d65_7870_6572_696d_656e_0001);
/// Namespace for the name-based ids of participants.
const PARTICIPANT_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d65_7870_6572_696d_656e_0002);

/// The aggregate id of the experiment `key`.
pub fn experiment_id(key: &str) -> Uuid {
    Uuid::new_v5(&EXPERIMENT_NAMESPACE, key.as_bytes())
}

/// The aggregate id of `user`'s participation in the experiment `key`.
pub fn participant_id(key: &str, user: Uuid) -> Uuid {
    let mut name = Vec::with_capacity(16 + key.len());
    name.extend_from_slice(user.as_bytes());
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&PARTICIPANT_NAMESPACE, &name)
}

/// One arm of an experiment: its name and its share of traffic in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Percent of the covered users; the weights of an experiment sum to 100.
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Created {
    pub key: String,
    /// The first variant is the control.
    pub variants: Vec<Variant>,
    /// Fraction (0–1) of users who are in the experiment at all.
    pub coverage: f64,
    /// The hash seed (GrowthBook hashing v2).
    pub seed: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Started {
    pub key: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stopped {
    pub key: String,
    pub stopped_at: DateTime<Utc>,
}

/// New weights and coverage; they apply to users not exposed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Updated {
    pub key: String,
    pub variants: Vec<Variant>,
    pub coverage: f64,
    pub updated_at: DateTime<Utc>,
}

/// A user's first assignment read while the experiment ran: from now on they count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exposed {
    pub experiment_key: String,
    pub user_id: Uuid,
    pub variant: String,
    pub exposed_at: DateTime<Utc>,
}

/// An exposed user's first conversion on `metric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Converted {
    pub experiment_key: String,
    pub user_id: Uuid,
    pub metric: String,
    /// The variant the user was exposed to.
    pub variant: String,
    pub converted_at: DateTime<Utc>,
}

/// The user was deactivated: their later conversions are not counted (issued by the
/// deactivation policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawn {
    pub experiment_key: String,
    pub user_id: Uuid,
    pub withdrawn_at: DateTime<Utc>,
}

crate::domain_events! {
    /// Every event the `experiment` domain stores.
    pub enum ExperimentEvent in Domain::Experiment {
        Created(Created) = ("created", 1),
        Started(Started) = ("started", 1),
        Stopped(Stopped) = ("stopped", 1),
        Updated(Updated) = ("updated", 1),
        Exposed(Exposed) = ("exposed", 1),
        Converted(Converted) = ("converted", 1),
        Withdrawn(Withdrawn) = ("withdrawn", 1),
    }
    upcast(event_type, version, payload) {
        (event_type, version, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_separate_experiments_and_users() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(experiment_id("x"), experiment_id("x"));
        assert_ne!(experiment_id("x"), experiment_id("y"));
        assert_ne!(participant_id("x", a), participant_id("x", b));
        assert_ne!(participant_id("x", a), participant_id("y", a));
    }
}
