//! Where each projection stands: its checkpoint per domain against the domain's head, as
//! events and as seconds (age of the oldest event not yet applied). Feeds
//! `nova projections status`, `GET /v1/projections` and the lag metrics.

use nova_event_schemas::Domain;
use nova_infra::store::{EventStore, ReadFilter};
use serde::Serialize;
use sqlx::AnyPool;

use crate::{Checkpoints, ProjectionError};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProjectionStatus {
    pub projection: String,
    /// `projection` (a read model) or `policy` (a consumer that issues commands).
    pub kind: &'static str,
    pub domain: Domain,
    pub checkpoint: i64,
    pub head: i64,
    pub lag_events: i64,
    /// Age of the oldest event not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// `caught_up` or `behind`.
    pub state: &'static str,
    /// Events parked in `dead_letters` (policies only; ADR 0023).
    pub dead_letters: i64,
}

/// The status of every projection, and of the `policies` named (name and consumed domains:
/// `nova_policies::CATALOG`; policies keep their checkpoints in the same table).
pub async fn status(
    store: &EventStore,
    pool: &AnyPool,
    policies: &[(&str, &[Domain])],
) -> Result<Vec<ProjectionStatus>, ProjectionError> {
    let checkpoints = Checkpoints::default();
    let mut out = Vec::new();
    // The SQL projections, and the search index (whose checkpoint is mirrored into the same
    // table after each commit; ADR 0013).
    let mut views: Vec<(String, &[Domain], &'static str)> = crate::all()
        .iter()
        .map(|p| (p.name().to_owned(), p.domains(), "projection"))
        .collect();
    views.push((
        crate::search::NAME.to_owned(),
        crate::search::DOMAINS,
        "projection",
    ));
    views.extend(
        policies
            .iter()
            .map(|(name, domains)| ((*name).to_owned(), *domains, "policy")),
    );
    let parked: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT consumer, domain, COUNT(*) FROM dead_letters GROUP BY consumer, domain",
    )
    .fetch_all(pool)
    .await?;
    let parked_of = |name: &str, domain: Domain| {
        parked
            .iter()
            .find(|(c, d, _)| c == name && d == domain.as_str())
            .map_or(0, |(_, _, n)| *n)
    };
    for (name, domains, kind) in views {
        for &domain in domains {
            let checkpoint = checkpoints.load(pool, &name, domain).await?;
            let head = store.head(domain).await?;
            let lag_events = (head - checkpoint).max(0);
            let lag_seconds = if lag_events == 0 {
                0.0
            } else {
                let next = store
                    .read(
                        domain,
                        &ReadFilter {
                            after_position: checkpoint,
                            limit: 1,
                            ..Default::default()
                        },
                    )
                    .await?;
                next.first().map_or(0.0, |e| {
                    (chrono::Utc::now() - e.recorded_at)
                        .num_milliseconds()
                        .max(0) as f64
                        / 1000.0
                })
            };
            out.push(ProjectionStatus {
                projection: name.clone(),
                kind,
                domain,
                checkpoint,
                head,
                lag_events,
                lag_seconds,
                state: if lag_events == 0 {
                    "caught_up"
                } else {
                    "behind"
                },
                dead_letters: parked_of(&name, domain),
            });
        }
    }
    Ok(out)
}

/// Publishes the status as gauges.
pub fn record_metrics(statuses: &[ProjectionStatus]) {
    for s in statuses {
        let labels = [
            ("projection", s.projection.clone()),
            ("domain", s.domain.as_str().to_owned()),
        ];
        metrics::gauge!("nova_projection_checkpoint", &labels).set(s.checkpoint as f64);
        metrics::gauge!("nova_projection_lag_events", &labels).set(s.lag_events as f64);
        metrics::gauge!("nova_projection_lag_seconds", &labels).set(s.lag_seconds);
        metrics::gauge!("nova_dead_letters", &labels).set(s.dead_letters as f64);
    }
}
