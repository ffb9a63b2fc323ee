//! Reads of the `user_directory` projection.

use serde::Serialize;
use sqlx::AnyPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::QueryError;

/// A user's public profile.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Profile {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Follower and following counts, from the follow domain's `follow_graph` projection.
    pub followers: i64,
    pub following: i64,
}

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
);

/// An active user's profile; deactivated users are not publicly visible.
pub async fn active_profile(pool: &AnyPool, user_id: Uuid) -> Result<Option<Profile>, QueryError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT user_id, username, display_name, status, profile_picture_url, created_at, \
                updated_at \
         FROM user_directory WHERE user_id = $1 AND active = 1",
    )
    .bind(user_id.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let Ok(id) = Uuid::parse_str(&r.0) else {
        return Ok(None);
    };
    let (followers, following) = crate::follow::counts(pool, id).await?;
    Ok(Some(Profile {
        user_id: id,
        username: r.1,
        display_name: r.2,
        status: r.3,
        profile_picture_url: r.4,
        created_at: r.5,
        updated_at: r.6,
        followers,
        following,
    }))
}

/// Whether `user_id` exists and is active — the check other domains make before referencing
/// a user.
pub async fn is_active(pool: &AnyPool, user_id: Uuid) -> Result<bool, QueryError> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT active FROM user_directory WHERE user_id = $1")
            .bind(user_id.to_string())
            .fetch_optional(pool)
            .await?;
    Ok(row.is_some_and(|r| r.0 == 1))
}

/// The ids of the active users among `usernames` (lower-cased names, as the directory stores
/// them), keyed by username. Unknown and deactivated names are absent.
pub async fn ids_by_usernames(
    pool: &AnyPool,
    usernames: &[String],
) -> Result<std::collections::HashMap<String, Uuid>, QueryError> {
    let mut found = std::collections::HashMap::new();
    if usernames.is_empty() {
        return Ok(found);
    }
    let params: Vec<String> = (1..=usernames.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT username, user_id FROM user_directory \
         WHERE active = 1 AND username IN ({})",
        params.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, String)>(&sql);
    for name in usernames {
        query = query.bind(name.to_lowercase());
    }
    for (username, id) in query.fetch_all(pool).await? {
        if let Ok(id) = Uuid::parse_str(&id) {
            found.insert(username, id);
        }
    }
    Ok(found)
}
