//! Routes of the `experiments` area (API.md "Experiments"): definitions (admin), the caller's
//! assignment (the first read while running is the exposure), conversions, and results from
//! the `experiment_results` view. Commands answer with `X-Nova-Position: experiment:<pos>`
//! when something was appended.

use std::collections::BTreeMap;

use axum::extract::State;
use nova_commands::experiment::{NewExperiment, MAX_NAME, MAX_SEED, MAX_VARIANTS};
use nova_event_schemas::experiment::Variant;
use nova_event_schemas::Domain;
use nova_projections::experiment_results;
use nova_queries::experiment as view;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Answer, Json, MinPosition, Path, Version};
use super::openapi::{self as doc, Text};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(update))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(assignment))
        .routes(routes!(convert))
        .routes(routes!(results))
}

/// One variant: its name and its weight in percent.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    /// 1–64 characters of A-Z, a-z, 0-9, `_`, `-`, `.`; distinct within the experiment.
    #[schema(schema_with = variant_name)]
    pub name: String,
    /// Percent, ≥ 0; the weights of an experiment sum to 100.
    #[schema(schema_with = weight)]
    pub weight: f64,
}

/// Keys and metric names, as `check_name` takes them.
fn key_name() -> Object {
    doc::pattern(1, MAX_NAME, "^[a-z0-9][a-z0-9_.-]*$").build()
}

fn variant_name() -> Object {
    doc::pattern(1, MAX_NAME, "^[A-Za-z0-9_.-]*$").build()
}

fn weight() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .minimum(Some(0))
        .maximum(Some(100))
        .build()
}

/// 2–20 variants.
fn variants() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .items(<VariantBody as utoipa::PartialSchema>::schema())
            .min_items(Some(2))
            .max_items(Some(MAX_VARIANTS))
            .build(),
    )
}

fn variants_or_null() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(<VariantBody as utoipa::PartialSchema>::schema())
            .min_items(Some(2))
            .max_items(Some(MAX_VARIANTS))
            .build(),
    )
}

fn coverage() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .minimum(Some(0))
        .maximum(Some(1))
        .build()
}

fn seed() -> Object {
    doc::nullable(doc::text(1, MAX_SEED, Text::Exact)).build()
}

impl From<VariantBody> for Variant {
    fn from(v: VariantBody) -> Self {
        Variant {
            name: v.name,
            weight: v.weight,
        }
    }
}

/// A new experiment. Weights sum to 100; the first variant is the control.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExperiment {
    /// 1–64 characters of a-z, 0-9, `_`, `-`, `.`, starting with a letter or digit.
    #[schema(schema_with = key_name)]
    pub key: String,
    /// 2–20 variants; weights sum to 100.
    #[schema(schema_with = variants)]
    pub variants: Vec<VariantBody>,
    /// Fraction of users in the experiment (0–1, default 1).
    #[schema(schema_with = coverage)]
    pub coverage: Option<f64>,
    /// Hash seed, 1–128 characters without control characters (default: the key).
    #[schema(schema_with = seed)]
    pub seed: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Created {
    pub key: String,
    pub version: i64,
}

/// Define an experiment (draft). Admin only.
#[utoipa::path(post, path = "/v1/experiments", tag = "experiments",
    security(("bearer" = [])),
    request_body = CreateExperiment,
    responses(
        (status = 201, body = Created),
        (status = 400, description = "invalid key, variants, weights, coverage or seed", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 409, description = "the key exists", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateExperiment>,
) -> Result<Answer<Created>, AppError> {
    actor.require_admin()?;
    let key = body.key.clone();
    let done = state
        .experiments
        .create(
            &actor.ctx,
            NewExperiment {
                key: body.key,
                variants: body.variants.into_iter().map(Into::into).collect(),
                coverage: body.coverage,
                seed: body.seed,
            },
        )
        .await?;
    Ok(Answer::created(
        Domain::Experiment,
        done.position,
        Created {
            key,
            version: done.version,
        },
    ))
}

/// New weights and/or coverage. While running, variants keep their names and order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateExperiment {
    #[schema(schema_with = variants_or_null)]
    pub variants: Option<Vec<VariantBody>>,
    #[schema(schema_with = coverage)]
    pub coverage: Option<f64>,
}

/// Change weights or coverage; they apply to users not yet exposed. Admin only.
#[utoipa::path(patch, path = "/v1/experiments/{key}", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key")),
    request_body = UpdateExperiment,
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "experiment_stopped, variants_changed", body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(key): Path<String>,
    Json(body): Json<UpdateExperiment>,
) -> Result<Answer<Version>, AppError> {
    actor.require_admin()?;
    let variants = body
        .variants
        .map(|vs| vs.into_iter().map(Into::into).collect());
    let done = state
        .experiments
        .update(&actor.ctx, &key, variants, body.coverage)
        .await?;
    Ok(Answer::version(Domain::Experiment, done))
}

/// Start an experiment (draft → running). Admin only.
#[utoipa::path(post, path = "/v1/experiments/{key}/start", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "experiment_stopped", body = ErrorBody),
    ))]
async fn start(
    State(state): State<AppState>,
    actor: Actor,
    Path(key): Path<String>,
) -> Result<Answer<Version>, AppError> {
    actor.require_admin()?;
    let done = state.experiments.start(&actor.ctx, &key).await?;
    Ok(Answer::version(Domain::Experiment, done))
}

/// Stop an experiment (running → stopped). Admin only.
#[utoipa::path(post, path = "/v1/experiments/{key}/stop", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key")),
    responses(
        (status = 200, body = Version),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "experiment_not_started", body = ErrorBody),
    ))]
async fn stop(
    State(state): State<AppState>,
    actor: Actor,
    Path(key): Path<String>,
) -> Result<Answer<Version>, AppError> {
    actor.require_admin()?;
    let done = state.experiments.stop(&actor.ctx, &key).await?;
    Ok(Answer::version(Domain::Experiment, done))
}

/// The caller's variant. Outside the experiment the control, with `in_experiment: false`.
#[derive(Serialize, ToSchema)]
pub struct AssignmentBody {
    pub variant: String,
    pub in_experiment: bool,
}

/// The caller's variant: GrowthBook hashing v2 of the caller's id, sticky once exposed; the
/// first read while running records the exposure.
#[utoipa::path(get, path = "/v1/experiments/{key}/assignment", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key")),
    responses(
        (status = 200, body = AssignmentBody),
        (status = 404, body = ErrorBody),
    ))]
async fn assignment(
    State(state): State<AppState>,
    actor: Actor,
    Path(key): Path<String>,
) -> Result<Answer<AssignmentBody>, AppError> {
    let a = state
        .experiments
        .assign(&actor.ctx, &key, actor.user_id)
        .await?;
    Ok(Answer::ok(
        Domain::Experiment,
        a.position,
        AssignmentBody {
            variant: a.variant,
            in_experiment: a.in_experiment,
        },
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// 1–64 characters of a-z, 0-9, `_`, `-`, `.`, starting with a letter or digit.
    #[schema(schema_with = key_name)]
    pub metric: String,
}

#[derive(Serialize, ToSchema)]
pub struct Counted {
    /// Whether this call counted (false: not exposed, already counted, or withdrawn).
    pub counted: bool,
}

/// Record the caller's conversion on a metric: counted once per user and metric, and only
/// for users exposed to the (running) experiment.
#[utoipa::path(post, path = "/v1/experiments/{key}/conversions", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key")),
    request_body = Conversion,
    responses(
        (status = 200, body = Counted),
        (status = 404, body = ErrorBody),
        (status = 422, description = "experiment_not_running", body = ErrorBody),
    ))]
async fn convert(
    State(state): State<AppState>,
    actor: Actor,
    Path(key): Path<String>,
    Json(body): Json<Conversion>,
) -> Result<Answer<Counted>, AppError> {
    let (counted, done) = state
        .experiments
        .convert(&actor.ctx, &key, actor.user_id, &body.metric)
        .await?;
    Ok(Answer::ok(
        Domain::Experiment,
        done.position,
        Counted { counted },
    ))
}

#[derive(Serialize, ToSchema)]
pub struct MetricBody {
    pub conversions: i64,
    pub rate: f64,
    /// Relative to the control's rate (null for the control or when undefined).
    pub uplift: Option<f64>,
    /// 95 % confidence interval of the uplift (delta method).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Two-sided p-value of the pooled two-proportion z-test against the control.
    pub p_value: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct VariantResultBody {
    pub name: String,
    pub users: i64,
    pub metrics: BTreeMap<String, MetricBody>,
}

#[derive(Serialize, ToSchema)]
pub struct ResultsBody {
    pub key: String,
    pub status: String,
    pub variants: Vec<VariantResultBody>,
    /// Chi-square p-value of users per variant against the weights.
    pub srm_p_value: Option<f64>,
    /// `srm_p_value` < 0.001.
    pub srm_flag: bool,
    /// Users exposed to more than one variant (excluded from every count).
    pub multiple_exposures: i64,
}

impl From<view::Results> for ResultsBody {
    fn from(r: view::Results) -> Self {
        ResultsBody {
            key: r.key,
            status: r.status,
            variants: r
                .variants
                .into_iter()
                .map(|v| VariantResultBody {
                    name: v.name,
                    users: v.users,
                    metrics: v
                        .metrics
                        .into_iter()
                        .map(|(k, m)| {
                            (
                                k,
                                MetricBody {
                                    conversions: m.conversions,
                                    rate: m.rate,
                                    uplift: m.uplift,
                                    ci_low: m.ci_low,
                                    ci_high: m.ci_high,
                                    p_value: m.p_value,
                                },
                            )
                        })
                        .collect(),
                })
                .collect(),
            srm_p_value: r.srm_p_value,
            srm_flag: r.srm_flag,
            multiple_exposures: r.multiple_exposures,
        }
    }
}

crate::views!(
    /// The experiment results view.
    ResultReads: (experiment_results::NAME, &[Domain::Experiment])
);

/// The experiment's results, from the `experiment_results` view (honours
/// `X-Nova-Min-Position: experiment:<pos>`).
#[utoipa::path(get, path = "/v1/experiments/{key}/results", tag = "experiments",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "experiment key"),
           MinPosition<ResultReads>),
    responses(
        (status = 200, body = ResultsBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn results(
    State(state): State<AppState>,
    _actor: Actor,
    Path(key): Path<String>,
    min: MinPosition<ResultReads>,
) -> Result<Json<ResultsBody>, AppError> {
    min.wait(&state).await?;
    match view::results(&state.db.any, &key).await? {
        Some(r) => Ok(Json(r.into())),
        None => Err(AppError::not_found("experiment")),
    }
}
