//! Viewer presence (ADR 0017): who is watching a live stream, kept as state the stream domain
//! owns — not as events. A heartbeat is not a fact worth keeping forever, and thousands a
//! second would drown the stream's history and every consumer of it; what is worth keeping
//! (peak and unique viewers) goes into the stream's `ended` event.
//!
//! Two tables, shared by every API process (`stream_presence`, one row per stream and viewer;
//! `stream_audience`, the counts per live stream), and one map per process:
//! - a viewer's first heartbeat in this process (or the first after 50 s of silence) writes
//!   its row at once and recounts the stream: a join is visible to every process immediately;
//! - later heartbeats only move `last_seen` in the map; [`Presence::flush`] writes them every
//!   second, one `UPDATE` per (stream, second) — so a thousand heartbeats cost a few statements;
//! - [`Presence::sweep`] recounts every live stream every second, so a viewer silent for 60 s
//!   drops out of the counts (of `GET /v1/streams/live`) within about a second; a stream's own
//!   read (`GET /v1/streams/{id}`) recounts exactly.
//!
//! Times come from the [`Clock`], so tests move time instead of sleeping. Stored times are
//! whole seconds (heartbeats within a second are one write).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use nova_infra::clock::Clock;
use nova_infra::readmodel::ts;
use sqlx::AnyPool;
use uuid::Uuid;

/// A viewer silent this long is gone.
pub const EXPIRY_SECS: i64 = 60;
/// A viewer this process heard from within this many seconds is handled in memory; after
/// that the next heartbeat writes through (and recounts), well before the row could expire.
const FRESH_SECS: i64 = 50;
/// Largest number of viewers named in one flush statement.
const FLUSH_CHUNK: usize = 500;

/// Current, peak and unique viewers of a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub viewers: i64,
    pub peak: i64,
    pub unique: i64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Latest heartbeat heard here.
    last: DateTime<Utc>,
    /// Not yet written.
    dirty: bool,
}

/// The presence tables and this process's map of recent heartbeats.
#[derive(Clone)]
pub struct Presence {
    pool: AnyPool,
    clock: Clock,
    seen: Arc<Mutex<HashMap<(Uuid, Uuid), Seen>>>,
}

fn second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

impl Presence {
    pub fn new(pool: AnyPool, clock: Clock) -> Self {
        Presence {
            pool,
            clock,
            seen: Arc::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        second(self.clock.now())
    }

    fn cutoff(now: DateTime<Utc>) -> String {
        ts(now - Duration::seconds(EXPIRY_SECS))
    }

    /// A heartbeat of a viewer this process heard from recently: recorded in memory only.
    /// `false` when the heartbeat must go through [`Presence::join`] (first one here, or the
    /// last was long ago).
    pub fn touch(&self, stream: Uuid, viewer: Uuid) -> bool {
        let now = self.now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&(stream, viewer)) {
            Some(s) if now - s.last < Duration::seconds(FRESH_SECS) => {
                if now > s.last {
                    s.last = now;
                    s.dirty = true;
                }
                true
            }
            _ => false,
        }
    }

    /// Writes the viewer's presence now (a join, or a return after silence) and recounts the
    /// stream. The caller has checked that the stream is live.
    pub async fn join(&self, stream: Uuid, viewer: Uuid) -> Result<Counts, sqlx::Error> {
        let now = self.now();
        let at = ts(now);
        sqlx::query(
            "INSERT INTO stream_presence (stream_id, viewer_id, first_seen, last_seen, left_at) \
             VALUES ($1, $2, $3, $3, NULL) \
             ON CONFLICT (stream_id, viewer_id) DO UPDATE SET \
                 last_seen = excluded.last_seen, left_at = NULL",
        )
        .bind(stream.to_string())
        .bind(viewer.to_string())
        .bind(&at)
        .execute(&self.pool)
        .await?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (stream, viewer),
            Seen {
                last: now,
                dirty: false,
            },
        );
        self.recount(stream).await
    }

    /// The viewer left (closed the player): they stop counting at once.
    pub async fn leave(&self, stream: Uuid, viewer: Uuid) -> Result<Counts, sqlx::Error> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(stream, viewer));
        sqlx::query(
            "UPDATE stream_presence SET left_at = $3 \
             WHERE stream_id = $1 AND viewer_id = $2 AND left_at IS NULL",
        )
        .bind(stream.to_string())
        .bind(viewer.to_string())
        .bind(ts(self.now()))
        .execute(&self.pool)
        .await?;
        self.recount(stream).await
    }

    /// Counts the stream's viewers now and stores the counts (the peak only grows).
    pub async fn recount(&self, stream: Uuid) -> Result<Counts, sqlx::Error> {
        let now = self.now();
        let (unique, viewers): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), \
                    COALESCE(SUM(CASE WHEN left_at IS NULL AND last_seen > $2 THEN 1 ELSE 0 END), 0) \
             FROM stream_presence WHERE stream_id = $1",
        )
        .bind(stream.to_string())
        .bind(Self::cutoff(now))
        .fetch_one(&self.pool)
        .await?;
        let (peak,): (i64,) = sqlx::query_as(
            "INSERT INTO stream_audience \
                 (stream_id, viewers, peak_viewers, unique_viewers, counted_at) \
             VALUES ($1, $2, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET \
                 viewers = excluded.viewers, \
                 peak_viewers = CASE WHEN excluded.viewers > stream_audience.peak_viewers \
                                     THEN excluded.viewers ELSE stream_audience.peak_viewers END, \
                 unique_viewers = excluded.unique_viewers, \
                 counted_at = excluded.counted_at \
             RETURNING peak_viewers",
        )
        .bind(stream.to_string())
        .bind(viewers)
        .bind(unique)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            viewers,
            peak,
            unique,
        })
    }

    /// Writes the heartbeats heard in memory since the last flush, and forgets viewers not
    /// heard from for [`EXPIRY_SECS`]. Returns how many heartbeats were written.
    pub async fn flush(&self) -> Result<usize, sqlx::Error> {
        let now = self.now();
        // (stream, second) → viewers heard last at that second.
        let mut groups: HashMap<(Uuid, DateTime<Utc>), Vec<Uuid>> = HashMap::new();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, s| now - s.last < Duration::seconds(EXPIRY_SECS));
            for ((stream, viewer), s) in seen.iter_mut().filter(|(_, s)| s.dirty) {
                s.dirty = false;
                groups.entry((*stream, s.last)).or_default().push(*viewer);
            }
        }
        let mut written = 0;
        for ((stream, at), viewers) in groups {
            for chunk in viewers.chunks(FLUSH_CHUNK) {
                let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
                let sql = format!(
                    "UPDATE stream_presence SET last_seen = $2 \
                     WHERE stream_id = $1 AND left_at IS NULL AND last_seen < $2 \
                       AND viewer_id IN ({})",
                    list.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(stream.to_string()).bind(ts(at));
                for v in chunk {
                    q = q.bind(v.to_string());
                }
                q.execute(&self.pool).await?;
                written += chunk.len();
            }
        }
        Ok(written)
    }

    /// Recounts the current viewers of every stream with an audience, so that viewers who fell
    /// silent drop out of the live list.
    pub async fn sweep(&self) -> Result<(), sqlx::Error> {
        let now = self.now();
        sqlx::query(
            "UPDATE stream_audience SET \
                 viewers = (SELECT COUNT(*) FROM stream_presence p \
                            WHERE p.stream_id = stream_audience.stream_id \
                              AND p.left_at IS NULL AND p.last_seen > $1), \
                 counted_at = $2",
        )
        .bind(Self::cutoff(now))
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stream ended: its presence is no longer needed (its summary is in the event).
    pub async fn clear(&self, stream: Uuid) -> Result<(), sqlx::Error> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| *s != stream);
        sqlx::query("DELETE FROM stream_presence WHERE stream_id = $1")
            .bind(stream.to_string())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM stream_audience WHERE stream_id = $1")
            .bind(stream.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
