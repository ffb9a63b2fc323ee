//! The user's notification settings: per-kind preferences and the read marker. They are the
//! user's own data (events of the `user` domain); the notification view projects them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nova_aggregates::user::{User, UserCommand, UserError};
use nova_event_schemas::user::NotificationKind;
use uuid::Uuid;

use super::UserWriter;
use crate::facts::NotificationFactSource;
use crate::{CommandContext, CommandError, CommandStore, Done, Repository};

/// Why a notification-settings command failed: the one command error, with the user's
/// refusals (the settings are the user's own data).
pub type NotificationCommandError = CommandError<UserError>;

type Result<T> = std::result::Result<T, NotificationCommandError>;

/// Per-kind settings: `true` = on. Always holds every kind.
pub type Preferences = BTreeMap<NotificationKind, bool>;

#[derive(Clone)]
pub struct NotificationCommands {
    users: Repository<User>,
    /// The notification view, to look up the notification a read marker points at.
    notifications: Arc<dyn NotificationFactSource>,
}

impl NotificationCommands {
    pub fn new(store: CommandStore, notifications: Arc<dyn NotificationFactSource>) -> Self {
        NotificationCommands {
            users: Repository::new(&store, UserWriter(())),
            notifications,
        }
    }

    /// Merges `changes` (kinds absent from it keep their setting) into `user`'s current
    /// preferences; returns the complete resulting preferences.
    pub async fn set_preferences(
        &self,
        ctx: &CommandContext,
        user: Uuid,
        changes: &Preferences,
    ) -> Result<(Preferences, Done)> {
        let executed = self
            .users
            .execute(user, ctx, |state| {
                let mut disabled: BTreeSet<NotificationKind> = state.notifications_disabled.clone();
                for (kind, on) in changes {
                    if *on {
                        disabled.remove(kind);
                    } else {
                        disabled.insert(*kind);
                    }
                }
                Ok(UserCommand::SetNotificationPreferences {
                    disabled,
                    now: Utc::now(),
                })
            })
            .await?;
        let prefs = NotificationKind::ALL
            .into_iter()
            .map(|k| (k, !executed.state.notifications_disabled.contains(&k)))
            .collect();
        Ok((prefs, executed.done()))
    }

    /// Marks `user`'s notifications read up to and including `up_to` (in list order). The
    /// marker never moves backwards; marking an older notification changes nothing.
    pub async fn mark_read(&self, ctx: &CommandContext, user: Uuid, up_to: Uuid) -> Result<Done> {
        let created_at = self.notifications.created_at_of(user, up_to).await?.ok_or(
            NotificationCommandError::Refused(UserError::NotificationNotFound),
        )?;
        // The view stores RFC 3339 text; the event carries the instant.
        let created_at = DateTime::parse_from_rfc3339(&created_at)
            .map_err(|e| {
                NotificationCommandError::Internal(format!("notification view created_at: {e}"))
            })?
            .with_timezone(&Utc);
        let executed = self
            .users
            .execute(user, ctx, |_| {
                Ok(UserCommand::MarkNotificationsRead {
                    up_to,
                    up_to_created_at: created_at,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(executed.done())
    }
}
