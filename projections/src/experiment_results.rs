//! `experiment_results`: what an experiment's results are computed from — per variant the
//! number of exposed users, per variant and metric the number of converted users, and the
//! number of users exposed to more than one variant — so that a results read is a handful of
//! rows whatever the number of exposures (never a scan of history per request).
//!
//! Tables: `experiment_results` (definition as the results need it: variants with weights,
//! status, `multiple_exposures`), `experiment_variant_users`, `experiment_metric_conversions`,
//! and two per-user tables that make each user count once: `experiment_participants` (the
//! variant a user was exposed to; `excluded` once exposed to a second one) and
//! `experiment_conversions` (the metrics a user converted on). A user exposed to a second
//! variant leaves every counter (users and conversions) and is counted in
//! `multiple_exposures`; the participant aggregate never records that, but the view does not
//! trust its sources to be bug-free.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::experiment::ExperimentEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Row, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "experiment_results";
pub const RESULTS: &str = "experiment_results";
pub const VARIANT_USERS: &str = "experiment_variant_users";
pub const METRIC_CONVERSIONS: &str = "experiment_metric_conversions";
pub const PARTICIPANTS: &str = "experiment_participants";
pub const CONVERSIONS: &str = "experiment_conversions";

/// The live view is `ExperimentResults::default()`; a rebuild writes to suffixed copies.
pub struct ExperimentResults {
    name: String,
    results: String,
    variant_users: String,
    metric_conversions: String,
    participants: String,
    conversions: String,
}

impl Default for ExperimentResults {
    fn default() -> Self {
        ExperimentResults::with_suffix(NAME, "")
    }
}

impl ExperimentResults {
    fn with_suffix(name: &str, suffix: &str) -> Self {
        ExperimentResults {
            name: format!("{name}{suffix}"),
            results: format!("{RESULTS}{suffix}"),
            variant_users: format!("{VARIANT_USERS}{suffix}"),
            metric_conversions: format!("{METRIC_CONVERSIONS}{suffix}"),
            participants: format!("{PARTICIPANTS}{suffix}"),
            conversions: format!("{CONVERSIONS}{suffix}"),
        }
    }

    async fn bump_users(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        variant: &str,
        delta: i64,
    ) -> Result<(), ProjectionError> {
        let t = &self.variant_users;
        sqlx::query(&format!(
            "INSERT INTO {t} (experiment_key, variant, users) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_key, variant) DO UPDATE SET users = {t}.users + excluded.users"
        ))
        .bind(key)
        .bind(variant)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn bump_conversions(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        variant: &str,
        metric: &str,
        delta: i64,
    ) -> Result<(), ProjectionError> {
        let t = &self.metric_conversions;
        sqlx::query(&format!(
            "INSERT INTO {t} (experiment_key, variant, metric, conversions) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (experiment_key, variant, metric) \
             DO UPDATE SET conversions = {t}.conversions + excluded.conversions"
        ))
        .bind(key)
        .bind(variant)
        .bind(metric)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The participant row of `user`: (variant, excluded).
    async fn participant(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        user: &str,
    ) -> Result<Option<(String, bool)>, ProjectionError> {
        let row = sqlx::query(&format!(
            "SELECT variant, excluded FROM {} WHERE experiment_key = $1 AND user_id = $2",
            self.participants
        ))
        .bind(key)
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get::<i64, _>(1)? != 0))),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Projection for ExperimentResults {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::Experiment]
    }

    fn tables(&self) -> Vec<String> {
        vec![
            self.results.clone(),
            self.variant_users.clone(),
            self.metric_conversions.clone(),
            self.participants.clone(),
            self.conversions.clone(),
        ]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(ExperimentResults::with_suffix(NAME, suffix)))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let results = &self.results;
        match event.decode::<ExperimentEvent>()? {
            ExperimentEvent::Created(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {results} \
                         (experiment_key, variants, status, multiple_exposures, created_at) \
                     VALUES ($1, $2, 'draft', 0, $3) ON CONFLICT (experiment_key) DO NOTHING"
                ))
                .bind(&e.key)
                .bind(nova_event_schemas::encode_payload(&e.variants).to_string())
                .bind(ts(e.created_at))
                .execute(&mut **tx)
                .await?;
            }
            ExperimentEvent::Started(e) => set_status(tx, results, &e.key, "running").await?,
            ExperimentEvent::Stopped(e) => set_status(tx, results, &e.key, "stopped").await?,
            ExperimentEvent::Updated(e) => {
                sqlx::query(&format!(
                    "UPDATE {results} SET variants = $2 WHERE experiment_key = $1"
                ))
                .bind(&e.key)
                .bind(nova_event_schemas::encode_payload(&e.variants).to_string())
                .execute(&mut **tx)
                .await?;
            }
            ExperimentEvent::Exposed(e) => {
                let (key, user) = (e.experiment_key.as_str(), e.user_id.to_string());
                let inserted = sqlx::query(&format!(
                    "INSERT INTO {} (experiment_key, user_id, variant, excluded) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT (experiment_key, user_id) DO NOTHING",
                    self.participants
                ))
                .bind(key)
                .bind(&user)
                .bind(&e.variant)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    self.bump_users(tx, key, &e.variant, 1).await?;
                    return Ok(());
                }
                // Exposed before: to another variant means excluded from every counter.
                let Some((first, excluded)) = self.participant(tx, key, &user).await? else {
                    return Ok(());
                };
                if excluded || first == e.variant {
                    return Ok(());
                }
                sqlx::query(&format!(
                    "UPDATE {} SET excluded = 1 WHERE experiment_key = $1 AND user_id = $2",
                    self.participants
                ))
                .bind(key)
                .bind(&user)
                .execute(&mut **tx)
                .await?;
                self.bump_users(tx, key, &first, -1).await?;
                sqlx::query(&format!(
                    "UPDATE {results} SET multiple_exposures = multiple_exposures + 1 \
                     WHERE experiment_key = $1"
                ))
                .bind(key)
                .execute(&mut **tx)
                .await?;
                let metrics: Vec<(String,)> = sqlx::query_as(&format!(
                    "SELECT metric FROM {} WHERE experiment_key = $1 AND user_id = $2",
                    self.conversions
                ))
                .bind(key)
                .bind(&user)
                .fetch_all(&mut **tx)
                .await?;
                for (metric,) in metrics {
                    self.bump_conversions(tx, key, &first, &metric, -1).await?;
                }
            }
            ExperimentEvent::Converted(e) => {
                let (key, user) = (e.experiment_key.as_str(), e.user_id.to_string());
                let inserted = sqlx::query(&format!(
                    "INSERT INTO {} (experiment_key, user_id, metric) VALUES ($1, $2, $3) \
                     ON CONFLICT (experiment_key, user_id, metric) DO NOTHING",
                    self.conversions
                ))
                .bind(key)
                .bind(&user)
                .bind(&e.metric)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(());
                }
                // Counted under the variant the view holds for the user, unless excluded.
                if let Some((variant, false)) = self.participant(tx, key, &user).await? {
                    self.bump_conversions(tx, key, &variant, &e.metric, 1)
                        .await?;
                }
            }
            // Withdrawal changes what the participant accepts later, not what was counted.
            ExperimentEvent::Withdrawn(_) => {}
        }
        Ok(())
    }
}

async fn set_status(
    tx: &mut Transaction<'static, Any>,
    results: &str,
    key: &str,
    status: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "UPDATE {results} SET status = $2 WHERE experiment_key = $1"
    ))
    .bind(key)
    .bind(status)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
