//! HTTP router assembly: one router per domain (`user`, …), system routes, and the layers every
//! request passes through (request id, tracing, body limit, idempotency).

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use nova_commands::conversation::keys::KeyServer;
use nova_commands::conversation::ConversationCommands;
use nova_commands::experiment::ExperimentCommands;
use nova_commands::follow::FollowCommands;
use nova_commands::post::PostCommands;
use nova_commands::user::notifications::NotificationCommands;
use nova_commands::user::UserCommands;
use nova_infra::db::Database;
use nova_projections::Checkpoints;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod analysts;
pub mod conversation;
pub mod error;
pub mod experiment;
pub mod extract;
pub mod feed;
pub mod follow;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod notification;
pub mod openapi;
pub mod ops;
pub mod post;
pub mod ratelimit;
pub mod search;
pub mod stream;
pub mod user;

use error::AppError;
use extract::{Json, REQUEST_ID};

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub users: UserCommands,
    pub follows: FollowCommands,
    pub posts: PostCommands,
    pub notifications: NotificationCommands,
    pub experiments: ExperimentCommands,
    pub streams: nova_commands::stream::StreamCommands,
    /// The media server's shared secret for the publish hooks (none: hooks refuse).
    pub ingest_secret: Option<std::sync::Arc<secrecy::SecretString>>,
    pub conversations: ConversationCommands,
    /// The conversation domain's key server and to-device queue.
    pub keys: KeyServer,
    pub checkpoints: Checkpoints,
    /// The search index (read side; in `nova serve` the projector writes the same index).
    pub search: nova_infra::search::LiveIndex,
    /// Set when `NOVA_NATS_URL` is configured.
    pub nats: Option<async_nats::Client>,
    pub rebuilds: ops::Rebuilds,
    /// Reads waiting for `X-Nova-Min-Position`, per client address.
    pub waits: extract::Waits,
    pub max_body_bytes: usize,
    pub idempotency: idempotency::Settings,
    /// Set when `NOVA_METRICS_TOKEN` is configured: `/metrics` on the API listener, with it.
    pub metrics_token: Option<metrics::Token>,
    /// Per-user and per-address quotas (ADR 0022).
    pub rate_limits: ratelimit::RateLimits,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Nova", description = "Event-sourced social backend. See API.md."),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations, with the answers of the
/// shared edge added to every operation ([`openapi::EdgeResponses`], ADR 0026).
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(api_router().split_for_parts().1)
}

fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    // After the merge: a modifier of `ApiDoc` would run before the routes are added.
    openapi::EdgeResponses.modify(&mut doc);
    doc
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(user::router())
        .merge(follow::router())
        .merge(post::router())
        .merge(feed::router())
        .merge(notification::router())
        .merge(search::router())
        .merge(ops::router())
        .merge(experiment::router())
        .merge(stream::router())
        .merge(keys::router())
        .merge(conversation::router())
        .merge(analysts::router())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let doc = finish(doc);
    let commands = idempotency::Commands::of(&doc);
    let doc = std::sync::Arc::new(doc);
    let mut api = api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    );
    if state.metrics_token.is_some() {
        api = api.route("/metrics", axum::routing::get(metrics::render_with_token));
    }
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), commands),
            idempotency::middleware,
        ))
        // Outside idempotency (a refused request stores nothing), inside metrics (429s are
        // counted per route).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::middleware,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(sanitize_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(http_span)
                        .on_response(on_response),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// The span of a request: method, path, the route that matched (`/v1/users/{id}`, empty for
/// no route) and the request id; `status` is recorded when the response is ready. Every span
/// below (command, …) and every log line of the request carries it.
fn http_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let rid = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `Router::layer` wraps each route, so routing has run and the matched path is known.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("", |m| m.as_str());
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        route,
        request_id = %rid,
        status = tracing::field::Empty,
    )
}

/// Records the status on the request's span and, at debug, logs the response in it.
fn on_response<B>(res: &axum::http::Response<B>, latency: Duration, span: &tracing::Span) {
    span.record("status", res.status().as_u16());
    tracing::debug!(latency_us = latency.as_micros() as u64, "response");
}

/// Longest client-supplied `X-Request-Id` that is kept; longer or non-printable ones are
/// dropped (and replaced by a generated id) so they cannot bloat logs and event metadata.
const MAX_REQUEST_ID: usize = 128;

async fn sanitize_request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bad = req.headers().get(REQUEST_ID).is_some_and(|v| {
        v.len() > MAX_REQUEST_ID || v.as_bytes().iter().any(|b| !b.is_ascii_graphic())
    });
    if bad {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

async fn not_found() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed(method: Method) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this route"),
    )
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The event store (and NATS, when configured) is reachable.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, body = Ready), (status = 503, body = error::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.db.store.ping()).await {
        Ok(Ok(())) => "up",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: event store down");
            "down"
        }
        Err(_) => "down",
    };
    let nats = state.nats.as_ref().map(|c| {
        if c.connection_state() == async_nats::connection::State::Connected {
            "up"
        } else {
            "down"
        }
    });
    let checks = serde_json::json!({ "store": store, "nats": nats.unwrap_or("not_configured") });
    if store == "up" && nats != Some("down") {
        return Ok(Json(Ready {
            status: "ready",
            checks,
        }));
    }
    Err(AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "a dependency is unavailable",
    )
    .with_details(checks)
    .retry_after(1))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ready {
    status: &'static str,
    /// `store` and `nats`: `up`, `down` or `not_configured`.
    #[schema(value_type = Object)]
    checks: serde_json::Value,
}
