//! Projection checkpoints: stored in `projection_checkpoints` (written in the projection's own
//! transaction) and mirrored in memory so that reads waiting for `X-Nova-Min-Position` wake as
//! soon as this process applies an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nova_event_schemas::Domain;
use nova_infra::store::EventStore;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::watch;

use crate::{Projection, ProjectionError};

type Watches = HashMap<(String, Domain), watch::Sender<i64>>;

#[derive(Clone, Default)]
pub struct Checkpoints {
    watches: Arc<Mutex<Watches>>,
}

/// Outcome of waiting for a projection to reach a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    Up,
    TimedOut,
}

impl Checkpoints {
    fn sender(&self, name: &str, domain: Domain) -> watch::Sender<i64> {
        let mut map = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((name.to_owned(), domain))
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    pub fn cached(&self, name: &str, domain: Domain) -> i64 {
        *self.sender(name, domain).borrow()
    }

    pub fn publish(&self, name: &str, domain: Domain, position: i64) {
        self.sender(name, domain).send_if_modified(|p| {
            let grew = position > *p;
            *p = (*p).max(position);
            grew
        });
    }

    pub async fn load(
        &self,
        pool: &AnyPool,
        name: &str,
        domain: Domain,
    ) -> Result<i64, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT position FROM projection_checkpoints WHERE projection = $1 AND domain = $2",
        )
        .bind(name)
        .bind(domain.as_str())
        .fetch_optional(pool)
        .await?;
        let position = row.map_or(0, |r| r.0);
        self.publish(name, domain, position);
        Ok(position)
    }

    /// Reads the checkpoint inside the projection's transaction and locks its row until commit,
    /// so two processes running the same projector cannot both apply one batch (a no-op upsert
    /// takes the row lock on PostgreSQL and the write lock on SQLite, then returns the latest
    /// committed value).
    pub async fn load_in(
        tx: &mut Transaction<'static, Any>,
        name: &str,
        domain: Domain,
    ) -> Result<i64, sqlx::Error> {
        let (position,): (i64,) = sqlx::query_as(
            "INSERT INTO projection_checkpoints (projection, domain, position, updated_at) \
             VALUES ($1, $2, 0, $3) \
             ON CONFLICT (projection, domain) \
               DO UPDATE SET position = projection_checkpoints.position \
             RETURNING position",
        )
        .bind(name)
        .bind(domain.as_str())
        .bind(chrono::Utc::now().timestamp_millis())
        .fetch_one(&mut **tx)
        .await?;
        Ok(position)
    }

    pub async fn save_in(
        tx: &mut Transaction<'static, Any>,
        name: &str,
        domain: Domain,
        position: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, domain, position, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (projection, domain) DO UPDATE \
               SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(domain.as_str())
        .bind(position)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Waits until projection `name` has applied `domain` up to `position`, or `timeout`.
    /// Wakes on this process's progress and polls the table for other processes'.
    pub async fn wait_for(
        &self,
        pool: &AnyPool,
        name: &str,
        domain: Domain,
        position: i64,
        timeout: Duration,
    ) -> Result<Caught, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.sender(name, domain).subscribe();
        loop {
            if *rx.borrow_and_update() >= position
                || self.load(pool, name, domain).await? >= position
            {
                return Ok(Caught::Up);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Caught::TimedOut);
            }
            let nap = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(nap, rx.changed()).await;
        }
    }

    /// Waits until `projection` has applied every one of its domains up to that domain's head
    /// in `store` (read when called), each within `timeout`.
    pub async fn wait_for_heads(
        &self,
        pool: &AnyPool,
        store: &EventStore,
        projection: &dyn Projection,
        timeout: Duration,
    ) -> Result<Caught, ProjectionError> {
        for &domain in projection.domains() {
            let head = store.head(domain).await?;
            if self
                .wait_for(pool, projection.name(), domain, head, timeout)
                .await?
                == Caught::TimedOut
            {
                return Ok(Caught::TimedOut);
            }
        }
        Ok(Caught::Up)
    }
}
