//! The facts command handlers and policies need from read models, answered by the read models
//! themselves: the implementations of `nova_commands::facts` over the `AnyPool`, wrapping the
//! `nova_queries` functions. They live here, where the application is assembled, so that
//! `commands` depends on no read-model crate (ADR 0008).
//!
//! Every answer is as current as the projection it reads (the user directory, the follow
//! graph, the post view, the notification view); callers that must not miss anything wait for
//! the projection first (policies), the others accept the lag and say so (commands).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use nova_commands::facts::{
    ConversationFactSource, ExperimentFactSource, FactError, FactResult, FollowFactSource,
    NotificationFactSource, PostFactSource, StreamFactSource, UserFactSource,
};
use nova_queries::page::{PageRequest, MAX_LIMIT};
use nova_queries::post::posts_by_author;
use nova_queries::Cursor;
use sqlx::AnyPool;
use uuid::Uuid;

/// All fact sources over the read models of one database.
#[derive(Clone)]
pub struct ReadModels {
    pool: AnyPool,
}

impl ReadModels {
    pub fn new(pool: AnyPool) -> Self {
        ReadModels { pool }
    }

    /// The same, shared, as each command service and policy takes it.
    pub fn shared(pool: AnyPool) -> Arc<ReadModels> {
        Arc::new(ReadModels::new(pool))
    }
}

#[async_trait]
impl UserFactSource for ReadModels {
    async fn is_active(&self, user: Uuid) -> FactResult<bool> {
        nova_queries::user::is_active(&self.pool, user)
            .await
            .map_err(FactError::new)
    }

    async fn ids_by_usernames(&self, usernames: &[String]) -> FactResult<HashMap<String, Uuid>> {
        nova_queries::user::ids_by_usernames(&self.pool, usernames)
            .await
            .map_err(FactError::new)
    }
}

#[async_trait]
impl FollowFactSource for ReadModels {
    async fn edges_of(&self, user: Uuid) -> FactResult<Vec<(Uuid, Uuid)>> {
        nova_queries::follow::edges_of(&self.pool, user)
            .await
            .map_err(FactError::new)
    }

    /// Answered by the notification view: it is the only read model that keeps blocks
    /// (`follow_graph` keeps follows only).
    async fn block_between(&self, a: Uuid, b: Uuid) -> FactResult<bool> {
        nova_queries::notification::block_between(&self.pool, a, b)
            .await
            .map_err(FactError::new)
    }
}

#[async_trait]
impl PostFactSource for ReadModels {
    async fn posts_of(&self, author: Uuid) -> FactResult<Vec<Uuid>> {
        let mut ids = Vec::new();
        let mut req = PageRequest::first(MAX_LIMIT);
        loop {
            let page = posts_by_author(&self.pool, author, &req)
                .await
                .map_err(FactError::new)?;
            ids.extend(page.items.iter().map(|p| p.post_id));
            match page.next_cursor.as_deref().and_then(Cursor::decode) {
                Some(c) => req.after = Some(c),
                None => return Ok(ids),
            }
        }
    }
}

#[async_trait]
impl NotificationFactSource for ReadModels {
    async fn created_at_of(&self, user: Uuid, id: Uuid) -> FactResult<Option<String>> {
        nova_queries::notification::created_at_of(&self.pool, user, id)
            .await
            .map_err(FactError::new)
    }
}

#[async_trait]
impl ConversationFactSource for ReadModels {
    async fn conversations_of(&self, user: Uuid) -> FactResult<Vec<Uuid>> {
        nova_queries::conversation::conversations_of(&self.pool, user)
            .await
            .map_err(FactError::new)
    }
}

#[async_trait]
impl ExperimentFactSource for ReadModels {
    async fn experiments_of(&self, user: Uuid) -> FactResult<Vec<String>> {
        nova_queries::experiment::experiments_of(&self.pool, user)
            .await
            .map_err(FactError::new)
    }
}

#[async_trait]
impl StreamFactSource for ReadModels {
    async fn streams_of(&self, broadcaster: Uuid) -> FactResult<Vec<Uuid>> {
        nova_queries::stream::streams_of(&self.pool, broadcaster)
            .await
            .map_err(FactError::new)
    }
}
