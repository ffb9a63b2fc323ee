//! `follow_graph`: follow edges, follower/following lists and counts (from the follow domain).
//!
//! Two tables: `follow_edges` (one row per current follow, with the time it began) and
//! `follow_counts` (followers/following per user). Only `followed` and `unfollowed` change
//! them — a block's effect on follows arrives as its own `unfollowed` events. A count moves
//! only when its edge row was actually inserted or deleted, so the two tables agree whatever
//! happens to an edge.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "follow_graph";
pub const EDGES: &str = "follow_edges";
pub const COUNTS: &str = "follow_counts";

/// The live graph is `FollowGraph::default()`; a rebuild writes to suffixed copies.
pub struct FollowGraph {
    name: String,
    edges: String,
    counts: String,
}

impl Default for FollowGraph {
    fn default() -> Self {
        FollowGraph {
            name: NAME.to_owned(),
            edges: EDGES.to_owned(),
            counts: COUNTS.to_owned(),
        }
    }
}

impl FollowGraph {
    /// Adds `delta` to one counter of `user`, creating the row at zero if needed.
    async fn bump(
        &self,
        tx: &mut Transaction<'static, Any>,
        user: &str,
        column: &str,
        delta: i64,
    ) -> Result<(), ProjectionError> {
        let counts = &self.counts;
        sqlx::query(&format!(
            "INSERT INTO {counts} (user_id, followers, following) VALUES ($1, 0, 0) \
             ON CONFLICT (user_id) DO NOTHING"
        ))
        .bind(user)
        .execute(&mut **tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {counts} SET {column} = {column} + $2 WHERE user_id = $1"
        ))
        .bind(user)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for FollowGraph {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::Follow]
    }

    fn tables(&self) -> Vec<String> {
        vec![self.edges.clone(), self.counts.clone()]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(FollowGraph {
            name: format!("{}{suffix}", self.name),
            edges: format!("{}{suffix}", self.edges),
            counts: format!("{}{suffix}", self.counts),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let edges = &self.edges;
        match event.decode::<FollowEvent>()? {
            FollowEvent::Followed(e) => {
                let (follower, followee) = (e.follower_id.to_string(), e.followee_id.to_string());
                let inserted = sqlx::query(&format!(
                    "INSERT INTO {edges} (follower_id, followee_id, followed_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (follower_id, followee_id) DO NOTHING"
                ))
                .bind(&follower)
                .bind(&followee)
                .bind(ts(e.followed_at))
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    self.bump(tx, &follower, "following", 1).await?;
                    self.bump(tx, &followee, "followers", 1).await?;
                }
            }
            FollowEvent::Unfollowed(e) => {
                let (follower, followee) = (e.follower_id.to_string(), e.followee_id.to_string());
                let deleted = sqlx::query(&format!(
                    "DELETE FROM {edges} WHERE follower_id = $1 AND followee_id = $2"
                ))
                .bind(&follower)
                .bind(&followee)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if deleted == 1 {
                    self.bump(tx, &follower, "following", -1).await?;
                    self.bump(tx, &followee, "followers", -1).await?;
                }
            }
            // A block's effect on follows arrives as `unfollowed` events of its own.
            FollowEvent::Blocked(_) | FollowEvent::Unblocked(_) => {}
        }
        Ok(())
    }
}
