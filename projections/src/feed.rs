//! `feed`: per-user home timelines (fan-out on write, read-time merge above a threshold).
//!
//! The feed reads three domains — `user` (author status), `follow` (edges) and `post` — and
//! keeps its own copies of the facts it needs, so it never joins another projection's tables.
//! Live projectors run the three domains concurrently and a rebuild runs them one after
//! another, so the tables are kept equal to a function of each domain's own history (ADR 0007):
//!
//! > `feed_timeline` = { (owner, post) : owner follows the post's author, the author is not
//! > `pulled`, the post is visible }
//!
//! Every event below keeps that equation true whatever has been applied of the other domains,
//! and so the tables after all events are the same for every interleaving. Author status
//! (`active`) is not folded into the timeline; reads filter on it. Own posts and posts of
//! `pulled` authors (whose follower count ever reached the threshold) are merged at read time
//! from `feed_posts` (see `nova_queries::feed`).
//!
//! Concurrency: the equation relates rows written by different domains' projectors (a post's
//! fan-out reads the edges; a follow's back-fill reads the posts). Two such transactions
//! running at once under PostgreSQL's READ COMMITTED could each miss the other's uncommitted
//! row, so every batch transaction first takes a transaction-scoped advisory lock of this feed
//! (`Projection::begin`; its own key per table set, so a rebuild copy does not contend with the
//! live feed). On SQLite writers are serialised by the engine.
//!
//! Writes are sized for rebuilds, which replay every follow and post: runs of follows and of
//! new posts are written a run at a time (`apply_all`), and the timeline's only index is its
//! primary key.

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::follow::FollowEvent;
use nova_event_schemas::personal::is_erased;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "feed";

/// The domains the feed consumes (users for deactivations, follows, posts).
pub const DOMAINS: &[Domain] = &[Domain::User, Domain::Follow, Domain::Post];

/// Followers at which an author switches, for good, from fan-out on write to read-time merge.
pub const FANOUT_THRESHOLD: i64 = 1000;

/// The live feed is `Feed::default()`; a rebuild writes to a suffixed copy of its tables.
pub struct Feed {
    name: String,
    suffix: String,
    threshold: i64,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::with_threshold(FANOUT_THRESHOLD)
    }
}

/// The four tables, by role, with a suffix applied.
struct Tables {
    follows: String,
    authors: String,
    posts: String,
    timeline: String,
}

impl Tables {
    fn new(suffix: &str) -> Tables {
        Tables {
            follows: format!("feed_follows{suffix}"),
            authors: format!("feed_authors{suffix}"),
            posts: format!("feed_posts{suffix}"),
            timeline: format!("feed_timeline{suffix}"),
        }
    }
}

impl Feed {
    /// The live feed with another fan-out threshold (tests and benchmarks). Its tables and
    /// name are the live ones.
    pub fn with_threshold(threshold: i64) -> Feed {
        Feed {
            name: NAME.to_owned(),
            suffix: String::new(),
            threshold,
        }
    }

    pub fn threshold(&self) -> i64 {
        self.threshold
    }

    fn t(&self) -> Tables {
        Tables::new(&self.suffix)
    }

    /// A run of new posts in two statements: the posts in one insert, the fan-out of all of
    /// them in one `INSERT … SELECT` over the authors' followers. Equal to applying them one by
    /// one: post events change neither follows nor which authors are pulled.
    async fn posts_created_run(
        &self,
        tx: &mut Transaction<'static, Any>,
        run: &[nova_event_schemas::post::PostCreated],
    ) -> Result<(), ProjectionError> {
        let Tables {
            follows,
            authors,
            posts,
            timeline,
        } = self.t();
        let values = params(run.len(), 5, 1)
            .map(|p| format!("({}, NULL, 1)", p.join(", ")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {posts} (post_id, author_id, content, media_urls, created_at, \
                 edited_at, visible) VALUES {values} \
             ON CONFLICT (post_id) DO NOTHING \
             RETURNING post_id, author_id, created_at"
        );
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
        for e in run {
            let media = serde_json::to_string(&e.media_urls).unwrap_or_else(|_| "[]".to_owned());
            q = q
                .bind(e.post_id.to_string())
                .bind(e.author_id.to_string())
                .bind(e.content.clone())
                .bind(media)
                .bind(ts(e.created_at));
        }
        let inserted = q.fetch_all(&mut **tx).await?;
        if inserted.is_empty() {
            return Ok(());
        }
        let rows = params(inserted.len(), 3, 1)
            .map(|p| format!("({})", p.join(", ")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH v (post_id, author_id, created_at) AS (VALUES {rows}) \
             INSERT INTO {timeline} (owner_id, created_at, post_id, author_id) \
             SELECT f.follower_id, v.created_at, v.post_id, v.author_id \
             FROM v JOIN {follows} f ON f.followee_id = v.author_id \
             WHERE f.follower_id <> v.author_id \
               AND NOT EXISTS (SELECT 1 FROM {authors} a \
                               WHERE a.author_id = v.author_id AND a.pulled = 1) \
             ON CONFLICT DO NOTHING"
        );
        let mut q = sqlx::query(&sql);
        for (post_id, author_id, created_at) in inserted {
            q = q.bind(post_id).bind(author_id).bind(created_at);
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }

    /// Deleted or hidden: gone from every timeline, and from read-time merges. Timeline rows of
    /// a post exist only for the author's current followers (unfollow removes them), so they
    /// are found through the primary key — no index on `post_id` to maintain on every fan-out.
    /// `user.erased`: the person's posts leave the feed, and every timeline entry of theirs.
    async fn erased(
        &self,
        tx: &mut Transaction<'static, Any>,
        user_id: &str,
    ) -> Result<(), ProjectionError> {
        let Tables {
            posts, timeline, ..
        } = self.t();
        crate::delete_rows(tx, &timeline, "author_id", user_id).await?;
        crate::delete_rows(tx, &posts, "author_id", user_id).await?;
        Ok(())
    }

    async fn post_removed(
        &self,
        tx: &mut Transaction<'static, Any>,
        post_id: &str,
    ) -> Result<(), ProjectionError> {
        let Tables {
            follows,
            posts,
            timeline,
            ..
        } = self.t();
        let post: Option<(String, String)> = sqlx::query_as(&format!(
            "UPDATE {posts} SET visible = 0 WHERE post_id = $1 RETURNING author_id, created_at"
        ))
        .bind(post_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((author_id, created_at)) = post else {
            return Ok(());
        };
        sqlx::query(&format!(
            "DELETE FROM {timeline} WHERE created_at = $2 AND post_id = $3 AND owner_id IN \
                 (SELECT follower_id FROM {follows} WHERE followee_id = $1)"
        ))
        .bind(&author_id)
        .bind(&created_at)
        .bind(post_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A run of follows in fewer statements: the edges in one insert, the follower counts in
    /// one upsert, the back-fill in one `INSERT … SELECT`. Equal to applying them one by one:
    /// within a run counts only grow, so an author is pulled at the end iff it would be after
    /// the last single follow, and back-fill followed by the switch's clean-up leaves nothing.
    async fn followed_run(
        &self,
        tx: &mut Transaction<'static, Any>,
        pairs: &[(String, String)],
    ) -> Result<(), ProjectionError> {
        let Tables {
            follows,
            authors,
            posts,
            timeline,
        } = self.t();
        let pairs: Vec<&(String, String)> = pairs.iter().filter(|(a, b)| a != b).collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let values = params(pairs.len(), 2, 1)
            .map(|p| format!("({})", p.join(", ")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {follows} (follower_id, followee_id) VALUES {values} \
             ON CONFLICT (follower_id, followee_id) DO NOTHING \
             RETURNING follower_id, followee_id"
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql);
        for (a, b) in &pairs {
            q = q.bind(a).bind(b);
        }
        let inserted = q.fetch_all(&mut **tx).await?;
        if inserted.is_empty() {
            return Ok(());
        }
        let mut gained: std::collections::BTreeMap<&str, i64> = Default::default();
        for (_, followee) in &inserted {
            *gained.entry(followee.as_str()).or_default() += 1;
        }
        let values = params(gained.len(), 2, 2)
            .map(|p| {
                format!(
                    "({a}, {n}, CASE WHEN {n} >= $1 THEN 1 ELSE 0 END, 1)",
                    a = p[0],
                    n = p[1]
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {authors} (author_id, followers, pulled, active) VALUES {values} \
             ON CONFLICT (author_id) DO UPDATE SET \
                 followers = {authors}.followers + excluded.followers, \
                 pulled = CASE WHEN {authors}.followers + excluded.followers >= $1 THEN 1 \
                               ELSE {authors}.pulled END \
             RETURNING author_id, followers, pulled"
        );
        let mut q = sqlx::query_as::<_, (String, i64, i64)>(&sql).bind(self.threshold);
        for (author, n) in &gained {
            q = q.bind(*author).bind(*n);
        }
        let counted = q.fetch_all(&mut **tx).await?;
        let mut pulled: std::collections::BTreeSet<String> = Default::default();
        for (author, followers, is_pulled) in counted {
            if is_pulled == 1 {
                let before = followers - gained.get(author.as_str()).copied().unwrap_or(0);
                if before < self.threshold {
                    // Switched during this run (or pulled before and back at the threshold,
                    // in which case nothing of theirs is in any timeline).
                    sqlx::query(&format!(
                        "DELETE FROM {timeline} WHERE author_id = $1 AND owner_id IN \
                             (SELECT follower_id FROM {follows} WHERE followee_id = $1)"
                    ))
                    .bind(&author)
                    .execute(&mut **tx)
                    .await?;
                }
                pulled.insert(author);
            }
        }
        let fill: Vec<&(String, String)> = inserted
            .iter()
            .filter(|(_, followee)| !pulled.contains(followee))
            .collect();
        if fill.is_empty() {
            return Ok(());
        }
        let rows = params(fill.len(), 2, 1)
            .map(|p| format!("({})", p.join(", ")))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH v (follower_id, followee_id) AS (VALUES {rows}) \
             INSERT INTO {timeline} (owner_id, created_at, post_id, author_id) \
             SELECT v.follower_id, p.created_at, p.post_id, p.author_id \
             FROM v JOIN {posts} p ON p.author_id = v.followee_id \
             WHERE p.visible = 1 \
             ON CONFLICT DO NOTHING"
        );
        let mut q = sqlx::query(&sql);
        for (a, b) in fill {
            q = q.bind(a).bind(b);
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }

    async fn unfollowed(
        &self,
        tx: &mut Transaction<'static, Any>,
        follower: &str,
        followee: &str,
    ) -> Result<(), ProjectionError> {
        let Tables {
            follows,
            authors,
            timeline,
            ..
        } = self.t();
        let removed = sqlx::query(&format!(
            "DELETE FROM {follows} WHERE follower_id = $1 AND followee_id = $2"
        ))
        .bind(follower)
        .bind(followee)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Ok(());
        }
        // `pulled` stays: it depends on the highest count ever reached, not the current one.
        sqlx::query(&format!(
            "UPDATE {authors} SET followers = followers - 1 WHERE author_id = $1"
        ))
        .bind(followee)
        .execute(&mut **tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM {timeline} WHERE owner_id = $1 AND author_id = $2"
        ))
        .bind(follower)
        .bind(followee)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn deactivated(
        &self,
        tx: &mut Transaction<'static, Any>,
        user: &str,
    ) -> Result<(), ProjectionError> {
        let authors = self.t().authors;
        sqlx::query(&format!(
            "INSERT INTO {authors} (author_id, followers, pulled, active) VALUES ($1, 0, 0, 0) \
             ON CONFLICT (author_id) DO UPDATE SET active = 0"
        ))
        .bind(user)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Placeholders `$first…` for `rows` rows of `width` parameters each, row by row.
fn params(rows: usize, width: usize, first: usize) -> impl Iterator<Item = Vec<String>> {
    (0..rows).map(move |i| {
        (0..width)
            .map(|j| format!("${}", first + i * width + j))
            .collect()
    })
}

/// Whether a post event changes the feed. The one list of those that do not — likes, comments,
/// shares, bookmarks — which therefore neither end a run of new posts nor reach `apply`'s work.
fn touches_feed(event: &PostEvent) -> bool {
    match event {
        PostEvent::Created(_)
        | PostEvent::Edited(_)
        | PostEvent::Deleted(_)
        | PostEvent::Hidden(_) => true,
        PostEvent::CommentAdded(_)
        | PostEvent::CommentDeleted(_)
        | PostEvent::Shared(_)
        | PostEvent::Liked(_)
        | PostEvent::Unliked(_)
        | PostEvent::Bookmarked(_)
        | PostEvent::Unbookmarked(_) => false,
    }
}

#[async_trait]
impl Projection for Feed {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    fn tables(&self) -> Vec<String> {
        let t = self.t();
        vec![t.timeline, t.posts, t.authors, t.follows]
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(Feed {
            name: format!("{}{suffix}", self.name),
            suffix: format!("{}{suffix}", self.suffix),
            threshold: self.threshold,
        }))
    }

    async fn begin(&self, tx: &mut Transaction<'static, Any>) -> Result<(), ProjectionError> {
        // This feed's timeline-touching transactions, one at a time (see the module doc).
        crate::serialise_writers(tx, "nova_feed", &self.t().timeline).await
    }

    /// Runs of follows and of new posts (a rebuild replays hundreds of thousands of each) go
    /// through `followed_run` / `posts_created_run`, at most one runtime batch at a time;
    /// every other event is applied on its own, in order.
    async fn apply_all(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // 500 (the runtime's batch) × 5 parameters stays far below both engines' limits.
        const RUN: usize = 500;
        let mut follows: Vec<(String, String)> = Vec::new();
        let mut posts: Vec<nova_event_schemas::post::PostCreated> = Vec::new();
        for event in events {
            match event.domain {
                Domain::Follow => {
                    if let FollowEvent::Followed(e) = event.decode::<FollowEvent>()? {
                        follows.push((e.follower_id.to_string(), e.followee_id.to_string()));
                        if follows.len() == RUN {
                            self.followed_run(tx, &follows).await?;
                            follows.clear();
                        }
                        continue;
                    }
                }
                Domain::Post => match event.decode::<PostEvent>()? {
                    PostEvent::Created(e) => {
                        // An erased author's post has no entry (ADR 0025).
                        if is_erased(&e.content) {
                            continue;
                        }
                        posts.push(e);
                        if posts.len() == RUN {
                            self.posts_created_run(tx, &posts).await?;
                            posts.clear();
                        }
                        continue;
                    }
                    // Not part of the feed, so they leave a run of new posts open: under load,
                    // likes arrive between every two posts.
                    other if !touches_feed(&other) => continue,
                    _ => {}
                },
                _ => {}
            }
            // Anything else ends the runs (a batch holds one domain, so at most one is open).
            if !follows.is_empty() {
                self.followed_run(tx, &follows).await?;
                follows.clear();
            }
            if !posts.is_empty() {
                self.posts_created_run(tx, &posts).await?;
                posts.clear();
            }
            self.apply(tx, event).await?;
        }
        if !follows.is_empty() {
            self.followed_run(tx, &follows).await?;
        }
        if !posts.is_empty() {
            self.posts_created_run(tx, &posts).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match event.domain {
            Domain::User => match event.decode::<UserEvent>()? {
                UserEvent::Deactivated(_) => {
                    self.deactivated(tx, &event.aggregate_id.to_string())
                        .await?;
                }
                UserEvent::Erased(e) => self.erased(tx, &e.user_id.to_string()).await?,
                // Profiles, credentials, sessions and settings are not part of the feed.
                UserEvent::Registered(_)
                | UserEvent::UsernameClaimed(_)
                | UserEvent::ProfileUpdated(_)
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
            },
            Domain::Follow => match event.decode::<FollowEvent>()? {
                FollowEvent::Followed(e) => {
                    let pair = (e.follower_id.to_string(), e.followee_id.to_string());
                    self.followed_run(tx, &[pair]).await?;
                }
                FollowEvent::Unfollowed(e) => {
                    self.unfollowed(tx, &e.follower_id.to_string(), &e.followee_id.to_string())
                        .await?;
                }
                // A block ends follows by `unfollowed` events of its own; nothing else to do.
                FollowEvent::Blocked(_) | FollowEvent::Unblocked(_) => {}
            },
            Domain::Post => match event.decode::<PostEvent>()? {
                // What an erased person wrote has no entry, whether the feed learns of the
                // erasure from `user.erased` (live) or from history that reads as erased.
                PostEvent::Created(e) if is_erased(&e.content) => {}
                PostEvent::Edited(e) if is_erased(&e.content) => {}
                PostEvent::Created(e) => {
                    self.posts_created_run(tx, &[e]).await?;
                }
                PostEvent::Edited(e) => {
                    // Timelines hold ids only; the content is read from `feed_posts`.
                    let posts = self.t().posts;
                    let media =
                        serde_json::to_string(&e.media_urls).unwrap_or_else(|_| "[]".to_owned());
                    sqlx::query(&format!(
                        "UPDATE {posts} SET content = $2, media_urls = $3, edited_at = $4 \
                         WHERE post_id = $1"
                    ))
                    .bind(event.aggregate_id.to_string())
                    .bind(&e.content)
                    .bind(&media)
                    .bind(ts(e.edited_at))
                    .execute(&mut **tx)
                    .await?;
                }
                PostEvent::Deleted(_) | PostEvent::Hidden(_) => {
                    self.post_removed(tx, &event.aggregate_id.to_string())
                        .await?;
                }
                // Likes, comments, shares, bookmarks: not part of the feed (`touches_feed`).
                _ => {}
            },
            // Not consumed (see `domains`).
            Domain::Conversation | Domain::Stream | Domain::Experiment => {}
        }
        Ok(())
    }
}
