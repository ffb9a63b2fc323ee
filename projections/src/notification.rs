//! `notification`: every notification the user, follow, post, stream and conversation events
//! call for, plus the history tables that decide at read time which of them a user sees
//! (ADR 0007).
//!
//! `message` (ADR 0021) notifies a conversation's other members when a message is sent, with no
//! content (the ciphertext never reaches this view): the members at that moment come from the
//! view's own copy of the membership (`notification_conversation`), which the conversation
//! domain alone writes, in order per conversation. A member with a message request they have
//! not accepted is not notified; messages of one sender in one conversation within
//! [`DEDUP_WINDOW_SECS`] are one notification, like the other kinds.
//!
//! `stream_started` (ADR 0017) notifies the broadcaster's followers *at the moment the stream
//! went live*. That needs the follow domain's history and the stream domain's, which arrive in
//! any interleaving, so both are kept (`notification_follow`: one interval per follow;
//! `notification_stream`: the streams that went live) and whichever side comes second writes
//! the notification, under the same name-based id: a start notifies the followers whose
//! interval covers it; a follow notifies of the followee's later starts already known; an
//! unfollow takes back the notifications of starts at or after its time (which it alone could
//! not have ruled out). No dedup window applies to them: each start is its own notification.
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
//!
//! The unread count is the one derived value kept here (`notification_unread`, ADR 0028), so
//! that reading it costs one row however long a user's history: each transaction that adds or
//! removes notifications, moves a read marker, or changes a preference or a block counts the
//! recipient's rows it can change by the read-time rule before and after the change
//! ([`Rows`]), and adds the difference; the rows a batch inserts are counted together at its
//! end, or before such a change. It reads what the other domains' transactions left, so
//! the view's transactions are serialised ([`crate::serialise_writers`]); it then equals the
//! count at read time whatever the interleaving.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use nova_event_schemas::conversation::ConversationEvent;
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::stream::StreamEvent;
use nova_event_schemas::user::{NotificationKind, UserEvent};
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use nova_queries::notification::{unread_row, visible_row};
use sqlx::{Any, AnyPool, Transaction};
use uuid::Uuid;

use crate::user_directory::ts;
use crate::{serialise_writers, Projection, ProjectionError};

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
const TABLES: [&str; 11] = [
    "notification",
    "notification_post",
    "notification_mention",
    "notification_preference",
    "notification_block",
    "notification_read",
    "notification_follow",
    "notification_stream",
    "notification_conversation",
    "notification_erased",
    "notification_unread",
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
    /// The conversation written in (`message`).
    conversation: Option<Uuid>,
    at: DateTime<Utc>,
}

/// Which of a recipient's rows a count covers, besides "visible" and "unread": those a change
/// can move in or out of the count.
enum Rows<'a> {
    /// Rows from this actor (a block or unblock between the two).
    From(&'a str),
    /// Rows created at or after this instant (a preference change at that instant).
    Since(&'a str),
    /// Rows of this kind from this actor created at or after this instant (a follow's end).
    KindFromSince(NotificationKind, &'a str, &'a str),
    /// Rows after the first `(created_at, notification_id)` (all when `None`), up to and
    /// including the second (a read marker moving between the two).
    Between(Option<(&'a str, &'a str)>, (&'a str, &'a str)),
}

impl Rows<'_> {
    /// The condition, with parameters from `$2`, and their values.
    fn sql(&self) -> (&'static str, Vec<&str>) {
        match self {
            Rows::From(actor) => ("n.actor_id = $2", vec![actor]),
            Rows::Since(at) => ("n.created_at >= $2", vec![at]),
            Rows::KindFromSince(kind, actor, at) => (
                "n.kind = $2 AND n.actor_id = $3 AND n.created_at >= $4",
                vec![kind.as_str(), actor, at],
            ),
            Rows::Between(None, (at, id)) => (
                "(n.created_at, n.notification_id) <= ($2, $3)",
                vec![at, id],
            ),
            Rows::Between(Some((from_at, from_id)), (at, id)) => (
                "(n.created_at, n.notification_id) > ($2, $3) \
                 AND (n.created_at, n.notification_id) <= ($4, $5)",
                vec![from_at, from_id, at, id],
            ),
        }
    }
}

impl NotificationView {
    fn t(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// Counts every recipient's unread rows from scratch into the kept counts, as migration
    /// 0033 did for the rows projected before it — for tables written other than by this
    /// projector (the benchmark fills them directly). Answers the number of recipients.
    pub async fn recount(&self, pool: &AnyPool) -> Result<u64, ProjectionError> {
        let mut tx = pool.begin().await?;
        self.begin(&mut tx).await?;
        sqlx::query(&format!("DELETE FROM {}", self.t("notification_unread")))
            .execute(&mut *tx)
            .await?;
        let recipients = self.add_unread(&mut tx, "1 = 1", &[], 1).await?;
        tx.commit().await?;
        Ok(recipients)
    }

    /// Adds to each recipient's kept count `sign` times how many of their rows matching
    /// `condition` (over `n`, parameters `values` from `$1`) are visible and unread now: the
    /// one statement every count goes through. A recipient with none is not written. Answers
    /// the number of recipients written.
    async fn add_unread(
        &self,
        tx: &mut Transaction<'static, Any>,
        condition: &str,
        values: &[&str],
        sign: i64,
    ) -> Result<u64, ProjectionError> {
        let counts = self.t("notification_unread");
        let sql = format!(
            "INSERT INTO {counts} (recipient_id, unread) \
             SELECT n.recipient_id, {sign} * COUNT(*) FROM {notification} n \
             WHERE {condition} AND {visible} AND {unread} \
             GROUP BY n.recipient_id \
             ON CONFLICT (recipient_id) DO UPDATE SET unread = {counts}.unread + excluded.unread",
            notification = self.t("notification"),
            visible = visible_row(&self.suffix),
            unread = unread_row(&self.suffix),
        );
        let mut query = sqlx::query(&sql);
        for v in values {
            query = query.bind(*v);
        }
        Ok(query.execute(&mut **tx).await?.rows_affected())
    }

    /// Adds to `recipient`'s kept unread count (`sign` 1) or takes from it (`sign` -1) how many
    /// of `rows` are visible and unread now. Called with -1 before a change and 1 after it,
    /// the count moves by exactly what the change did to those rows. Nothing is written for
    /// none, and a change that takes away ends with [`Self::settle`]: the table holds positive
    /// counts only, so which rows it has does not depend on the order the domains arrived in.
    async fn count_unread(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        recipient: &str,
        rows: Rows<'_>,
        sign: i64,
    ) -> Result<(), ProjectionError> {
        self.count_new(tx, new).await?;
        let (condition, values) = rows.sql();
        let condition = format!("n.recipient_id = $1 AND {condition}");
        let values: Vec<&str> = std::iter::once(recipient).chain(values).collect();
        self.add_unread(tx, &condition, &values, sign).await?;
        Ok(())
    }

    /// Counts the rows inserted since the last count (`new`, emptied), each into its
    /// recipient's kept count if visible and unread now — once per batch, or before a change
    /// that counts a subset of rows (which must find every row counted). One statement per
    /// thousand rows.
    async fn count_new(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
    ) -> Result<(), ProjectionError> {
        for ids in new.chunks(1_000) {
            let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
            let condition = format!("n.notification_id IN ({})", placeholders.join(", "));
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            self.add_unread(tx, &condition, &ids, 1).await?;
        }
        new.clear();
        Ok(())
    }

    /// Drops `recipient`'s kept count if it came to zero.
    async fn settle(
        &self,
        tx: &mut Transaction<'static, Any>,
        recipient: &str,
    ) -> Result<(), ProjectionError> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE recipient_id = $1 AND unread = 0",
            self.t("notification_unread")
        ))
        .bind(recipient)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stores `n` unless it is for the actor themselves, either person was erased, or it
    /// repeats a recent one.
    async fn notify(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        event: &RecordedEvent,
        n: New,
    ) -> Result<(), ProjectionError> {
        if n.recipient == n.actor {
            return Ok(());
        }
        // One statement: nothing if either person was erased, or if a notification of the same
        // key was made within the window before (the dedup), else the row.
        let table = self.t("notification");
        let id = notification_id(event.event_id, n.recipient, n.kind).to_string();
        let inserted = sqlx::query(&format!(
            "INSERT INTO {table} (notification_id, recipient_id, kind, actor_id, post_id, \
                 comment_id, created_at, conversation_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE NOT EXISTS (SELECT 1 FROM {erased} WHERE user_id IN ($2, $4)) \
               AND NOT EXISTS (SELECT 1 FROM {table} \
                   WHERE recipient_id = $2 AND actor_id = $4 AND kind = $3 \
                     AND COALESCE(post_id, '') = COALESCE($5, '') \
                     AND COALESCE(conversation_id, '') = COALESCE($8, '') \
                     AND created_at >= $9 AND created_at <= $7) \
             ON CONFLICT (notification_id) DO NOTHING",
            erased = self.t("notification_erased"),
        ))
        .bind(&id)
        .bind(n.recipient.to_string())
        .bind(n.kind.as_str())
        .bind(n.actor.to_string())
        .bind(n.post.map(|p| p.to_string()))
        .bind(n.comment.map(|c| c.to_string()))
        .bind(ts(n.at))
        .bind(n.conversation.map(|c| c.to_string()))
        .bind(ts(n.at - Duration::seconds(DEDUP_WINDOW_SECS)))
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() > 0 {
            new.push(id);
        }
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
        new: &mut Vec<String>,
        event: &RecordedEvent,
        (post, author): (Uuid, Uuid),
        mentions: &[Uuid],
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let unique: BTreeSet<Uuid> = mentions.iter().copied().collect();
        for user in unique {
            if self.remember_mention(tx, post, user).await? {
                self.notify(
                    tx,
                    new,
                    event,
                    New {
                        recipient: user,
                        kind: NotificationKind::Mention,
                        actor: author,
                        post: Some(post),
                        comment: None,
                        conversation: None,
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
        new: &mut Vec<String>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let user_id = event.aggregate_id.to_string();
        match event.decode::<UserEvent>()? {
            UserEvent::NotificationPreferencesChanged(e) => {
                // The full setting, every kind, so "what was in effect at t" is one lookup.
                let table = self.t("notification_preference");
                let changed_at = ts(e.changed_at);
                // The setting decides for the rows created from its time on.
                let changed = || Rows::Since(&changed_at);
                self.count_unread(tx, new, &user_id, changed(), -1).await?;
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
                self.count_unread(tx, new, &user_id, changed(), 1).await?;
                self.settle(tx, &user_id).await?;
            }
            UserEvent::NotificationsRead(e) => {
                let table = self.t("notification_read");
                let before: Option<(String, String)> = sqlx::query_as(&format!(
                    "SELECT up_to_created_at, up_to_id FROM {table} WHERE user_id = $1"
                ))
                .bind(&user_id)
                .fetch_optional(&mut **tx)
                .await?;
                let after = (ts(e.up_to_created_at), e.up_to.to_string());
                // The rows between the old marker and the new one, whichever comes first.
                let (low, high) = match &before {
                    Some(b) if *b > after => (Some(&after), b),
                    Some(b) => (Some(b), &after),
                    None => (None, &after),
                };
                let between = || {
                    Rows::Between(
                        low.map(|(at, id)| (at.as_str(), id.as_str())),
                        (high.0.as_str(), high.1.as_str()),
                    )
                };
                self.count_unread(tx, new, &user_id, between(), -1).await?;
                sqlx::query(&format!(
                    "INSERT INTO {table} (user_id, up_to_created_at, up_to_id, version) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id) DO UPDATE SET \
                         up_to_created_at = excluded.up_to_created_at, \
                         up_to_id = excluded.up_to_id, version = excluded.version \
                     WHERE {table}.version < excluded.version"
                ))
                .bind(&user_id)
                .bind(&after.0)
                .bind(&after.1)
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
                self.count_unread(tx, new, &user_id, between(), 1).await?;
                self.settle(tx, &user_id).await?;
            }
            UserEvent::Erased(_) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
                    self.t("notification_erased")
                ))
                .bind(&user_id)
                .execute(&mut **tx)
                .await?;
                // Every recipient the erased user notified loses those rows from their count
                // (in one statement: they can be many); the erased user's own count goes.
                self.count_new(tx, new).await?;
                self.add_unread(tx, "n.actor_id = $1", &[&user_id], -1)
                    .await?;
                let (notification, counts) =
                    (self.t("notification"), self.t("notification_unread"));
                sqlx::query(&format!(
                    "DELETE FROM {counts} WHERE recipient_id = $1 \
                        OR (unread = 0 AND recipient_id IN \
                            (SELECT recipient_id FROM {notification} WHERE actor_id = $1))"
                ))
                .bind(&user_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query(&format!(
                    "DELETE FROM {notification} WHERE actor_id = $1 OR recipient_id = $1"
                ))
                .bind(&user_id)
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
        new: &mut Vec<String>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.decode::<FollowEvent>()? {
            FollowEvent::Followed(e) => {
                self.follow_began(tx, new, event, e.follower_id, e.followee_id, e.followed_at)
                    .await?;
                self.notify(
                    tx,
                    new,
                    event,
                    New {
                        recipient: e.followee_id,
                        kind: NotificationKind::Follow,
                        actor: e.follower_id,
                        post: None,
                        comment: None,
                        conversation: None,
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
                    self.count_unread(tx, new, user, Rows::From(other), -1)
                        .await?;
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
                    self.count_unread(tx, new, user, Rows::From(other), 1)
                        .await?;
                    self.settle(tx, user).await?;
                }
            }
            FollowEvent::Unblocked(e) => {
                let table = self.t("notification_block");
                let (blocker, blocked) = (e.blocker_id.to_string(), e.blocked_id.to_string());
                let pairs = [(&blocker, &blocked), (&blocked, &blocker)];
                for (user, other) in pairs {
                    self.count_unread(tx, new, user, Rows::From(other), -1)
                        .await?;
                }
                sqlx::query(&format!(
                    "UPDATE {table} SET unblocked_at = $3 \
                     WHERE ((user_id = $1 AND other_id = $2) OR (user_id = $2 AND other_id = $1)) \
                       AND blocker_id = $1 AND unblocked_at IS NULL AND version < $4"
                ))
                .bind(&blocker)
                .bind(&blocked)
                .bind(ts(e.unblocked_at))
                .bind(event.version)
                .execute(&mut **tx)
                .await?;
                for (user, other) in pairs {
                    self.count_unread(tx, new, user, Rows::From(other), 1)
                        .await?;
                    self.settle(tx, user).await?;
                }
            }
            FollowEvent::Unfollowed(e) => {
                self.follow_ended(
                    tx,
                    new,
                    event,
                    e.follower_id,
                    e.followee_id,
                    e.unfollowed_at,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// A `stream_started` notification of `recipient` for the stream that went live in event
    /// `started` (its id, broadcaster and time). The same id whichever side writes it.
    async fn notify_stream(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        recipient: &str,
        started: (&str, &str, &str, &str),
    ) -> Result<(), ProjectionError> {
        let (stream_id, broadcaster, event_id, started_at) = started;
        let (Ok(event_id), Ok(recipient_id)) =
            (Uuid::parse_str(event_id), Uuid::parse_str(recipient))
        else {
            return Ok(());
        };
        let id = notification_id(event_id, recipient_id, NotificationKind::StreamStarted);
        let id = id.to_string();
        // Nothing if either person was erased (ADR 0025).
        let inserted = sqlx::query(&format!(
            "INSERT INTO {} (notification_id, recipient_id, kind, actor_id, post_id, \
                 comment_id, created_at, stream_id) \
             SELECT $1, $2, $3, $4, NULL, NULL, $5, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM {} WHERE user_id IN ($2, $4)) \
             ON CONFLICT (notification_id) DO NOTHING",
            self.t("notification"),
            self.t("notification_erased"),
        ))
        .bind(&id)
        .bind(recipient)
        .bind(NotificationKind::StreamStarted.as_str())
        .bind(broadcaster)
        .bind(started_at)
        .bind(stream_id)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() > 0 {
            new.push(id);
        }
        Ok(())
    }

    /// A follow began: record its interval, and notify the follower of the followee's streams
    /// that went live since (known already when the stream domain is projected ahead).
    async fn follow_began(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        event: &RecordedEvent,
        follower: Uuid,
        followee: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let (follower, followee, at) = (follower.to_string(), followee.to_string(), ts(at));
        sqlx::query(&format!(
            "INSERT INTO {} (follower_id, followee_id, version, followed_at, unfollowed_at) \
             VALUES ($1, $2, $3, $4, NULL) \
             ON CONFLICT (follower_id, followee_id, version) DO NOTHING",
            self.t("notification_follow")
        ))
        .bind(&follower)
        .bind(&followee)
        .bind(event.version)
        .bind(&at)
        .execute(&mut **tx)
        .await?;
        let streams: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT stream_id, event_id, started_at FROM {} \
             WHERE broadcaster_id = $1 AND started_at >= $2",
            self.t("notification_stream")
        ))
        .bind(&followee)
        .bind(&at)
        .fetch_all(&mut **tx)
        .await?;
        for (stream_id, event_id, started_at) in streams {
            self.notify_stream(
                tx,
                new,
                &follower,
                (&stream_id, &followee, &event_id, &started_at),
            )
            .await?;
        }
        Ok(())
    }

    /// A follow ended: close its interval and take back the notifications of streams that
    /// went live after it ended (written while this end was not yet known).
    async fn follow_ended(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        event: &RecordedEvent,
        follower: Uuid,
        followee: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let (follower, followee, at) = (follower.to_string(), followee.to_string(), ts(at));
        sqlx::query(&format!(
            "UPDATE {} SET unfollowed_at = $3 \
             WHERE follower_id = $1 AND followee_id = $2 AND unfollowed_at IS NULL \
               AND version < $4",
            self.t("notification_follow")
        ))
        .bind(&follower)
        .bind(&followee)
        .bind(&at)
        .bind(event.version)
        .execute(&mut **tx)
        .await?;
        let taken_back = Rows::KindFromSince(NotificationKind::StreamStarted, &followee, &at);
        self.count_unread(tx, new, &follower, taken_back, -1)
            .await?;
        self.settle(tx, &follower).await?;
        sqlx::query(&format!(
            "DELETE FROM {} WHERE recipient_id = $1 AND actor_id = $2 AND kind = $3 \
               AND created_at >= $4",
            self.t("notification")
        ))
        .bind(&follower)
        .bind(&followee)
        .bind(NotificationKind::StreamStarted.as_str())
        .bind(&at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A stream went live: notify everyone who followed the broadcaster at that moment, as far
    /// as the follow domain has been projected (later follows catch up in `follow_began`).
    async fn apply_stream(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let StreamEvent::Started(e) = event.decode::<StreamEvent>()? else {
            return Ok(());
        };
        let (stream_id, broadcaster) = (e.stream_id.to_string(), e.broadcaster_id.to_string());
        let (event_id, started_at) = (event.event_id.to_string(), ts(e.started_at));
        sqlx::query(&format!(
            "INSERT INTO {} (stream_id, broadcaster_id, event_id, started_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO NOTHING",
            self.t("notification_stream")
        ))
        .bind(&stream_id)
        .bind(&broadcaster)
        .bind(&event_id)
        .bind(&started_at)
        .execute(&mut **tx)
        .await?;
        let followers: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT DISTINCT follower_id FROM {} \
             WHERE followee_id = $1 AND followed_at <= $2 \
               AND (unfollowed_at IS NULL OR unfollowed_at > $2)",
            self.t("notification_follow")
        ))
        .bind(&broadcaster)
        .bind(&started_at)
        .fetch_all(&mut **tx)
        .await?;
        for (follower,) in followers {
            self.notify_stream(
                tx,
                new,
                &follower,
                (&stream_id, &broadcaster, &event_id, &started_at),
            )
            .await?;
        }
        Ok(())
    }

    /// Keeps the view's copy of each conversation's members, and notifies the other members of
    /// a message (see the module documentation).
    async fn apply_conversation(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let table = self.t("notification_conversation");
        let upsert = format!(
            "INSERT INTO {table} (conversation_id, user_id, pending) VALUES ($1, $2, $3) \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET pending = excluded.pending"
        );
        let join = |conversation: Uuid, user: Uuid, pending: bool| {
            sqlx::query(&upsert)
                .bind(conversation.to_string())
                .bind(user.to_string())
                .bind(i64::from(pending))
        };
        match event.decode::<ConversationEvent>()? {
            ConversationEvent::Created(e) => {
                for member in e.member_ids {
                    join(e.conversation_id, member, e.request_to == Some(member))
                        .execute(&mut **tx)
                        .await?;
                }
            }
            ConversationEvent::MemberAdded(e) => {
                join(e.conversation_id, e.user_id, false)
                    .execute(&mut **tx)
                    .await?;
            }
            ConversationEvent::RequestAccepted(e) => {
                join(e.conversation_id, e.user_id, false)
                    .execute(&mut **tx)
                    .await?;
            }
            ConversationEvent::MemberRemoved(e) => {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE conversation_id = $1 AND user_id = $2"
                ))
                .bind(e.conversation_id.to_string())
                .bind(e.user_id.to_string())
                .execute(&mut **tx)
                .await?;
            }
            ConversationEvent::MessageSent(e) => {
                let members: Vec<(String,)> = sqlx::query_as(&format!(
                    "SELECT user_id FROM {table} WHERE conversation_id = $1 AND pending = 0 \
                     ORDER BY user_id"
                ))
                .bind(e.conversation_id.to_string())
                .fetch_all(&mut **tx)
                .await?;
                for (member,) in members {
                    let Ok(recipient) = Uuid::parse_str(&member) else {
                        continue;
                    };
                    self.notify(
                        tx,
                        new,
                        event,
                        New {
                            recipient,
                            kind: NotificationKind::Message,
                            actor: e.sender_id,
                            post: None,
                            comment: None,
                            conversation: Some(e.conversation_id),
                            at: e.sent_at,
                        },
                    )
                    .await?;
                }
            }
            // A declined request ends the conversation's sends; edits, recalls, reactions and
            // receipts are not news (a recall does not take the notification back: it had no
            // content).
            ConversationEvent::RequestDeclined(_)
            | ConversationEvent::MessageEdited(_)
            | ConversationEvent::MessageRecalled(_)
            | ConversationEvent::ReactionAdded(_)
            | ConversationEvent::ReactionRemoved(_)
            | ConversationEvent::Read(_) => {}
        }
        Ok(())
    }

    async fn apply_post(
        &self,
        tx: &mut Transaction<'static, Any>,
        new: &mut Vec<String>,
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
                self.post_mentions(
                    tx,
                    new,
                    event,
                    (e.post_id, e.author_id),
                    &e.mentions,
                    e.created_at,
                )
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
                    self.post_mentions(tx, new, event, (post, author), &e.mentions, e.edited_at)
                        .await?;
                }
            }
            PostEvent::CommentAdded(e) => {
                self.notify(
                    tx,
                    new,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Comment,
                        actor: e.author_id,
                        post: Some(e.post_id),
                        comment: Some(e.comment_id),
                        conversation: None,
                        at: e.commented_at,
                    },
                )
                .await?;
                let unique: BTreeSet<Uuid> = e.mentions.iter().copied().collect();
                for user in unique {
                    self.notify(
                        tx,
                        new,
                        event,
                        New {
                            recipient: user,
                            kind: NotificationKind::Mention,
                            actor: e.author_id,
                            post: Some(e.post_id),
                            comment: Some(e.comment_id),
                            conversation: None,
                            at: e.commented_at,
                        },
                    )
                    .await?;
                }
            }
            PostEvent::Shared(e) => {
                self.notify(
                    tx,
                    new,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Share,
                        actor: e.user_id,
                        post: Some(e.post_id),
                        comment: None,
                        conversation: None,
                        at: e.shared_at,
                    },
                )
                .await?;
            }
            PostEvent::Liked(e) => {
                self.notify(
                    tx,
                    new,
                    event,
                    New {
                        recipient: e.post_author_id,
                        kind: NotificationKind::Like,
                        actor: e.user_id,
                        post: Some(e.post_id),
                        comment: None,
                        conversation: None,
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
        &[
            Domain::User,
            Domain::Follow,
            Domain::Post,
            Domain::Stream,
            Domain::Conversation,
        ]
    }

    /// The kept unread counts read what the other domains' transactions wrote: one at a time.
    async fn begin(&self, tx: &mut Transaction<'static, Any>) -> Result<(), ProjectionError> {
        serialise_writers(tx, "nova_notification", &self.t("notification")).await
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

    /// The batch's new rows are counted together at its end ([`Self::count_new`]).
    async fn apply_all(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut new = Vec::new();
        for event in events {
            match event.domain {
                Domain::User => self.apply_user(tx, &mut new, event).await?,
                Domain::Follow => self.apply_follow(tx, &mut new, event).await?,
                Domain::Post => self.apply_post(tx, &mut new, event).await?,
                Domain::Stream => self.apply_stream(tx, &mut new, event).await?,
                Domain::Conversation => self.apply_conversation(tx, &mut new, event).await?,
                Domain::Experiment => {}
            }
        }
        self.count_new(tx, &mut new).await
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(tx, &[event]).await
    }
}
