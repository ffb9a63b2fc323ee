//! Event history for analysts (API.md "Analysts and ops", ADR 0016): a domain's events in
//! position order, upcast to their latest schema version, read from the store one page at a
//! time so that memory stays flat however long the history is. Shared by `GET /v1/events` and
//! `nova events export`.

use chrono::{DateTime, Utc};
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::{DecodeError, Domain, DomainEvent};
use nova_infra::store::{EventStore, ReadFilter, RecordedEvent, StoreError};
use uuid::Uuid;

/// Rows read from the store per page.
pub const PAGE: i64 = 1000;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportFilter {
    pub domain: Domain,
    pub event_type: Option<String>,
    pub aggregate_id: Option<Uuid>,
    /// Position, exclusive.
    pub after: i64,
    /// Recorded at or before this instant.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn latest_of<E: DomainEvent>(mut e: RecordedEvent) -> Result<RecordedEvent, DecodeError> {
    let event: E = e.decode()?;
    e.event_type = event.event_type().to_owned();
    e.schema_version = event.schema_version();
    e.payload = event.to_payload();
    Ok(e)
}

/// The event upcast to its type's latest schema version (domains without an event enum yet are
/// returned as stored).
pub fn latest(e: RecordedEvent) -> Result<RecordedEvent, DecodeError> {
    match e.domain {
        Domain::User => latest_of::<UserEvent>(e),
        Domain::Follow => latest_of::<FollowEvent>(e),
        Domain::Post => latest_of::<PostEvent>(e),
        _ => Ok(e),
    }
}

/// The next page of events matching `filter` after `after`: (events, last position scanned).
/// Empty with `None` at the end of the history. A page may hold fewer than `PAGE` events (or
/// none) when `until` filters rows out; keep reading from the returned position.
pub async fn page(
    store: &EventStore,
    filter: &ExportFilter,
    after: i64,
    limit: i64,
) -> Result<(Vec<RecordedEvent>, Option<i64>), ExportError> {
    let rows = store
        .read(
            filter.domain,
            &ReadFilter {
                after_position: after,
                limit: limit.clamp(1, PAGE),
                aggregate_id: filter.aggregate_id,
                event_type: filter.event_type.clone(),
            },
        )
        .await?;
    let scanned = rows.last().map(|e| e.position);
    let mut out = Vec::with_capacity(rows.len());
    for e in rows {
        if filter.until.is_some_and(|u| e.recorded_at > u) {
            continue;
        }
        out.push(latest(e)?);
    }
    Ok((out, scanned))
}

/// One event as a CSV record: the envelope's columns, payload and metadata as JSON text.
pub const CSV_HEADER: [&str; 11] = [
    "domain",
    "position",
    "event_id",
    "aggregate_id",
    "aggregate_type",
    "version",
    "event_type",
    "schema_version",
    "payload",
    "metadata",
    "recorded_at",
];

pub fn csv_record(e: &RecordedEvent) -> [String; 11] {
    [
        e.domain.as_str().to_owned(),
        e.position.to_string(),
        e.event_id.to_string(),
        e.aggregate_id.to_string(),
        e.aggregate_type.clone(),
        e.version.to_string(),
        e.event_type.clone(),
        e.schema_version.to_string(),
        e.payload.to_string(),
        serde_json::to_string(&e.metadata).unwrap_or_default(),
        e.recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ]
}

/// RFC 4180 quoting of one field.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}
