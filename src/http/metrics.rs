//! Prometheus metrics: the process-wide recorder, `GET /metrics`, and the per-request
//! middleware (status counts by route, latency histogram by route).
//!
//! `/metrics` is not public (ADR 0012): it is served on its own listener
//! (`NOVA_METRICS_ADDR`, meant for a private interface), and on the API listener only to
//! callers presenting `NOVA_METRICS_TOKEN` as a bearer token. With neither configured it is
//! not served at all.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for every `*_seconds` histogram.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the recorder once per process (tests start several applications in one process).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}

/// The bearer token that opens `/metrics` on the API listener (kept as its SHA-256, so the
/// comparison takes the same time whatever the guess).
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &SecretString) -> Self {
        Token(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Ok(Some(given)) = super::extract::bearer(headers) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given == self.0
    }
}

/// `GET /metrics` on the API listener: only with the metrics token.
pub async fn render_with_token(
    State(state): State<super::AppState>,
    headers: HeaderMap,
) -> Response {
    match &state.metrics_token {
        Some(token) if token.admits(&headers) => render().await,
        _ => super::error::AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the metrics token is missing or wrong",
        )
        .into_response(),
    }
}

/// The router of the separate metrics listener (`NOVA_METRICS_ADDR`).
pub fn router() -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(render))
}

pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("nova_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("nova_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}
