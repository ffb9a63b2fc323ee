//! `notification`: every notification the user, follow and post events call for, plus the
//! history tables that decide at read time which of them a user sees (ADR 0007).
//!
//! Why visibility is decided at read time: this projection consumes three domains, each with
//! its own checkpoint. Live projectors run the domains concurrently while a rebuild replays
//! them one after another, so a "block" or "preferences changed" event may be applied before
//! or after the like it should hide. Writing only *facts* here (notifications, preference and
//! block histories, the read marker) and filtering when reading makes every interleaving give
//! the same answers:
//! - a notification is hidden if its kind was switched off at its `created_at`
//!   (`notification_preference`: the full setting per kind, per user-stream version);
//! - or if a block between actor and recipient (either direction) was in effect at its
//!   `created_at`, or is in effect now (`notification_block`: one interval per block, stored
//!   under both users).
//!
//! What is stored depends on one domain at a time only:
//! - follow → the followee; like, comment, share → the post's author; mention → each mentioned
//!   user (a post's edit notifies only users never mentioned in that post before, from the
//!   per-post mention set); never the actor themselves;
//! - deduplication: a notification with the same (recipient, kind, actor, post) created at
//!   most [`DEDUP_WINDOW_SECS`] before the event's time absorbs the event. Every such key is
//!   produced by one aggregate (a like, a relationship, a post), whose events arrive in order,
//!   so the outcome does not depend on the other domains;
//! - ids are name-based ([`notification_id`]) and times come from the event payloads, so a
//!   redelivery or a rebuild produces the same rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::user::{NotificationKind, UserEvent};
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};
use uuid::Uuid;

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "notification";

/// Events of the same (recipient, kind, actor, post) within this many seconds of the
/// notification they would repeat are one notification.
pub const DEDUP_WINDOW_SECS: i64 = 60;

/// Namespace of notification ids.
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d6e_6f74_6966_6963_6174_0001);

/// The id of the `kind` notification that event `event_id` gives `recipient`. The kind is part
/// of the name because one event can notify one user twice (a comment that mentions the post's
/// author is a comment and a mention).
pub fn notification_id(event_id: Uuid, recipient: Uuid, kind: NotificationKind) -> Uuid {
    let mut name = Vec::with_capacity(32 + kind.as_str().len());
    name.extend_from_slice(event_id.as_bytes());
    name.extend_from_slice(recipient.as_bytes());
    name.extend_from_slice(kind.as_str().as_bytes());
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, &name)
}

/// The tables, in the order `tables()` lists them (the first is the rebuild's resume probe).
const TABLES: [&str; 6] = [
    "notification",
    "notification_post",
    "notification_mention",
    "notification_preference",
    "notification_block",
    "notification_read",
];

/// The live view is `NotificationView::default()`; a rebuild writes to a suffixed copy.
pub struct NotificationView {
    name: String,
    suffix: String,
}

impl Default for NotificationView {
    fn default() -> Self {
        NotificationView {
            name: NAME.to_owned(),
            suffix: String::new(),
        }
    }
}

/// One notification to store.
struct New {
    recipient: Uuid,
    kind: NotificationKind,
    actor: Uuid,
    post: Option<Uuid>,
    comment: Option<Uuid>,
    at: DateTime<Utc>,
}

impl NotificationView {
    fn t(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// Stores `n` unless it is for the actor themselves or repeats a recent one.
    async fn notify(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
        n: New,
    ) -> Result<(), ProjectionError> {
        if n.recipient == n.actor {
            return Ok(());
        }
        let table = self.t("notification");
        let created_at = ts(n.at);
        let window_start = ts(n.at - Duration::seconds(DEDUP_WINDOW_SECS));
        let post = n.post.map(|p| p.to_string());
        let recent: Option<(String,)> = sqlx::query_as(&format!(
            "SELECT notification_id FROM {table} \
             WHERE recipient_id = $1 AND actor_id = $2 AND kind = $3 \
               AND COALESCE(post_id, '') = $4 \
               AND created_at >= $5 AND created_at <= $6 \
             LIMIT 1"
        ))
        .bind(n.recipient.to_string())
        .bind(n.actor.to_string())
        .bind(n.kind.as_str())
        .bind(post.clone().unwrap_or_default())
        .bind(&window_start)
        .bind(&created_at)
        .fetch_optional(&mut **tx)
        .await?;
        if recent.is_some() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (notification_id, recipient_id, kind, actor_id, post_id, \
                 comment_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (notification_id) DO NOTHING"
        ))
        .bind(notification_id(event.event_id, n.recipient, n.kind).to_string())
        .bind(n.recipient.to_string())
        .bind(n.kind.as_str())
        .bind(n.actor.to_string())
        .bind(post)
        .bind(n.comment.map(|c| c.to_string()))
        .bind(created_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds `user` to the post's mention set; true if they were not in it before.
    async fn remember_mention(
        &self,
        tx: &mut Transaction<'static, Any>,
        post: Uuid,
        user: Uuid,
    ) -> Result<bool, ProjectionError> {
        let table = self.t("notification_mention");
        let done = sqlx::query(&format!(
            "INSERT INTO {table} (post_id, user_id) VALUES ($1, $2) \
             ON CONFLICT (post_id, user_id) DO NOTHING"
        ))
        .bind(post.to_string())
        .bind(user.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Mentions newly added to `post` by its author (a creation or an edit).
    async fn post_mentions(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
        post: Uuid,
        author: Uuid,
        mentions: &[Uuid],
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let unique: BTreeSet<Uuid> = mentions.iter().copied().collect();
        for user in unique {
            if self.remember_mention(tx, post, user).await? {
                self.notify(
                    tx,
                    event,
                    New {
                        recipient: user,
                        kind: NotificationKind::Mention,
                        actor: author,
                        post: Some(post),
                        comment: None,
                        at,
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn apply_user(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let user_id = event.aggregate_id.to_string();
        match event.decode::<UserEvent>()? {
            UserEvent::NotificationPreferencesChanged(e) => {
                // The full setting, every kind, so "what was in effect at t" is one lookup.
                let table = self.t("notification_preference");
                let changed_at = ts(e.changed_at);
                for kind in NotificationKind::ALL {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (user_id, kind, version, changed_at, disabled) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (user_id, kind, version) DO NOTHING"
                    ))
                    .bind(&user_id)
                    .bind(kind.as_str())
                    .bind(event.version)
                    .bind(&changed_at)
                    .bind(i64::from(e.disabled.contains(&kind)))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            UserEvent::NotificationsRead(e) => {
                let table = self.t("notification_read");
                sqlx::query(&format!(
                    "INSERT INTO {table} (user_id, up_to_created_at, up_to_id, version) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id) DO UPDATE SET \
                         up_to_created_at = excluded.up_to_created_at, \
                         up_to_id = excluded.up_to_id, version = excluded.version \
                     WHERE {table}.version < excluded.version"
                ))
                .bind(&user_id)
                .bind(ts(e.up_to_created_at))
                .bind(e.up_to.to_string())
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
            }
            UserEvent::UsernameClaimed(_)
            | UserEvent::Registered(_)
            | UserEvent::ProfileUpdated(_)
            | UserEvent::PasswordChanged(_)
            | UserEvent::PasswordRehashed(_)
            | UserEvent::LoginFailed(_)
            | UserEvent::Locked(_)
            | UserEvent::SessionStarted(_)
            | UserEvent::SessionRefreshed(_)
            | UserEvent::SessionRevoked(_)
            | UserEvent::Deactivated(_)
            | UserEvent::RoleGranted(_) => {}
        }
        Ok(())
    }

    async fn apply_follow(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.decode::<FollowEvent>()? {
            FollowEvent::Followed(e) => {
                self.notify(
                    tx,
                    event,
                    New {
                        recipient: e.followee_id,
                        kind: NotificationKind::Follow,
                        actor: e.follower_id,
                        post: None,
                        comment: None,
                        at: e.followed_at,
                    },
                )
                .await?;
            }
            FollowEvent::Blocked(e) => {
                let table = self.t("notification_block");
                let blocker = e.blocker_id.to_string();
                let blocked = e.blocked_id.to_string();
                // Stored under both users, so a read looks up (recipient, actor) directly.
                for (user, other) in [(&blocker, &blocked), (&blocked, &blocker)] {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (user_id, other_id, version, blocker_id, \
                             blocked_at, unblocked_at) \
                         VALUES ($1, $2, $3, $4, $5, NULL) \
                         ON CONFLICT (user_id, other_id, version) DO NOTHING"
                    ))
                    .bind(user)
                    .bind(other)
                    .bind(event.version)
                    .bind(&blocker)
                    .bind(ts(e.blocked_at))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            FollowEvent::Unblocked(e) => {
                let table = self.t("notification_block");
                sqlx::query(&format!(
                    "UPDATE {table} SET unblocked_at = $3 \
                     WHERE ((user_id = $1 AND other_id = $2) OR (user_id = $2 AND other_id = $1)) \
                       AND blocker_id = $1 AND unblocked_at IS NULL AND version < $4"
                ))
                .bind(e.blocker_id.to_string())
                .bind(e.blocked_id.to_string())
                .bind(ts(e.unblocked_at))
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
            }
            FollowEvent::Unfollowed(_) => {}
        }
        Ok(())
    }

    async fn apply_post(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.decode::<PostEvent>()? {
            PostEvent::Created(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (post_id, author_id) VALUES ($1, $2) \
                     ON CONFLICT (post_id) DO NOTHING",
                    self.t("notification_post")
                ))
                .bind(e.post_id.to_string())
                .bind(e.author_id.to_string())
                .execute(&mut **tx)
                .await?;
                self.post_mentions(tx, event, e.post_id, e.author_id, &e.mentions, e.created_at)
                    .await?;
            }
            PostEvent::Edited(e) => {
                // The edit carries no author; the creation (same stream, so always applied
                // before) recorded it.
                let post = event.aggregate_id;
                let author: Option<(String,)> = sqlx::query_as(&format!(
                    "SELECT author_id FROM {} WHERE post_id = $1",
                    self.t("notification_post")
                ))
                .bind(post.to_string())
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(author) = author.and_then(|(a,)| Uuid::parse_str(&a).ok()) {
                    self.post_mentions(tx, event, post, author, &e.mentions, e.edited_at)
                        .await?;
                }
            }
            PostEvent::CommentAdded(e) => {
                self.notify(
                    tx,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Comment,
                        actor: e.author_id,
                        post: Some(e.post_id),
                        comment: Some(e.comment_id),
                        at: e.commented_at,
                    },
                )
                .await?;
                let unique: BTreeSet<Uuid> = e.mentions.iter().copied().collect();
                for user in unique {
                    self.notify(
                        tx,
                        event,
                        New {
                            recipient: user,
                            kind: NotificationKind::Mention,
                            actor: e.author_id,
                            post: Some(e.post_id),
                            comment: Some(e.comment_id),
                            at: e.commented_at,
                        },
                    )
                    .await?;
                }
            }
            PostEvent::Shared(e) => {
                self.notify(
                    tx,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Share,
                        actor: e.user_id,
                        post: Some(e.post_id),
                        comment: None,
                        at: e.shared_at,
                    },
                )
                .await?;
            }
            PostEvent::Liked(e) => {
                self.notify(
                    tx,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Like,
                        actor: e.user_id,
                        post: Some(e.post_id),
                        comment: None,
                        at: e.liked_at,
                    },
                )
                .await?;
            }
            // Unliking, deleting or hiding does not take a notification back: it reported
            // something that happened.
            PostEvent::Unliked(_)
            | PostEvent::Deleted(_)
            | PostEvent::Hidden(_)
            | PostEvent::CommentDeleted(_)
            | PostEvent::Bookmarked(_)
            | PostEvent::Unbookmarked(_) => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for NotificationView {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        &[Domain::User, Domain::Follow, Domain::Post]
    }

    fn tables(&self) -> Vec<String> {
        TABLES.iter().map(|t| self.t(t)).collect()
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(NotificationView {
            name: format!("{}{suffix}", self.name),
            suffix: format!("{}{suffix}", self.suffix),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.domain {
            Domain::User => self.apply_user(tx, event).await,
            Domain::Follow => self.apply_follow(tx, event).await,
            Domain::Post => self.apply_post(tx, event).await,
            Domain::Conversation | Domain::Stream | Domain::Experiment => Ok(()),
        }
    }
}
