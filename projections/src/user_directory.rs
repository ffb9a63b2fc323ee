//! `user_directory`: one row per registered user (id, username, display name, status, picture,
//! active flag, timestamps). Serves profile reads and lets other domains check that a user
//! they reference exists and is active — by id, never by joining the user domain's tables.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::personal::is_erased;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::{Projection, ProjectionError};

/// The live directory is `UserDirectory::default()`; a rebuild writes to a suffixed copy.
pub struct UserDirectory {
    name: String,
    table: String,
}

impl Default for UserDirectory {
    fn default() -> Self {
        UserDirectory {
            name: NAME.to_owned(),
            table: NAME.to_owned(),
        }
    }
}

pub const NAME: &str = "user_directory";

/// Timestamps are stored as fixed-width RFC 3339 text (the read-model conventions live in
/// `nova_infra::readmodel`).
pub use nova_infra::readmodel::ts;

#[async_trait]
impl Projection for UserDirectory {
    fn name(&self) -> &str {
        &self.name
    }

    fn tables(&self) -> Vec<String> {
        vec![self.table.clone()]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(UserDirectory {
            name: format!("{}{suffix}", self.name),
            table: format!("{}{suffix}", self.table),
        }))
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::User]
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let user_id = event.aggregate_id.to_string();
        let table = &self.table;
        let at = ts(event.recorded_at);
        match event.decode::<UserEvent>()? {
            // A person whose data was erased has no row, whether the directory learns it
            // from `erased` (live) or from history that already reads as erased (rebuild).
            UserEvent::Registered(e) if is_erased(&e.username) => {}
            UserEvent::Registered(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {table} (user_id, username, display_name, status, \
                         profile_picture_url, active, created_at, updated_at, last_version) \
                     VALUES ($1, $2, $3, NULL, NULL, 1, $4, $4, $5) \
                     ON CONFLICT (user_id) DO NOTHING"
                ))
                .bind(&user_id)
                .bind(&e.username)
                .bind(&e.display_name)
                .bind(ts(e.registered_at))
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
            }
            UserEvent::ProfileUpdated(e) => {
                sqlx::query(&format!(
                    "UPDATE {table} SET display_name = $2, status = $3, \
                         profile_picture_url = $4, updated_at = $5, last_version = $6 \
                     WHERE user_id = $1 AND last_version < $6"
                ))
                .bind(&user_id)
                .bind(&e.display_name)
                .bind(&e.status)
                .bind(&e.profile_picture_url)
                .bind(ts(e.updated_at))
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
            }
            UserEvent::Deactivated(_) => {
                sqlx::query(&format!(
                    "UPDATE {table} SET active = 0, updated_at = $2, last_version = $3 \
                     WHERE user_id = $1 AND last_version < $3"
                ))
                .bind(&user_id)
                .bind(&at)
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
            }
            UserEvent::Erased(_) => {
                crate::delete_rows(tx, table, "user_id", &user_id).await?;
            }
            // Credentials and sessions are not part of the directory.
            UserEvent::UsernameClaimed(_)
            | UserEvent::PasswordChanged(_)
            | UserEvent::PasswordRehashed(_)
            | UserEvent::LoginFailed(_)
            | UserEvent::Locked(_)
            | UserEvent::SessionStarted(_)
            | UserEvent::SessionRefreshed(_)
            | UserEvent::SessionRevoked(_)
            | UserEvent::RoleGranted(_)
            | UserEvent::NotificationPreferencesChanged(_)
            | UserEvent::NotificationsRead(_) => {}
        }
        Ok(())
    }
}
