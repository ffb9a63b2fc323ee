//! `stream_view`: every stream as its events tell it — broadcaster, title, status, start and end
//! times, and the summary of an ended stream (duration, peak and unique viewers). Live viewer
//! counts are not here: they are presence, state of the stream domain that events do not carry
//! (ADR 0017); reads join them from `stream_audience`.
//!
//! Each row keeps the stream's `last_version`, so a redelivered event changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::personal::ERASED;
use nova_event_schemas::stream::StreamEvent;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "stream_view";
pub const TABLE: &str = "stream_view";

/// The live view is `StreamView::default()`; a rebuild writes to a suffixed copy.
pub struct StreamView {
    name: String,
    table: String,
}

impl Default for StreamView {
    fn default() -> Self {
        StreamView {
            name: NAME.to_owned(),
            table: TABLE.to_owned(),
        }
    }
}

#[async_trait]
impl Projection for StreamView {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        // The user domain for `user.erased` only (ADR 0025).
        &[Domain::Stream, Domain::User]
    }

    fn tables(&self) -> Vec<String> {
        vec![self.table.clone()]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(StreamView {
            name: format!("{NAME}{suffix}"),
            table: format!("{TABLE}{suffix}"),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let t = &self.table;
        if event.domain == Domain::User {
            // The stream stays (its audience is other people's); what the broadcaster wrote
            // reads as erased, as a rebuild from the sealed history reads it.
            if let UserEvent::Erased(e) = event.decode::<UserEvent>()? {
                sqlx::query(&format!(
                    "UPDATE {t} SET title = $2, \
                         description = CASE WHEN description IS NULL THEN NULL ELSE $2 END \
                     WHERE broadcaster_id = $1"
                ))
                .bind(e.user_id.to_string())
                .bind(ERASED)
                .execute(&mut **tx)
                .await?;
            }
            return Ok(());
        }
        let id = event.aggregate_id.to_string();
        let version = event.version;
        // Every update applies only on top of the version before it (redelivery is a no-op).
        let newer = "stream_id = $1 AND last_version < $2";
        match event.decode::<StreamEvent>()? {
            StreamEvent::Created(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {t} (stream_id, broadcaster_id, title, description, status, \
                         disabled, created_at, last_version) \
                     VALUES ($1, $3, $4, $5, 'created', 0, $6, $2) \
                     ON CONFLICT (stream_id) DO NOTHING"
                ))
                .bind(&id)
                .bind(version)
                .bind(e.broadcaster_id.to_string())
                .bind(&e.title)
                .bind(&e.description)
                .bind(ts(e.created_at))
                .execute(&mut **tx)
                .await?;
            }
            StreamEvent::KeyRotated(_) => {
                sqlx::query(&format!("UPDATE {t} SET last_version = $2 WHERE {newer}"))
                    .bind(&id)
                    .bind(version)
                    .execute(&mut **tx)
                    .await?;
            }
            StreamEvent::Started(e) => {
                sqlx::query(&format!(
                    "UPDATE {t} SET status = 'live', started_at = $3, last_version = $2 \
                     WHERE {newer}"
                ))
                .bind(&id)
                .bind(version)
                .bind(ts(e.started_at))
                .execute(&mut **tx)
                .await?;
            }
            StreamEvent::Ended(e) => {
                sqlx::query(&format!(
                    "UPDATE {t} SET status = 'ended', ended_at = $3, duration_secs = $4, \
                         peak_viewers = $5, unique_viewers = $6, last_version = $2 \
                     WHERE {newer}"
                ))
                .bind(&id)
                .bind(version)
                .bind(ts(e.ended_at))
                .bind(e.duration_secs)
                .bind(e.peak_viewers)
                .bind(e.unique_viewers)
                .execute(&mut **tx)
                .await?;
            }
            StreamEvent::Disabled(_) => {
                sqlx::query(&format!(
                    "UPDATE {t} SET disabled = 1, last_version = $2 WHERE {newer}"
                ))
                .bind(&id)
                .bind(version)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}
