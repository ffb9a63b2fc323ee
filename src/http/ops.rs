//! Ops routes (API.md "Analysts and ops"): projection status. Role `admin` or `analyst`.

use axum::extract::State;
use axum::http::StatusCode;
use nova_projections::status::{status, ProjectionStatus};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{AppError, ErrorBody};
use super::extract::{Auth, Json};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(projections))
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionRow {
    projection: String,
    domain: String,
    position: i64,
    head: i64,
    lag_events: i64,
    lag_seconds: f64,
    status: String,
}

impl From<ProjectionStatus> for ProjectionRow {
    fn from(s: ProjectionStatus) -> Self {
        ProjectionRow {
            projection: s.projection,
            domain: s.domain.as_str().to_owned(),
            position: s.checkpoint,
            head: s.head,
            lag_events: s.lag_events,
            lag_seconds: s.lag_seconds,
            status: s.state.to_owned(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectionList {
    items: Vec<ProjectionRow>,
}

/// Each projection per consumed domain: position, head, lag, status.
#[utoipa::path(get, path = "/v1/projections", tag = "ops", security(("bearer" = [])),
    responses(
        (status = 200, body = ProjectionList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
async fn projections(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ProjectionList>, AppError> {
    if !(auth.0.admin || auth.0.analyst) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route needs the admin or analyst role",
        ));
    }
    let items = status(&state.db.store, &state.db.any)
        .await
        .map_err(AppError::unavailable)?
        .into_iter()
        .map(ProjectionRow::from)
        .collect();
    Ok(Json(ProjectionList { items }))
}
