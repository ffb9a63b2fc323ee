//! Events of the `post` domain (content): posts with their edits, comments and shares; likes;
//! bookmarks.
//!
//! Three aggregate kinds share the domain's one events table:
//! - a post (id = the post's UUIDv7): creation, edits (each edit is an event, so the edit
//!   history is the stream), deletion, hiding, comments and shares;
//! - a like (id = [`like_id`] of post and user): so that likes on a popular post do not all
//!   contend for the post's stream, and liking twice is one like;
//! - a bookmark (id = [`bookmark_id`] of user and post), with an optional collection name.
//!
//! Events carry what the read views need (the post's author on a like, comment or share; the
//! resolved ids of `@mentions`), so projections never look anything up.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

const LIKE_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d70_6f73_742d_6c69_6b65_0001);
const BOOKMARK_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d70_6f73_742d_626f_6f6b_0001);

fn pair_id(namespace: &Uuid, first: Uuid, second: Uuid) -> Uuid {
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(first.as_bytes());
    name[16..].copy_from_slice(second.as_bytes());
    Uuid::new_v5(namespace, &name)
}

/// The aggregate id of `user_id`'s like of `post_id`.
pub fn like_id(post_id: Uuid, user_id: Uuid) -> Uuid {
    pair_id(&LIKE_NAMESPACE, post_id, user_id)
}

/// The aggregate id of `user_id`'s bookmark of `post_id`.
pub fn bookmark_id(user_id: Uuid, post_id: Uuid) -> Uuid {
    pair_id(&BOOKMARK_NAMESPACE, user_id, post_id)
}

/// Version 2: `content` and `media_urls` are personal data, stored sealed under the author's
/// data key and read back opened, or as `"[erased]"` once the author was erased (ADR 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostCreated {
    pub post_id: Uuid,
    pub author_id: Uuid,
    /// Personal data of the author (sealed in storage).
    pub content: String,
    /// Personal data of the author (each sealed in storage).
    pub media_urls: Vec<String>,
    /// Users mentioned as `@username` that existed and were active when the post was written.
    pub mentions: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The post after the edit: every field carries its new value (the previous values are in the
/// earlier events of the stream — that is the edit history).
///
/// Version 2: `content` and `media_urls` are stored sealed under the author's data key (ADR
/// 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostEdited {
    /// Personal data of the author (sealed in storage).
    pub content: String,
    /// Personal data of the author (each sealed in storage).
    pub media_urls: Vec<String>,
    pub mentions: Vec<Uuid>,
    pub edited_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostDeleted {
    pub author_id: Uuid,
    pub deleted_at: DateTime<Utc>,
}

/// Why a post was hidden without its author deleting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HideReason {
    /// The author deactivated their account (issued by the deactivation policy).
    AuthorDeactivated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHidden {
    pub author_id: Uuid,
    pub reason: HideReason,
    pub hidden_at: DateTime<Utc>,
}

/// Version 2: `content` is stored sealed under the commenter's data key (ADR 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentAdded {
    pub comment_id: Uuid,
    pub post_id: Uuid,
    /// The commenter.
    pub author_id: Uuid,
    pub post_author_id: Uuid,
    /// Personal data of the commenter (sealed in storage).
    pub content: String,
    pub mentions: Vec<Uuid>,
    pub commented_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentDeleted {
    pub comment_id: Uuid,
    pub post_id: Uuid,
    /// Who deleted it: the comment's author or the post's author.
    pub deleted_by: Uuid,
    pub deleted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostShared {
    pub share_id: Uuid,
    pub post_id: Uuid,
    /// Who shared.
    pub user_id: Uuid,
    pub post_author_id: Uuid,
    pub shared_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Liked {
    pub post_id: Uuid,
    pub user_id: Uuid,
    pub post_author_id: Uuid,
    pub liked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unliked {
    pub post_id: Uuid,
    pub user_id: Uuid,
    pub unliked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bookmarked {
    pub post_id: Uuid,
    pub user_id: Uuid,
    /// Named collection, or none for the default list.
    pub collection: Option<String>,
    pub bookmarked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unbookmarked {
    pub post_id: Uuid,
    pub user_id: Uuid,
    pub unbookmarked_at: DateTime<Utc>,
}

// Version 1 payloads (plaintext personal data), kept for their checked-in schemas. The upcasters
// only relabel: the shape did not change, only how the store keeps the personal fields (ADR
// 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PostCreated")]
pub struct PostCreatedV1 {
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub content: String,
    pub media_urls: Vec<String>,
    /// Users mentioned as `@username` that existed and were active when the post was written.
    pub mentions: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The post after the edit: every field carries its new value (the previous values are in the
/// earlier events of the stream — that is the edit history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PostEdited")]
pub struct PostEditedV1 {
    pub content: String,
    pub media_urls: Vec<String>,
    pub mentions: Vec<Uuid>,
    pub edited_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CommentAdded")]
pub struct CommentAddedV1 {
    pub comment_id: Uuid,
    pub post_id: Uuid,
    /// The commenter.
    pub author_id: Uuid,
    pub post_author_id: Uuid,
    pub content: String,
    pub mentions: Vec<Uuid>,
    pub commented_at: DateTime<Utc>,
}

crate::domain_events! {
    /// Every event the `post` domain stores.
    pub enum PostEvent in Domain::Post {
        Created(PostCreated) = ("created", 2),
        Edited(PostEdited) = ("edited", 2),
        Deleted(PostDeleted) = ("deleted", 1),
        Hidden(PostHidden) = ("hidden", 1),
        CommentAdded(CommentAdded) = ("comment_added", 2),
        CommentDeleted(CommentDeleted) = ("comment_deleted", 1),
        Shared(PostShared) = ("shared", 1),
        Liked(Liked) = ("liked", 1),
        Unliked(Unliked) = ("unliked", 1),
        Bookmarked(Bookmarked) = ("bookmarked", 1),
        Unbookmarked(Unbookmarked) = ("unbookmarked", 1),
    }
    upcast(event_type, version, payload) {
        // v1 → v2: same shape; v2 stores the personal fields sealed (ADR 0025).
        match (event_type, version) {
            ("created" | "edited" | "comment_added", 1) => (event_type, 2, payload),
            _ => (event_type, version, payload),
        }
    }
    superseded {
        PostCreatedV1 = ("created", 1),
        PostEditedV1 = ("edited", 1),
        CommentAddedV1 = ("comment_added", 1),
    }
}
