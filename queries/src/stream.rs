//! Reads of live streams: one stream (`stream_view`, with the audience of a live one) and the
//! live list, most viewers first.
//!
//! Viewer counts are the stream domain's presence state (`stream_audience`, ADR 0017), not a
//! projection: it is read here beside the view, never written. The live list's order changes as
//! viewers come and go, so its cursor is its own: the `(viewers, stream_id)` of the last item,
//! and the next page continues strictly below it (a stream whose count moved meanwhile may be
//! seen twice or not at all — acceptable for a list of what is live now).

use nova_infra::readmodel::{Flag, Id, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::page::Page;
use crate::QueryError;

/// One stream as `GET /v1/streams/{id}` shows it (before live counts are added).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamRow {
    #[sqlx(try_from = "Id")]
    pub stream_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub broadcaster_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    /// `created`, `live` or `ended`.
    pub status: String,
    pub disabled: Flag,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub duration_secs: Option<i64>,
    /// From the `ended` event once ended.
    pub peak_viewers: Option<i64>,
    pub unique_viewers: Option<i64>,
}

/// One item of the live list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveRow {
    #[sqlx(try_from = "Id")]
    pub stream_id: Uuid,
    #[sqlx(try_from = "Id")]
    pub broadcaster_id: Uuid,
    pub title: String,
    pub viewers: i64,
    pub started_at: Timestamp,
}

/// The live list's position: the last item's `(viewers, stream_id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCursor {
    pub viewers: i64,
    pub stream_id: Uuid,
}

impl LiveCursor {
    /// Opaque text: hex of `live|<viewers>|<id>`.
    pub fn encode(&self) -> String {
        hex::encode(format!("live|{}|{}", self.viewers, self.stream_id))
    }

    /// `None` for anything [`LiveCursor::encode`] did not produce.
    pub fn decode(text: &str) -> Option<LiveCursor> {
        if text.len() > crate::cursor::MAX_CURSOR {
            return None;
        }
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let mut parts = raw.split('|');
        let (Some("live"), Some(viewers), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let viewers: i64 = viewers.parse().ok().filter(|v| *v >= 0)?;
        Some(LiveCursor {
            viewers,
            stream_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// The stream `id`, if the view has it.
pub async fn get(pool: &AnyPool, id: Uuid) -> Result<Option<StreamRow>, QueryError> {
    Ok(sqlx::query_as(
        "SELECT stream_id, broadcaster_id, title, description, status, disabled, created_at, \
                started_at, ended_at, duration_secs, peak_viewers, unique_viewers \
         FROM stream_view WHERE stream_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?)
}

/// Live streams, most viewers first (then by id, descending), `limit` per page. A live stream
/// whose audience row is missing (its process died between the start and writing the row) is
/// listed from its first viewer's join on.
pub async fn live(
    pool: &AnyPool,
    limit: u32,
    after: Option<LiveCursor>,
) -> Result<Page<LiveRow>, QueryError> {
    // Walks `stream_audience (viewers, stream_id)` backwards: a live stream's audience row is
    // written when it starts and dropped when it ends (ADR 0017); the view confirms it is live.
    let keyset = if after.is_some() {
        "AND (a.viewers, a.stream_id) < ($2, $3)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT v.stream_id, v.broadcaster_id, v.title, a.viewers, v.started_at \
         FROM stream_audience a JOIN stream_view v ON v.stream_id = a.stream_id \
         WHERE v.status = 'live' {keyset} \
         ORDER BY a.viewers DESC, a.stream_id DESC LIMIT $1"
    );
    let mut query = sqlx::query_as::<_, LiveRow>(&sql).bind(i64::from(limit) + 1);
    if let Some(c) = after {
        query = query.bind(c.viewers).bind(c.stream_id.to_string());
    }
    let mut rows = query.fetch_all(pool).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| {
            LiveCursor {
                viewers: r.viewers,
                stream_id: r.stream_id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

/// The streams of `broadcaster` not yet disabled (for the deactivation policy).
pub async fn streams_of(pool: &AnyPool, broadcaster: Uuid) -> Result<Vec<Uuid>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT stream_id FROM stream_view WHERE broadcaster_id = $1 AND disabled = 0 \
         ORDER BY stream_id",
    )
    .bind(broadcaster.to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id,)| Uuid::parse_str(&id).map_err(|e| QueryError::Corrupt(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_cursors_round_trip_and_reject_anything_else() {
        let c = LiveCursor {
            viewers: 42,
            stream_id: Uuid::now_v7(),
        };
        assert_eq!(LiveCursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "zz",
            &hex::encode("live|-1|00000000-0000-0000-0000-000000000000"),
            &hex::encode("live|x|00000000-0000-0000-0000-000000000000"),
            &hex::encode("post|1|00000000-0000-0000-0000-000000000000"),
            &hex::encode("live|1|00000000-0000-0000-0000-000000000000|x"),
            &"a".repeat(300),
        ] {
            assert_eq!(LiveCursor::decode(bad), None, "{bad}");
        }
    }
}
