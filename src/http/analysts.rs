//! Analysts' routes (API.md "Analysts and ops"): the event history, upcast to the latest schema
//! versions, as a JSON page or streamed NDJSON; an aggregate's state at a version or instant
//! (ADR 0024). Role `analyst` or `admin`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use nova_event_schemas::Domain;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::Object;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Json, Path, Query as NovaQuery};
use super::openapi as doc;
use super::AppState;
use crate::export::{self, ExportFilter};
use crate::timetravel::{self, At, StateAt, StateError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events))
        .routes(routes!(aggregate_state))
}

const NDJSON: &str = "application/x-ndjson";
/// Largest JSON page.
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    domain: String,
    #[serde(rename = "type")]
    event_type: Option<String>,
    aggregate_id: Option<Uuid>,
    after: Option<i64>,
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

impl IntoParams for EventsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::query(
                "domain",
                true,
                "positions are per domain, so the domain is required",
                domain(),
            ),
            doc::query(
                "type",
                false,
                "stored event type, e.g. `registered`",
                doc::pattern(1, MAX_EVENT_TYPE, EVENT_TYPE_PATTERN),
            ),
            doc::query("aggregate_id", false, "one aggregate's events", doc::uuid()),
            doc::query(
                "after",
                false,
                "position, exclusive (below 0: from the start)",
                doc::integer(i64::MIN, i64::MAX),
            ),
            doc::query("until", false, "RFC 3339 instant, inclusive", instant()),
            doc::query(
                "limit",
                false,
                "events in a JSON page (default 100, at most 1000: larger asks are cut); in \
                 NDJSON, the total (default all)",
                doc::integer(1, i64::MAX),
            ),
        ]
    }
}

/// Event type names (`snake_case`), as the `type` filter takes them: anything else could not
/// name an event, and is a 400 before it reaches the store.
const EVENT_TYPE_PATTERN: &str = "^[a-z][a-z0-9_]*$";
const MAX_EVENT_TYPE: usize = 64;

fn valid_event_type(t: &str) -> bool {
    t.len() <= MAX_EVENT_TYPE
        && t.starts_with(|c: char| c.is_ascii_lowercase())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn domain() -> Object {
    doc::domain(&Domain::ALL).build()
}

fn instant() -> Object {
    doc::instant().build()
}

/// At least 1; a JSON page holds at most [`MAX_LIMIT`] (larger asks are cut to it).
fn version() -> Object {
    doc::integer(1, i64::MAX).build()
}

/// An aggregate's path: its domain and id.
struct AggregatePath;

impl IntoParams for AggregatePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::path("domain", "the aggregate's domain", domain()),
            doc::path("id", "aggregate id", doc::uuid()),
        ]
    }
}

/// One event as exported.
#[derive(Serialize, ToSchema)]
pub struct ExportedEvent {
    domain: String,
    position: i64,
    event_id: Uuid,
    aggregate_id: Uuid,
    aggregate_type: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    items: Vec<ExportedEvent>,
    /// Pass as `after` for the next page; `null` at the end.
    next_cursor: Option<String>,
}

/// A domain's event history in position order, upcast to each type's latest schema version.
/// With `Accept: application/x-ndjson` the whole (filtered) history is streamed, one event a
/// line, read from the store a page at a time; otherwise one `{items, next_cursor}` page.
#[utoipa::path(get, path = "/v1/events", tag = "analysts", security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, body = EventPage, description = "a page, or NDJSON (one ExportedEvent a line)"),
        (status = 403, body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    NovaQuery(q): NovaQuery<EventsQuery>,
) -> Result<Response, AppError> {
    actor.require_analyst()?;
    let domain = Domain::parse(&q.domain)
        .ok_or_else(|| AppError::invalid_field("domain", "unknown domain"))?;
    if q.event_type
        .as_deref()
        .is_some_and(|t| !valid_event_type(t))
    {
        return Err(AppError::invalid_field(
            "type",
            "an event type is 1–64 characters of a-z, 0-9 and _, starting with a letter",
        ));
    }
    if q.limit.is_some_and(|l| l < 1) {
        return Err(AppError::invalid_field("limit", "must be at least 1"));
    }
    let filter = ExportFilter {
        domain,
        event_type: q.event_type,
        aggregate_id: q.aggregate_id,
        after: q.after.unwrap_or(0).max(0),
        until: q.until,
    };
    let wants_ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    if wants_ndjson {
        return Ok(stream(state, filter, q.limit));
    }
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    let mut items = Vec::new();
    let mut after = filter.after;
    let mut more = true;
    while (items.len() as i64) < limit {
        let (page, scanned) =
            export::page(&state.db.store, &filter, after, limit - items.len() as i64)
                .await
                .map_err(AppError::unavailable)?;
        let Some(scanned) = scanned else {
            more = false;
            break;
        };
        after = scanned;
        items.extend(page.into_iter().map(exported));
    }
    if more {
        // Whether anything is left after `after` decides the cursor.
        let (_, scanned) = export::page(&state.db.store, &filter, after, 1)
            .await
            .map_err(AppError::unavailable)?;
        more = scanned.is_some();
    }
    Ok(Json(EventPage {
        items,
        next_cursor: more.then(|| after.to_string()),
    })
    .into_response())
}

fn exported(e: nova_infra::store::RecordedEvent) -> ExportedEvent {
    ExportedEvent {
        domain: e.domain.as_str().to_owned(),
        position: e.position,
        event_id: e.event_id,
        aggregate_id: e.aggregate_id,
        aggregate_type: e.aggregate_type,
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        payload: e.payload,
        metadata: serde_json::to_value(&e.metadata).unwrap_or_default(),
        recorded_at: e.recorded_at,
    }
}

/// Streams the history as NDJSON: one store page in memory at a time. An error after the
/// first byte ends the stream early (the status is already sent); it is logged.
fn stream(state: AppState, filter: ExportFilter, limit: Option<i64>) -> Response {
    let start = (filter.after, limit.unwrap_or(i64::MAX), false);
    let pages = futures::stream::unfold(start, move |(after, left, done)| {
        let store = state.db.store.clone();
        let filter = filter.clone();
        async move {
            if done || left <= 0 {
                return None;
            }
            match export::page(&store, &filter, after, left.min(export::PAGE)).await {
                Ok((_, None)) => None,
                Ok((page, Some(scanned))) => {
                    let mut buf = Vec::with_capacity(page.len() * 512);
                    let n = page.len() as i64;
                    for e in page.into_iter().take(left as usize) {
                        if serde_json::to_writer(&mut buf, &exported(e)).is_ok() {
                            buf.push(b'\n');
                        }
                    }
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                        (scanned, left - n, false),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "event export stopped");
                    Some((Err(std::io::Error::other(e.to_string())), (after, 0, true)))
                }
            }
        }
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(pages)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    version: Option<i64>,
    as_of: Option<DateTime<Utc>>,
}

impl IntoParams for StateQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::query(
                "version",
                false,
                "the state after this version (1 = the first event); not with `as_of`",
                version(),
            ),
            doc::query(
                "as_of",
                false,
                "the state after the last event recorded at or before this RFC 3339 instant; \
                 not with `version`",
                instant(),
            ),
        ]
    }
}

/// An aggregate's state at a version or an instant (neither: its current state), folded by the
/// aggregate's own `apply_event` over its events upcast to their latest schema versions.
#[utoipa::path(get, path = "/v1/aggregates/{domain}/{id}/state", tag = "analysts",
    security(("bearer" = [])),
    params(
        AggregatePath,
        StateQuery,
    ),
    responses(
        (status = 200, body = StateAt),
        (status = 400, description = "unknown domain, bad id, version < 1, or both version and as_of", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "unknown aggregate, version beyond the last, nothing recorded by as_of, or a domain without aggregates yet", body = ErrorBody),
    ))]
async fn aggregate_state(
    State(state): State<AppState>,
    actor: Actor,
    Path((domain, id)): Path<(String, String)>,
    NovaQuery(q): NovaQuery<StateQuery>,
) -> Result<Json<StateAt>, AppError> {
    actor.require_analyst()?;
    let domain = Domain::parse(&domain)
        .ok_or_else(|| AppError::invalid_field("domain", "unknown domain"))?;
    let id = Uuid::try_parse(&id).map_err(|_| AppError::invalid_field("id", "not a UUID"))?;
    let at = At::from_params(q.version, q.as_of).map_err(state_error)?;
    timetravel::state_at(&state.db.store, domain, id, at)
        .await
        .map(Json)
        .map_err(state_error)
}

fn state_error(e: StateError) -> AppError {
    use axum::http::StatusCode;
    let message = e.to_string();
    match e {
        StateError::Invalid(_) => AppError::new(StatusCode::BAD_REQUEST, "invalid_query", message),
        StateError::NoAggregates(_) => {
            AppError::new(StatusCode::NOT_FOUND, "no_aggregates", message)
        }
        StateError::UnknownAggregate => AppError::not_found("aggregate"),
        StateError::NotYet => AppError::new(StatusCode::NOT_FOUND, "not_yet", message),
        StateError::BeyondLast { last } => {
            AppError::new(StatusCode::NOT_FOUND, "no_such_version", message)
                .with_details(serde_json::json!({ "last_version": last }))
        }
        StateError::Store(e) => AppError::unavailable(e),
        StateError::Decode(_) | StateError::NoFold(_) | StateError::Serialize(_) => {
            AppError::internal(message)
        }
    }
}
