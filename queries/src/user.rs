//! Reads of the `user_directory` projection.

use std::collections::HashMap;

use nova_infra::readmodel::{Flag, Id, Timestamp};
use sqlx::AnyPool;
use uuid::Uuid;

use crate::QueryError;

/// A user's public profile as the directory stores it, with the follow counts.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProfileRow {
    #[sqlx(try_from = "Id")]
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Follower and following counts, from the follow domain's `follow_graph` projection.
    #[sqlx(skip)]
    pub followers: i64,
    #[sqlx(skip)]
    pub following: i64,
}

/// An active user's profile; deactivated users are not publicly visible.
pub async fn active_profile(
    pool: &AnyPool,
    user_id: Uuid,
) -> Result<Option<ProfileRow>, QueryError> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT user_id, username, display_name, status, profile_picture_url, created_at, \
                updated_at \
         FROM user_directory WHERE user_id = $1 AND active = 1",
    )
    .bind(user_id.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(mut profile) = row else {
        return Ok(None);
    };
    (profile.followers, profile.following) = crate::follow::counts(pool, user_id).await?;
    Ok(Some(profile))
}

/// Whether `user_id` exists and is active — the check other domains make before referencing
/// a user.
pub async fn is_active(pool: &AnyPool, user_id: Uuid) -> Result<bool, QueryError> {
    let row: Option<(Flag,)> =
        sqlx::query_as("SELECT active FROM user_directory WHERE user_id = $1")
            .bind(user_id.to_string())
            .fetch_optional(pool)
            .await?;
    Ok(row.is_some_and(|(Flag(active),)| active))
}

/// The ids of the active users among `usernames` (lower-cased names, as the directory stores
/// them), keyed by username. Unknown and deactivated names are absent.
pub async fn ids_by_usernames(
    pool: &AnyPool,
    usernames: &[String],
) -> Result<HashMap<String, Uuid>, QueryError> {
    if usernames.is_empty() {
        return Ok(HashMap::new());
    }
    let params: Vec<String> = (1..=usernames.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT username, user_id FROM user_directory \
         WHERE active = 1 AND username IN ({})",
        params.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, Id)>(&sql);
    for name in usernames {
        query = query.bind(name.to_lowercase());
    }
    Ok(query
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(name, Id(id))| (name, id))
        .collect())
}
