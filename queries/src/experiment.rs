//! Reads of the `experiment_results` view, and the statistics of an experiment's results.
//!
//! A results read loads a handful of counter rows (one per variant, one per variant and
//! metric), whatever the number of exposures, and computes from them:
//! - per variant and metric the conversion rate `conversions / users`;
//! - for each non-control variant the relative uplift `rate / control rate − 1` with a 95 %
//!   confidence interval by the delta method (unpooled variances of the two rates), and the
//!   two-sided p-value of the pooled two-proportion z-test;
//! - the sample-ratio-mismatch p-value: Pearson's chi-square of the users per variant against
//!   the current weights (variants of weight 0 take no part; users in one make the p-value 0),
//!   flagged below [`SRM_THRESHOLD`] (GrowthBook's default).
//!
//! The normal and chi-square distributions come from `statrs`. Reference values for the
//! tests were computed with SciPy (`tests/experiments.rs` and this module's tests).

use std::collections::{BTreeMap, BTreeSet};

use nova_event_schemas::experiment::Variant;
use nova_infra::readmodel::JsonText;
use sqlx::AnyPool;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use crate::QueryError;

/// An SRM p-value below this is flagged.
pub const SRM_THRESHOLD: f64 = 0.001;

/// A metric of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    pub conversions: i64,
    /// `conversions / users` (0 without users).
    pub rate: f64,
    /// Relative to the control's rate; `None` for the control, or when undefined.
    pub uplift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Two-sided, pooled two-proportion z-test against the control.
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantResult {
    pub name: String,
    pub users: i64,
    pub metrics: BTreeMap<String, MetricResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    pub key: String,
    pub status: String,
    pub variants: Vec<VariantResult>,
    pub srm_p_value: Option<f64>,
    pub srm_flag: bool,
    pub multiple_exposures: i64,
}

#[derive(sqlx::FromRow)]
struct ResultsRow {
    variants: JsonText<Vec<Variant>>,
    status: String,
    multiple_exposures: i64,
}

/// The results of experiment `key`; `None` if the view does not know it.
pub async fn results(pool: &AnyPool, key: &str) -> Result<Option<Results>, QueryError> {
    let Some(row) = sqlx::query_as::<_, ResultsRow>(
        "SELECT variants, status, multiple_exposures FROM experiment_results \
         WHERE experiment_key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let users: Vec<(String, i64)> = sqlx::query_as(
        "SELECT variant, users FROM experiment_variant_users WHERE experiment_key = $1",
    )
    .bind(key)
    .fetch_all(pool)
    .await?;
    let conversions: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT variant, metric, conversions FROM experiment_metric_conversions \
         WHERE experiment_key = $1",
    )
    .bind(key)
    .fetch_all(pool)
    .await?;
    Ok(Some(compute(
        key,
        row.status,
        &row.variants.0,
        &users.into_iter().collect(),
        &conversions
            .into_iter()
            .map(|(v, m, c)| ((v, m), c))
            .collect(),
        row.multiple_exposures,
    )))
}

/// The keys of the experiments `user` was exposed to (for the deactivation policy).
pub async fn experiments_of(pool: &AnyPool, user: uuid::Uuid) -> Result<Vec<String>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT experiment_key FROM experiment_participants WHERE user_id = $1 \
         ORDER BY experiment_key",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

/// The results from the counters: users per variant, conversions per (variant, metric).
pub fn compute(
    key: &str,
    status: String,
    variants: &[Variant],
    users: &BTreeMap<String, i64>,
    conversions: &BTreeMap<(String, String), i64>,
    multiple_exposures: i64,
) -> Results {
    let n = |v: &str| users.get(v).copied().unwrap_or(0).max(0);
    let c = |v: &str, m: &str| {
        conversions
            .get(&(v.to_owned(), m.to_owned()))
            .copied()
            .unwrap_or(0)
            .max(0)
    };
    let metrics: BTreeSet<&str> = conversions.keys().map(|(_, m)| m.as_str()).collect();
    let control = variants.first().map_or("", |v| v.name.as_str());
    let out: Vec<VariantResult> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let users = n(&v.name);
            let metrics = metrics
                .iter()
                .map(|&m| {
                    let conversions = c(&v.name, m);
                    let rate = ratio(conversions, users);
                    let cmp = if i == 0 {
                        Comparison::default()
                    } else {
                        compare((n(control), c(control, m)), (users, conversions))
                    };
                    (
                        m.to_owned(),
                        MetricResult {
                            conversions,
                            rate,
                            uplift: cmp.uplift,
                            ci_low: cmp.ci_low,
                            ci_high: cmp.ci_high,
                            p_value: cmp.p_value,
                        },
                    )
                })
                .collect();
            VariantResult {
                name: v.name.clone(),
                users,
                metrics,
            }
        })
        .collect();
    let observed: Vec<i64> = variants.iter().map(|v| n(&v.name)).collect();
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    let srm_p_value = srm_p_value(&observed, &weights);
    Results {
        key: key.to_owned(),
        status,
        variants: out,
        srm_flag: srm_p_value.is_some_and(|p| p < SRM_THRESHOLD),
        srm_p_value,
        multiple_exposures,
    }
}

fn ratio(num: i64, den: i64) -> f64 {
    if den > 0 {
        num as f64 / den as f64
    } else {
        0.0
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A treatment against the control on one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Comparison {
    pub uplift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
}

/// `(users, conversions)` of the control and of a treatment → relative uplift with its 95 %
/// delta-method interval, and the pooled two-proportion z-test's two-sided p-value.
pub fn compare(control: (i64, i64), treatment: (i64, i64)) -> Comparison {
    let ((nc, cc), (nt, ct)) = (control, treatment);
    if nc <= 0 || nt <= 0 {
        return Comparison::default();
    }
    let (nc_f, nt_f) = (nc as f64, nt as f64);
    let (pc, pt) = (cc as f64 / nc_f, ct as f64 / nt_f);
    let Ok(normal) = Normal::new(0.0, 1.0) else {
        return Comparison::default();
    };
    let pooled = (cc + ct) as f64 / (nc_f + nt_f);
    let se = (pooled * (1.0 - pooled) * (1.0 / nc_f + 1.0 / nt_f)).sqrt();
    let p_value = (se > 0.0)
        .then(|| 2.0 * normal.sf(((pt - pc) / se).abs()))
        .and_then(finite);
    if pc <= 0.0 {
        return Comparison {
            p_value,
            ..Comparison::default()
        };
    }
    let uplift = pt / pc - 1.0;
    let var_c = pc * (1.0 - pc) / nc_f;
    let var_t = pt * (1.0 - pt) / nt_f;
    let se_rel = (var_t / (pc * pc) + pt * pt * var_c / pc.powi(4)).sqrt();
    let z = normal.inverse_cdf(0.975);
    Comparison {
        uplift: finite(uplift),
        ci_low: finite(uplift - z * se_rel),
        ci_high: finite(uplift + z * se_rel),
        p_value,
    }
}

/// Pearson's chi-square p-value of `observed` users per variant against `weights` (any
/// scale). `None` without users or with fewer than two variants of positive weight.
pub fn srm_p_value(observed: &[i64], weights: &[f64]) -> Option<f64> {
    let total: i64 = observed.iter().sum();
    let weight_sum: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total <= 0 || weight_sum <= 0.0 {
        return None;
    }
    let mut stat = 0.0;
    let mut cells = 0usize;
    for (&o, &w) in observed.iter().zip(weights) {
        if w <= 0.0 {
            if o > 0 {
                return Some(0.0);
            }
            continue;
        }
        let expected = total as f64 * w / weight_sum;
        stat += (o as f64 - expected).powi(2) / expected;
        cells += 1;
    }
    if cells < 2 {
        return None;
    }
    let chi = ChiSquared::new((cells - 1) as f64).ok()?;
    finite(chi.sf(stat))
}

#[cfg(test)]
mod tests {
    //! Reference values computed with Python 3 and SciPy (`scipy.stats.norm`,
    //! `scipy.stats.chisquare`), by the script in `tests/experiments.rs`'s module doc.

    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    #[test]
    fn two_proportions_match_scipy() {
        // control 1000 users / 100 conversions, treatment 1000 / 130.
        let c = compare((1000, 100), (1000, 130));
        assert!(close(c.uplift, 0.3), "{c:?}");
        assert!(close(c.p_value, REF_P), "{c:?}");
        assert!(close(c.ci_low, REF_LOW), "{c:?}");
        assert!(close(c.ci_high, REF_HIGH), "{c:?}");
    }

    #[test]
    fn srm_matches_scipy() {
        assert!(close(srm_p_value(&[5000, 5200], &[50.0, 50.0]), REF_SRM));
        assert!(close(srm_p_value(&[1000, 1000], &[50.0, 50.0]), 1.0));
        assert_eq!(srm_p_value(&[10, 1], &[100.0, 0.0]), Some(0.0));
        assert_eq!(srm_p_value(&[0, 0], &[50.0, 50.0]), None);
    }

    #[test]
    fn degenerate_inputs_give_no_numbers() {
        assert_eq!(compare((0, 0), (10, 1)), Comparison::default());
        let c = compare((10, 0), (10, 0));
        assert_eq!(c, Comparison::default());
        let c = compare((10, 0), (10, 3));
        assert!(c.uplift.is_none() && c.p_value.is_some());
    }

    // compare(1000, 100, 1000, 130) in the script: uplift, ci_low, ci_high, p-value.
    const REF_P: f64 = 0.035488450466;
    const REF_LOW: f64 = -0.019179397714;
    const REF_HIGH: f64 = 0.619179397714;
    // scipy.stats.chisquare([5000, 5200], [5100, 5100]).pvalue
    const REF_SRM: f64 = 0.047670380656;
}
