//! Ops routes (API.md "Analysts and ops"): projection status (role `admin` or `analyst`),
//! rebuilds and erasure of a person's data (role `admin`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use nova_projections::status::{status, ProjectionStatus};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Answer, Json, Path};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projections))
        .routes(routes!(rebuild))
        .routes(routes!(erase_user))
}

/// Rebuilds started through the API in this process, by projection name.
pub type Rebuilds = Arc<Mutex<HashMap<String, RebuildState>>>;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RebuildState {
    /// `running`, `done` or `failed`.
    state: String,
    position: i64,
    head: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionRow {
    /// A projection's or a policy's name.
    projection: String,
    /// `projection` or `policy`.
    kind: String,
    domain: String,
    position: i64,
    head: i64,
    lag_events: i64,
    lag_seconds: f64,
    status: String,
    /// Events parked in `dead_letters` (policies; `nova projections retry` handles them).
    dead_letters: i64,
    /// Progress of a rebuild started through the API, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuild: Option<RebuildState>,
}

impl From<ProjectionStatus> for ProjectionRow {
    fn from(s: ProjectionStatus) -> Self {
        ProjectionRow {
            projection: s.projection,
            kind: s.kind.to_owned(),
            domain: s.domain.as_str().to_owned(),
            position: s.checkpoint,
            head: s.head,
            lag_events: s.lag_events,
            lag_seconds: s.lag_seconds,
            status: s.state.to_owned(),
            dead_letters: s.dead_letters,
            rebuild: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionList {
    items: Vec<ProjectionRow>,
    /// Side copies of views as they stood at an instant (`nova projections rebuild <name>
    /// --as-of <time>`; ADR 0024): `{id, projection, as_of, state, tables, positions,
    /// created_at}`.
    #[schema(value_type = Vec<Object>)]
    as_of_copies: Vec<nova_projections::as_of::AsOfCopy>,
}

/// Each projection and policy per consumed domain: position, head, lag, status; and the as-of
/// copies.
#[utoipa::path(get, path = "/v1/projections", tag = "ops", security(("bearer" = [])),
    responses(
        (status = 200, body = ProjectionList),
        (status = 403, body = ErrorBody),
    ))]
async fn projections(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Json<ProjectionList>, AppError> {
    actor.require_analyst()?;
    let rebuilds = state
        .rebuilds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let items = status(&state.db.store, &state.db.any, nova_policies::CATALOG)
        .await
        .map_err(AppError::unavailable)?
        .into_iter()
        .map(|s| {
            let mut row = ProjectionRow::from(s);
            row.rebuild = rebuilds.get(&row.projection).cloned();
            row
        })
        .collect();
    let as_of_copies = nova_projections::as_of::list(&state.db.any)
        .await
        .map_err(AppError::unavailable)?;
    Ok(Json(ProjectionList {
        items,
        as_of_copies,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct RebuildStarted {
    projection: String,
    state: String,
}

/// Start a zero-downtime rebuild from the event store (role `admin`). Progress appears in
/// `GET /v1/projections`.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "ops", security(("bearer" = [])),
    params(("name" = String, Path, description = "projection name")),
    responses(
        (status = 202, body = RebuildStarted),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "a rebuild is already running", body = ErrorBody),
    ))]
async fn rebuild(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RebuildStarted>), AppError> {
    actor.require_admin()?;
    let target =
        nova_projections::rebuild::target(&name).map_err(|_| AppError::not_found("projection"))?;
    let busy = || {
        AppError::new(
            StatusCode::CONFLICT,
            "rebuild_in_progress",
            "a rebuild of this projection is already running",
        )
    };
    // The lease is taken before answering, so a rebuild running in another process (or this
    // one) is a 409 here rather than a failure reported later.
    let lease = match nova_projections::rebuild::Lease::take(&state.db.any, &name).await {
        Ok(lease) => lease,
        Err(nova_projections::rebuild::RebuildError::Busy(_)) => return Err(busy()),
        Err(e) => return Err(AppError::unavailable(e)),
    };
    {
        let mut map = state.rebuilds.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            name.clone(),
            RebuildState {
                state: "running".into(),
                position: 0,
                head: 0,
                error: None,
            },
        );
    }
    let rebuilds = state.rebuilds.clone();
    let key = name.clone();
    tokio::spawn(async move {
        let progress = {
            let rebuilds = rebuilds.clone();
            let key = key.clone();
            move |p: nova_projections::rebuild::Progress| {
                if let Some(r) = rebuilds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&key)
                {
                    r.position = p.position;
                    r.head = p.head;
                }
            }
        };
        let result = nova_projections::rebuild::rebuild_target(
            lease,
            target,
            state.search.root(),
            &state.db.store,
            &state.db.any,
            &state.checkpoints,
            progress,
        )
        .await;
        let mut map = rebuilds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = map.get_mut(&key) {
            match result {
                Ok(report) => {
                    r.state = "done".into();
                    if let Some((_, p)) = report.positions.last() {
                        r.position = *p;
                        r.head = r.head.max(*p);
                    }
                }
                Err(e) => {
                    tracing::error!(projection = %key, error = %e, "rebuild failed");
                    r.state = "failed".into();
                    r.error = Some(e.to_string());
                }
            }
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(RebuildStarted {
            projection: name,
            state: "running".into(),
        }),
    ))
}

/// Erase a deactivated user's personal data by crypto-shredding (role `admin`; ADR 0025): their
/// data key is destroyed, so every sealed field of theirs in the history reads as `"[erased]"`,
/// `user.erased` is appended, and every view drops what it derived from them. Idempotent: a
/// second call answers `erased_now: false`. 422 `account_active` for a user who is not
/// deactivated; 404 for an unknown one.
#[utoipa::path(post, path = "/v1/admin/users/{id}/erase", tag = "ops", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user to erase")),
    responses(
        (status = 200, body = crate::erasure::ErasureReport),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "the user is not deactivated", body = ErrorBody),
    ))]
async fn erase_user(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<crate::erasure::ErasureReport>, AppError> {
    actor.require_admin()?;
    let report = crate::erasure::erase_user(
        &state.db,
        &state.users,
        &actor.ctx,
        id,
        crate::erasure::VIEWS_WAIT,
    )
    .await?;
    Ok(Answer::ok(
        nova_event_schemas::Domain::User,
        report.position,
        report,
    ))
}
