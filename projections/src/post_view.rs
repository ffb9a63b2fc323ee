//! `post_view`: posts with their counters, comments and bookmarks — the read model of the post
//! domain (its only domain, so the order of its events is total and a rebuild replays exactly
//! what the live projector applied).
//!
//! Tables: `posts` (one row per post; `visible` = 0 once deleted or hidden; like, comment and
//! share counters), `post_comments` (live comments; a deleted comment's row is removed),
//! `post_bookmarks` (one row per bookmarked (user, post), with its collection).

use std::sync::Arc;

use async_trait::async_trait;
use nova_event_schemas::personal::is_erased;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::Domain;
use nova_infra::store::RecordedEvent;
use sqlx::{Any, Transaction};

use crate::user_directory::ts;
use crate::{Projection, ProjectionError};

pub const NAME: &str = "post_view";

/// The live view is `PostView::default()`; a rebuild writes to suffixed copies of its tables.
pub struct PostView {
    name: String,
    suffix: String,
}

impl Default for PostView {
    fn default() -> Self {
        PostView {
            name: NAME.to_owned(),
            suffix: String::new(),
        }
    }
}

const TABLES: [&str; 3] = ["posts", "post_comments", "post_bookmarks"];

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

impl PostView {
    /// `user.erased`: the person's posts and comments go; the posts they commented on count
    /// their comments no more.
    async fn erase(
        &self,
        tx: &mut Transaction<'static, Any>,
        user_id: &str,
    ) -> Result<(), ProjectionError> {
        let (posts, comments) = (self.posts(), self.comments());
        sqlx::query(&format!(
            "UPDATE {posts} SET comment_count = comment_count - \
                 (SELECT COUNT(*) FROM {comments} c \
                  WHERE c.post_id = {posts}.post_id AND c.author_id = $1) \
             WHERE post_id IN (SELECT post_id FROM {comments} WHERE author_id = $1)"
        ))
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
        crate::delete_rows(tx, &comments, "author_id", user_id).await?;
        crate::delete_rows(tx, &posts, "author_id", user_id).await?;
        Ok(())
    }

    fn posts(&self) -> String {
        format!("posts{}", self.suffix)
    }
    fn comments(&self) -> String {
        format!("post_comments{}", self.suffix)
    }
    fn bookmarks(&self) -> String {
        format!("post_bookmarks{}", self.suffix)
    }

    async fn bump(
        &self,
        tx: &mut Transaction<'static, Any>,
        post_id: &str,
        column: &str,
        delta: i64,
    ) -> Result<(), sqlx::Error> {
        // A decrement never takes a counter below zero.
        sqlx::query(&format!(
            "UPDATE {} SET {column} = {column} + $2 WHERE post_id = $1 AND {column} + $2 >= 0",
            self.posts()
        ))
        .bind(post_id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn hide(
        &self,
        tx: &mut Transaction<'static, Any>,
        post_id: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET visible = 0 WHERE post_id = $1",
            self.posts()
        ))
        .bind(post_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Projection for PostView {
    fn name(&self) -> &str {
        &self.name
    }

    fn domains(&self) -> &'static [Domain] {
        // The user domain for `user.erased` only (ADR 0025).
        &[Domain::Post, Domain::User]
    }

    fn tables(&self) -> Vec<String> {
        TABLES
            .iter()
            .map(|t| format!("{t}{}", self.suffix))
            .collect()
    }

    fn shadow(&self, suffix: &str) -> Option<Arc<dyn Projection>> {
        Some(Arc::new(PostView {
            name: format!("{}{suffix}", self.name),
            suffix: format!("{}{suffix}", self.suffix),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.domain == Domain::User {
            if let UserEvent::Erased(e) = event.decode::<UserEvent>()? {
                self.erase(tx, &e.user_id.to_string()).await?;
            }
            return Ok(());
        }
        let aggregate_id = event.aggregate_id.to_string();
        match event.decode::<PostEvent>()? {
            // What an erased person wrote has no row, whether the view learns of the erasure
            // from `user.erased` (live) or from history that already reads as erased (rebuild).
            PostEvent::Created(e) if is_erased(&e.content) => {}
            PostEvent::CommentAdded(e) if is_erased(&e.content) => {}
            PostEvent::Edited(e) if is_erased(&e.content) => {}
            PostEvent::Created(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (post_id, author_id, content, media_urls, mentions, \
                         created_at, edited_at, visible, like_count, comment_count, share_count) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, 1, 0, 0, 0) \
                     ON CONFLICT (post_id) DO NOTHING",
                    self.posts()
                ))
                .bind(e.post_id.to_string())
                .bind(e.author_id.to_string())
                .bind(&e.content)
                .bind(json(&e.media_urls))
                .bind(json(&e.mentions))
                .bind(ts(e.created_at))
                .execute(&mut **tx)
                .await?;
            }
            PostEvent::Edited(e) => {
                sqlx::query(&format!(
                    "UPDATE {} SET content = $2, media_urls = $3, mentions = $4, edited_at = $5 \
                     WHERE post_id = $1",
                    self.posts()
                ))
                .bind(&aggregate_id)
                .bind(&e.content)
                .bind(json(&e.media_urls))
                .bind(json(&e.mentions))
                .bind(ts(e.edited_at))
                .execute(&mut **tx)
                .await?;
            }
            PostEvent::Deleted(_) | PostEvent::Hidden(_) => self.hide(tx, &aggregate_id).await?,
            PostEvent::CommentAdded(e) => {
                let inserted = sqlx::query(&format!(
                    "INSERT INTO {} (comment_id, post_id, author_id, content, mentions, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (comment_id) DO NOTHING",
                    self.comments()
                ))
                .bind(e.comment_id.to_string())
                .bind(e.post_id.to_string())
                .bind(e.author_id.to_string())
                .bind(&e.content)
                .bind(json(&e.mentions))
                .bind(ts(e.commented_at))
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted > 0 {
                    self.bump(tx, &e.post_id.to_string(), "comment_count", 1)
                        .await?;
                }
            }
            PostEvent::CommentDeleted(e) => {
                let removed = sqlx::query(&format!(
                    "DELETE FROM {} WHERE comment_id = $1",
                    self.comments()
                ))
                .bind(e.comment_id.to_string())
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if removed > 0 {
                    self.bump(tx, &e.post_id.to_string(), "comment_count", -1)
                        .await?;
                }
            }
            PostEvent::Shared(e) => {
                self.bump(tx, &e.post_id.to_string(), "share_count", 1)
                    .await?
            }
            PostEvent::Liked(e) => {
                self.bump(tx, &e.post_id.to_string(), "like_count", 1)
                    .await?
            }
            PostEvent::Unliked(e) => {
                self.bump(tx, &e.post_id.to_string(), "like_count", -1)
                    .await?
            }
            PostEvent::Bookmarked(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (user_id, post_id, collection, bookmarked_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, post_id) DO UPDATE \
                     SET collection = excluded.collection, bookmarked_at = excluded.bookmarked_at",
                    self.bookmarks()
                ))
                .bind(e.user_id.to_string())
                .bind(e.post_id.to_string())
                .bind(&e.collection)
                .bind(ts(e.bookmarked_at))
                .execute(&mut **tx)
                .await?;
            }
            PostEvent::Unbookmarked(e) => {
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE user_id = $1 AND post_id = $2",
                    self.bookmarks()
                ))
                .bind(e.user_id.to_string())
                .bind(e.post_id.to_string())
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}
