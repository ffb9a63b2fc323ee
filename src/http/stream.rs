//! Routes of the `streams` area (API.md "Live streams"): creating a stream (its key shown
//! once), start / end / key rotation by the broadcaster, viewers joining (the heartbeat) and
//! leaving, the live list and one stream, and the media server's publish hooks
//! (nginx-rtmp-module's `on_publish` / `on_publish_done`: form-encoded, the key in `name`,
//! 2xx lets the publish proceed, anything else refuses it), guarded by `NOVA_INGEST_SECRET`.
//!
//! Answers that carry a key are sent `Cache-Control: no-store` and never stored for
//! idempotency (`http::idempotency`); the key is in no log line (the request span logs the
//! path only, never the query or the body).

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{header, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use nova_commands::stream::{MAX_DESCRIPTION, MAX_TITLE};
use nova_event_schemas::Domain;
use nova_projections::stream_view;
use nova_queries::stream::{self as view, LiveCursor, LiveRow};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    position_header, Actor, Answer, Ctx, Json, LimitParam, ListFilter, MinPosition, PageBody,
    PageQuery, Path, Query, Version,
};
use super::openapi::{self as doc, Text};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(start))
        .routes(routes!(end))
        .routes(routes!(rotate_key))
        .routes(routes!(join, leave))
        .routes(routes!(live))
        .routes(routes!(get_stream))
        .routes(routes!(on_publish))
        .routes(routes!(on_publish_done))
}

crate::views!(
    /// The stream view.
    StreamReads: (stream_view::NAME, &[Domain::Stream])
);

/// A new stream.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1–200 characters, not blank, no control characters (trimmed).
    #[schema(schema_with = title)]
    pub title: String,
    /// 1–2000 characters, not blank; line feeds and tabs allowed (trimmed).
    #[schema(schema_with = description)]
    pub description: Option<String>,
}

fn title() -> utoipa::openapi::schema::Object {
    doc::text(1, MAX_TITLE, Text::Trimmed).build()
}

fn description() -> utoipa::openapi::schema::Object {
    doc::nullable(doc::text(1, MAX_DESCRIPTION, Text::TrimmedLfTab)).build()
}

#[derive(Serialize, ToSchema)]
pub struct CreatedStream {
    pub stream_id: Uuid,
    /// The stream key for the media server (`rtmp://…/live/<key>`). Shown this once; only its
    /// hash is kept.
    pub stream_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// The new key, shown this once; the previous key is refused from now on.
    pub stream_key: String,
}

/// A response carrying a key: never cached.
fn with_key<T: Serialize>(status: StatusCode, position: Option<i64>, body: T) -> Response {
    (
        status,
        AppendHeaders(position_header(Domain::Stream, position)),
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

/// Create a stream. Answers its key once (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/v1/streams", tag = "streams",
    security(("bearer" = [])),
    request_body = CreateStream,
    responses(
        (status = 201, body = CreatedStream),
        (status = 400, description = "invalid title or description", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateStream>,
) -> Result<Response, AppError> {
    let new = state
        .streams
        .create(
            &actor.ctx,
            actor.user_id,
            &body.title,
            body.description.as_deref(),
        )
        .await?;
    Ok(with_key(
        StatusCode::CREATED,
        new.done.position,
        CreatedStream {
            stream_id: new.stream_id,
            stream_key: new.key.expose_secret().to_owned(),
        },
    ))
}

/// Go live (the broadcaster, without a media server; the publish hook does it otherwise).
#[utoipa::path(post, path = "/v1/streams/{id}/start", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id")),
    responses(
        (status = 200, body = Version),
        (status = 403, description = "not the broadcaster", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "stream_ended, stream_disabled", body = ErrorBody),
    ))]
async fn start(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.streams.start(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Stream, done))
}

/// End the stream; its summary (duration, peak and unique viewers) is recorded.
#[utoipa::path(post, path = "/v1/streams/{id}/end", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id")),
    responses(
        (status = 200, body = Version),
        (status = 403, description = "not the broadcaster", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "stream_not_live", body = ErrorBody),
    ))]
async fn end(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Answer<Version>, AppError> {
    let done = state.streams.end(&actor.ctx, actor.user_id, id).await?;
    Ok(Answer::version(Domain::Stream, done))
}

/// Replace the stream key: answers the new key once; the old one stops working at once.
#[utoipa::path(post, path = "/v1/streams/{id}/key/rotate", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id")),
    responses(
        (status = 200, body = RotatedKey),
        (status = 403, description = "not the broadcaster", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "stream_ended, stream_disabled", body = ErrorBody),
    ))]
async fn rotate_key(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let (key, done) = state
        .streams
        .rotate_key(&actor.ctx, actor.user_id, id)
        .await?;
    Ok(with_key(
        StatusCode::OK,
        done.position,
        RotatedKey {
            stream_key: key.expose_secret().to_owned(),
        },
    ))
}

/// Join a live stream as a viewer; repeat at least every 60 s as a heartbeat (a viewer silent
/// for 60 s is gone).
#[utoipa::path(post, path = "/v1/streams/{id}/viewers", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id")),
    responses(
        (status = 204, description = "counted"),
        (status = 404, body = ErrorBody),
        (status = 422, description = "stream_not_live, stream_ended", body = ErrorBody),
    ))]
async fn join(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AppError> {
    state.streams.join(actor.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop watching.
#[utoipa::path(delete, path = "/v1/streams/{id}/viewers", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id")),
    responses(
        (status = 204, description = "no longer counted"),
        (status = 404, body = ErrorBody),
    ))]
async fn leave(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AppError> {
    state.streams.leave(actor.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The live list's own cursor (`(viewers, stream_id)` of the last item).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveFilter {
    /// `next_cursor` of the previous page of the live list.
    #[param(schema_with = live_cursor)]
    pub cursor: Option<String>,
}

fn live_cursor() -> utoipa::openapi::schema::Object {
    super::openapi::cursor("nova-live-cursor").build()
}

impl ListFilter for LiveFilter {
    const KEYS: &'static [&'static str] = &[];
    const OWN_CURSOR: bool = true;
}

/// One live stream.
#[derive(Serialize, ToSchema)]
pub struct LiveItem {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub title: String,
    /// Viewers now (recounted at least every second).
    pub viewers: i64,
    /// RFC 3339.
    pub started_at: String,
}

impl From<LiveRow> for LiveItem {
    fn from(r: LiveRow) -> Self {
        LiveItem {
            stream_id: r.stream_id,
            broadcaster_id: r.broadcaster_id,
            title: r.title,
            viewers: r.viewers,
            started_at: r.started_at.to_string(),
        }
    }
}

/// Streams live now, most viewers first.
#[utoipa::path(get, path = "/v1/streams/live", tag = "streams",
    security(("bearer" = [])),
    params(LimitParam, LiveFilter,
           MinPosition<StreamReads>),
    responses(
        (status = 200, body = PageBody<LiveItem>),
        (status = 400, description = "malformed limit or cursor", body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn live(
    State(state): State<AppState>,
    _actor: Actor,
    PageQuery(page, filter): PageQuery<LiveFilter>,
    min: MinPosition<StreamReads>,
) -> Result<Json<PageBody<LiveItem>>, AppError> {
    let after = filter
        .cursor
        .map(|c| {
            LiveCursor::decode(&c).ok_or_else(|| {
                AppError::invalid_field(
                    "cursor",
                    "cursor is invalid; pass the next_cursor of a previous page of this list",
                )
            })
        })
        .transpose()?;
    min.wait(&state).await?;
    Ok(Json(
        view::live(&state.db.any, page.limit, after).await?.into(),
    ))
}

/// One stream.
#[derive(Serialize, ToSchema)]
pub struct StreamBody {
    pub stream_id: Uuid,
    pub broadcaster_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    /// `created`, `live` or `ended`.
    pub status: String,
    /// The broadcaster was deactivated: the stream cannot go live.
    pub disabled: bool,
    /// Watching now (0 unless live).
    pub viewers: i64,
    /// Most viewers at once so far (final once ended).
    pub peak_viewers: i64,
    /// Distinct viewers so far (final once ended).
    pub unique_viewers: i64,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Whole seconds live, once ended.
    pub duration_secs: Option<i64>,
}

/// A stream with its audience: live counts from presence, an ended stream's summary from its
/// `ended` event.
#[utoipa::path(get, path = "/v1/streams/{id}", tag = "streams",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "stream id"),
           MinPosition<StreamReads>),
    responses(
        (status = 200, body = StreamBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "the view is lagging", body = ErrorBody),
    ))]
async fn get_stream(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
    min: MinPosition<StreamReads>,
) -> Result<Json<StreamBody>, AppError> {
    min.wait(&state).await?;
    let row = view::get(&state.db.any, id)
        .await?
        .ok_or_else(|| AppError::not_found("stream"))?;
    let (viewers, peak, unique) = if row.status == "live" {
        let c = state.streams.audience(id).await?;
        (c.viewers, c.peak, c.unique)
    } else {
        (
            0,
            row.peak_viewers.unwrap_or(0),
            row.unique_viewers.unwrap_or(0),
        )
    };
    Ok(Json(StreamBody {
        stream_id: row.stream_id,
        broadcaster_id: row.broadcaster_id,
        title: row.title,
        description: row.description,
        status: row.status,
        disabled: row.disabled.0,
        viewers,
        peak_viewers: peak,
        unique_viewers: unique,
        created_at: row.created_at.to_string(),
        started_at: row.started_at.map(|t| t.to_string()),
        ended_at: row.ended_at.map(|t| t.to_string()),
        duration_secs: row.duration_secs,
    }))
}

/// `?secret=` of the publish hooks.
#[derive(Deserialize)]
pub struct HookQuery {
    pub secret: Option<String>,
}

/// What nginx-rtmp posts (form-encoded; other fields — `app`, `addr`, `call`, … — are
/// ignored): the stream key is the stream's name in `rtmp://host/<app>/<name>`.
#[derive(Deserialize, ToSchema)]
pub struct HookForm {
    pub name: Option<String>,
}

/// The hooks' shared secret, compared in constant time (over digests, so the length of the
/// configured secret does not show either).
fn check_ingest_secret(state: &AppState, presented: Option<&str>) -> Result<(), AppError> {
    let refused = || AppError::forbidden("the ingest secret is missing or wrong");
    let (Some(expected), Some(presented)) = (state.ingest_secret.as_ref(), presented) else {
        return Err(refused());
    };
    let a = Sha256::digest(expected.expose_secret().as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The hook's key, checked for shape; the form itself malformed is a 400.
fn hook_key(
    state: &AppState,
    query: &HookQuery,
    form: Result<Form<HookForm>, FormRejection>,
) -> Result<SecretString, AppError> {
    check_ingest_secret(state, query.secret.as_deref())?;
    let Form(form) =
        form.map_err(|r| AppError::new(StatusCode::BAD_REQUEST, "invalid_form", r.body_text()))?;
    form.name
        .filter(|n| !n.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| AppError::invalid_field("name", "the stream key (name) is missing"))
}

/// nginx-rtmp `on_publish`: a publish with a valid key starts the stream (2xx); any other
/// answer makes the media server refuse the publish.
#[utoipa::path(post, path = "/v1/streams/hooks/on_publish", tag = "streams",
    params(("secret" = String, Query, description = "NOVA_INGEST_SECRET")),
    request_body(content = HookForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = Version),
        (status = 400, description = "no key in the form", body = ErrorBody),
        (status = 403, description = "wrong secret or key refused", body = ErrorBody),
        (status = 422, description = "stream ended or disabled", body = ErrorBody),
    ))]
async fn on_publish(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Query(query): Query<HookQuery>,
    form: Result<Form<HookForm>, FormRejection>,
) -> Result<Answer<Version>, AppError> {
    let key = hook_key(&state, &query, form)?;
    let done = state.streams.publish(&ctx, &key).await?;
    Ok(Answer::version(Domain::Stream, done))
}

/// nginx-rtmp `on_publish_done`: the publish with this key ended, so does the stream.
#[utoipa::path(post, path = "/v1/streams/hooks/on_publish_done", tag = "streams",
    params(("secret" = String, Query, description = "NOVA_INGEST_SECRET")),
    request_body(content = HookForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = Version),
        (status = 400, description = "no key in the form", body = ErrorBody),
        (status = 403, description = "wrong secret or key refused", body = ErrorBody),
    ))]
async fn on_publish_done(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Query(query): Query<HookQuery>,
    form: Result<Form<HookForm>, FormRejection>,
) -> Result<Answer<Version>, AppError> {
    let key = hook_key(&state, &query, form)?;
    let done = state.streams.publish_done(&ctx, &key).await?;
    Ok(Answer::version(Domain::Stream, done))
}
