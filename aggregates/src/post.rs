//! The `post` domain: posts (with edits, comments, shares), likes and bookmarks.
//!
//! Three aggregates share [`PostEvent`]: [`Post`] (id = the post's UUIDv7), [`Like`] (id =
//! `like_id(post, user)`) and [`Bookmark`] (id = `bookmark_id(user, post)`). A like or bookmark
//! decides on facts about its post ([`PostFacts`]) that the command handler loaded from the post
//! aggregate (same domain) and put into the command, so likes on a popular post never contend
//! for the post's stream.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_event_schemas::post::*;
use uuid::Uuid;

use crate::CommandName;

/// The `aggregate_type` of every aggregate of the `post` domain (listed by `nova boundaries`).
pub const AGGREGATE_TYPES: &[&str] = &[
    <Post as Aggregate>::NAME,
    <Like as Aggregate>::NAME,
    <Bookmark as Aggregate>::NAME,
];

/// Why the post domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("no such post")]
    NotFound,
    #[error("the post already exists")]
    AlreadyExists,
    #[error("only the author may do this")]
    Forbidden,
    #[error("the post was deleted or hidden")]
    Deleted,
    #[error("no such comment")]
    CommentNotFound,
    /// Decided by the command handler from the follow domain's facts: a block is in effect
    /// between the actor and the post's author (either direction).
    #[error("a block is in effect between you and the post's author")]
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommentState {
    pub author_id: Uuid,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PostState {
    pub post_id: Option<Uuid>,
    pub author_id: Uuid,
    pub content: String,
    pub media_urls: Vec<String>,
    pub mentions: Vec<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub hidden: bool,
    pub comments: BTreeMap<Uuid, CommentState>,
    /// Comments not deleted.
    pub comment_count: i64,
    pub shares: BTreeSet<Uuid>,
}

impl PostState {
    pub fn exists(&self) -> bool {
        self.post_id.is_some()
    }

    /// Neither deleted by its author nor hidden.
    pub fn visible(&self) -> bool {
        self.exists() && !self.deleted && !self.hidden
    }

    pub fn share_count(&self) -> i64 {
        self.shares.len() as i64
    }

    /// What a like or bookmark needs to know about this post (`None` if it does not exist).
    pub fn facts(&self) -> Option<PostFacts> {
        Some(PostFacts {
            post_id: self.post_id?,
            author_id: self.author_id,
            visible: self.visible(),
        })
    }
}

/// Facts about a post, loaded by the command handler for a like or bookmark decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostFacts {
    pub post_id: Uuid,
    pub author_id: Uuid,
    /// Neither deleted nor hidden.
    pub visible: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PostCommand {
    Create {
        post_id: Uuid,
        author_id: Uuid,
        content: String,
        media_urls: Vec<String>,
        mentions: Vec<Uuid>,
        now: DateTime<Utc>,
    },
    /// Every field carries its new value; nothing changes when they equal the current ones.
    Edit {
        actor: Uuid,
        content: String,
        media_urls: Vec<String>,
        mentions: Vec<Uuid>,
        now: DateTime<Utc>,
    },
    Delete {
        actor: Uuid,
        now: DateTime<Utc>,
    },
    Hide {
        reason: HideReason,
        now: DateTime<Utc>,
    },
    AddComment {
        comment_id: Uuid,
        author_id: Uuid,
        content: String,
        mentions: Vec<Uuid>,
        now: DateTime<Utc>,
    },
    DeleteComment {
        comment_id: Uuid,
        actor: Uuid,
        now: DateTime<Utc>,
    },
    Share {
        share_id: Uuid,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
}

impl CommandName for PostCommand {
    fn name(&self) -> &'static str {
        match self {
            PostCommand::Create { .. } => "create",
            PostCommand::Edit { .. } => "edit",
            PostCommand::Delete { .. } => "delete",
            PostCommand::Hide { .. } => "hide",
            PostCommand::AddComment { .. } => "add_comment",
            PostCommand::DeleteComment { .. } => "delete_comment",
            PostCommand::Share { .. } => "share",
        }
    }
}

pub struct Post;

impl Aggregate for Post {
    const NAME: &'static str = "post";
    type State = PostState;
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = PostError;

    fn handle_command(
        state: &PostState,
        command: PostCommand,
    ) -> Result<Vec<PostEvent>, PostError> {
        if let PostCommand::Create {
            post_id,
            author_id,
            content,
            media_urls,
            mentions,
            now,
        } = command
        {
            if state.exists() {
                return Err(PostError::AlreadyExists);
            }
            return Ok(vec![PostEvent::Created(PostCreated {
                post_id,
                author_id,
                content,
                media_urls,
                mentions,
                created_at: now,
            })]);
        }
        let Some(post_id) = state.post_id else {
            return Err(PostError::NotFound);
        };
        match command {
            PostCommand::Create { .. } => Err(PostError::AlreadyExists),
            PostCommand::Edit {
                actor,
                content,
                media_urls,
                mentions,
                now,
            } => {
                if actor != state.author_id {
                    return Err(PostError::Forbidden);
                }
                if !state.visible() {
                    return Err(PostError::Deleted);
                }
                let unchanged = content == state.content
                    && media_urls == state.media_urls
                    && mentions == state.mentions;
                Ok(if unchanged {
                    vec![]
                } else {
                    vec![PostEvent::Edited(PostEdited {
                        content,
                        media_urls,
                        mentions,
                        edited_at: now,
                    })]
                })
            }
            PostCommand::Delete { actor, now } => {
                if actor != state.author_id {
                    return Err(PostError::Forbidden);
                }
                Ok(if state.deleted {
                    vec![]
                } else {
                    vec![PostEvent::Deleted(PostDeleted {
                        author_id: state.author_id,
                        deleted_at: now,
                    })]
                })
            }
            PostCommand::Hide { reason, now } => Ok(if state.visible() {
                vec![PostEvent::Hidden(PostHidden {
                    author_id: state.author_id,
                    reason,
                    hidden_at: now,
                })]
            } else {
                vec![]
            }),
            PostCommand::AddComment {
                comment_id,
                author_id,
                content,
                mentions,
                now,
            } => {
                if !state.visible() {
                    return Err(PostError::Deleted);
                }
                if state.comments.contains_key(&comment_id) {
                    // A retried command with the same fresh id: already done.
                    return Ok(vec![]);
                }
                Ok(vec![PostEvent::CommentAdded(CommentAdded {
                    comment_id,
                    post_id,
                    author_id,
                    post_author_id: state.author_id,
                    content,
                    mentions,
                    commented_at: now,
                })])
            }
            PostCommand::DeleteComment {
                comment_id,
                actor,
                now,
            } => {
                let comment = state
                    .comments
                    .get(&comment_id)
                    .ok_or(PostError::CommentNotFound)?;
                if actor != comment.author_id && actor != state.author_id {
                    return Err(PostError::Forbidden);
                }
                Ok(if comment.deleted {
                    vec![]
                } else {
                    vec![PostEvent::CommentDeleted(CommentDeleted {
                        comment_id,
                        post_id,
                        deleted_by: actor,
                        deleted_at: now,
                    })]
                })
            }
            PostCommand::Share {
                share_id,
                user_id,
                now,
            } => {
                if !state.visible() {
                    return Err(PostError::Deleted);
                }
                if state.shares.contains(&share_id) {
                    return Ok(vec![]);
                }
                Ok(vec![PostEvent::Shared(PostShared {
                    share_id,
                    post_id,
                    user_id,
                    post_author_id: state.author_id,
                    shared_at: now,
                })])
            }
        }
    }

    fn apply_event(mut state: PostState, event: PostEvent) -> PostState {
        match event {
            PostEvent::Created(e) => {
                state.post_id = Some(e.post_id);
                state.author_id = e.author_id;
                state.content = e.content;
                state.media_urls = e.media_urls;
                state.mentions = e.mentions;
                state.created_at = Some(e.created_at);
            }
            PostEvent::Edited(e) => {
                state.content = e.content;
                state.media_urls = e.media_urls;
                state.mentions = e.mentions;
                state.edited_at = Some(e.edited_at);
            }
            PostEvent::Deleted(_) => state.deleted = true,
            PostEvent::Hidden(_) => state.hidden = true,
            PostEvent::CommentAdded(e) => {
                let fresh = state
                    .comments
                    .insert(
                        e.comment_id,
                        CommentState {
                            author_id: e.author_id,
                            deleted: false,
                        },
                    )
                    .is_none();
                if fresh {
                    state.comment_count += 1;
                }
            }
            PostEvent::CommentDeleted(e) => {
                if let Some(c) = state.comments.get_mut(&e.comment_id) {
                    if !c.deleted {
                        c.deleted = true;
                        state.comment_count -= 1;
                    }
                }
            }
            PostEvent::Shared(e) => {
                state.shares.insert(e.share_id);
            }
            // Events of the like and bookmark aggregates never reach a post stream.
            PostEvent::Liked(_)
            | PostEvent::Unliked(_)
            | PostEvent::Bookmarked(_)
            | PostEvent::Unbookmarked(_) => {}
        }
        state
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LikeState {
    pub liked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LikeCommand {
    /// `post` is `None` when the post does not exist.
    Like {
        post: Option<PostFacts>,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
    Unlike {
        post: Option<PostFacts>,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
}

impl CommandName for LikeCommand {
    fn name(&self) -> &'static str {
        match self {
            LikeCommand::Like { .. } => "like",
            LikeCommand::Unlike { .. } => "unlike",
        }
    }
}

/// One user's like of one post: liking twice is one like.
pub struct Like;

impl Aggregate for Like {
    const NAME: &'static str = "like";
    type State = LikeState;
    type Command = LikeCommand;
    type Event = PostEvent;
    type Error = PostError;

    fn handle_command(
        state: &LikeState,
        command: LikeCommand,
    ) -> Result<Vec<PostEvent>, PostError> {
        match command {
            LikeCommand::Like { post, user_id, now } => {
                let post = post.ok_or(PostError::NotFound)?;
                if !post.visible {
                    return Err(PostError::Deleted);
                }
                Ok(if state.liked {
                    vec![]
                } else {
                    vec![PostEvent::Liked(Liked {
                        post_id: post.post_id,
                        user_id,
                        post_author_id: post.author_id,
                        liked_at: now,
                    })]
                })
            }
            // Unliking a deleted post is allowed: it only takes the user's own like back.
            LikeCommand::Unlike { post, user_id, now } => {
                let post = post.ok_or(PostError::NotFound)?;
                Ok(if state.liked {
                    vec![PostEvent::Unliked(Unliked {
                        post_id: post.post_id,
                        user_id,
                        unliked_at: now,
                    })]
                } else {
                    vec![]
                })
            }
        }
    }

    fn apply_event(mut state: LikeState, event: PostEvent) -> LikeState {
        match event {
            PostEvent::Liked(_) => state.liked = true,
            PostEvent::Unliked(_) => state.liked = false,
            _ => {}
        }
        state
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BookmarkState {
    pub bookmarked: bool,
    pub collection: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BookmarkCommand {
    /// `collection`: `None` = the default list.
    Bookmark {
        post: Option<PostFacts>,
        user_id: Uuid,
        collection: Option<String>,
        now: DateTime<Utc>,
    },
    Unbookmark {
        post: Option<PostFacts>,
        user_id: Uuid,
        now: DateTime<Utc>,
    },
}

impl CommandName for BookmarkCommand {
    fn name(&self) -> &'static str {
        match self {
            BookmarkCommand::Bookmark { .. } => "bookmark",
            BookmarkCommand::Unbookmark { .. } => "unbookmark",
        }
    }
}

/// One user's bookmark of one post, in at most one collection.
pub struct Bookmark;

impl Aggregate for Bookmark {
    const NAME: &'static str = "bookmark";
    type State = BookmarkState;
    type Command = BookmarkCommand;
    type Event = PostEvent;
    type Error = PostError;

    fn handle_command(
        state: &BookmarkState,
        command: BookmarkCommand,
    ) -> Result<Vec<PostEvent>, PostError> {
        match command {
            BookmarkCommand::Bookmark {
                post,
                user_id,
                collection,
                now,
            } => {
                let post = post.ok_or(PostError::NotFound)?;
                if !post.visible {
                    return Err(PostError::Deleted);
                }
                Ok(if state.bookmarked && state.collection == collection {
                    vec![]
                } else {
                    vec![PostEvent::Bookmarked(Bookmarked {
                        post_id: post.post_id,
                        user_id,
                        collection,
                        bookmarked_at: now,
                    })]
                })
            }
            BookmarkCommand::Unbookmark { post, user_id, now } => {
                let post = post.ok_or(PostError::NotFound)?;
                Ok(if state.bookmarked {
                    vec![PostEvent::Unbookmarked(Unbookmarked {
                        post_id: post.post_id,
                        user_id,
                        unbookmarked_at: now,
                    })]
                } else {
                    vec![]
                })
            }
        }
    }

    fn apply_event(mut state: BookmarkState, event: PostEvent) -> BookmarkState {
        match event {
            PostEvent::Bookmarked(e) => {
                state.bookmarked = true;
                state.collection = e.collection;
            }
            PostEvent::Unbookmarked(_) => {
                state.bookmarked = false;
                state.collection = None;
            }
            _ => {}
        }
        state
    }
}

#[cfg(test)]
mod tests;
