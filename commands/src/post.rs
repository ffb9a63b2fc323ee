//! Command handlers of the `post` domain.
//!
//! Input is validated here (content length, media URLs, collection names); `@mentions` are
//! resolved to active user ids by a [`UserFactSource`] (the user directory, a read model, never
//! the user domain's events); facts a like or bookmark needs about its post are loaded from the
//! post aggregate (same domain). Decisions are the aggregates'. Only this module can create a
//! [`PostWriter`], so only it appends post events (ADR 0008).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use nova_aggregates::post::{
    Bookmark, BookmarkCommand, Like, LikeCommand, Post, PostCommand, PostError, PostFacts,
    PostState,
};
use nova_event_schemas::post::{bookmark_id, like_id, HideReason, PostEvent};
use nova_event_schemas::Domain;
use uuid::Uuid;

use crate::facts::{FollowFactSource, UserFactSource};
use crate::user::{URL_MAX, USERNAME_MAX, USERNAME_MIN};
use crate::{CommandContext, CommandError, CommandStore, Done, Owned, Repository};

/// The post domain's writer: the proof, required to append post events, that the code
/// appending them is this module's. Its field is private, so no other module can create one.
pub struct PostWriter(());

impl Owned for PostEvent {
    type Writer = PostWriter;
}

/// Seals the personal data this domain's events stored in plaintext before ADR 0025 (run at
/// start, before any relay or projector reads the history; see `CommandStore::seal_history`).
pub async fn seal_history(
    store: &CommandStore,
    keys: &dyn nova_infra::personal::DataKeys,
) -> std::result::Result<u64, nova_infra::store::StoreError> {
    store.seal_history::<PostEvent>(&PostWriter(()), keys).await
}

pub const CONTENT_MAX: usize = 5000;
pub const COMMENT_MAX: usize = 2000;
pub const MEDIA_MAX: usize = 4;
pub const COLLECTION_MAX: usize = 64;
/// Mentions recognised per post or comment; further names stay plain text.
pub const MENTIONS_MAX: usize = 20;

/// Why a post command failed: the one command error, with the post domain's refusals.
pub type PostCommandError = CommandError<PostError>;

type Result<T> = std::result::Result<T, PostCommandError>;

#[derive(Clone)]
pub struct PostCommands {
    store: CommandStore,
    /// Facts about users (the user directory); they may lag the user domain.
    users: Arc<dyn UserFactSource>,
    /// Facts about blocks (they may lag the follow domain).
    graph: Arc<dyn FollowFactSource>,
    posts: Repository<Post>,
    likes: Repository<Like>,
    bookmarks: Repository<Bookmark>,
}

impl PostCommands {
    pub fn new(
        store: CommandStore,
        users: Arc<dyn UserFactSource>,
        graph: Arc<dyn FollowFactSource>,
    ) -> Self {
        PostCommands {
            graph,
            posts: Repository::new(&store, PostWriter(())),
            likes: Repository::new(&store, PostWriter(())),
            bookmarks: Repository::new(&store, PostWriter(())),
            store,
            users,
        }
    }

    /// Position of the post domain's latest event: what a policy waits for a post read model
    /// to reach before it lists from it.
    pub async fn head(&self) -> Result<i64> {
        self.store
            .head(Domain::Post)
            .await
            .map_err(|e| PostCommandError::Unavailable(e.to_string()))
    }

    /// Creates a post; returns its id.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        author: Uuid,
        content: String,
        media_urls: Vec<String>,
    ) -> Result<(Uuid, Done)> {
        let content = validate_text("content", content, CONTENT_MAX)?;
        let media_urls = validate_media(media_urls)?;
        let mentions = self.mentions(author, &content).await?;
        let post_id = Uuid::now_v7();
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::Create {
                    post_id,
                    author_id: author,
                    content: content.clone(),
                    media_urls: media_urls.clone(),
                    mentions: mentions.clone(),
                    now: Utc::now(),
                })
            })
            .await?;
        // `aggregate_id`: a retried create (same Idempotency-Key) answers its first post.
        Ok((e.aggregate_id, e.done()))
    }

    /// Edits a post (author only): absent fields keep their value; mentions are recomputed
    /// from the new content.
    pub async fn edit(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
        content: Option<String>,
        media_urls: Option<Vec<String>>,
    ) -> Result<(PostState, Done)> {
        let content = content
            .map(|c| validate_text("content", c, CONTENT_MAX))
            .transpose()?;
        let media_urls = media_urls.map(validate_media).transpose()?;
        let mentions = match &content {
            Some(c) => Some(self.mentions(actor, c).await?),
            None => None,
        };
        let e = self
            .posts
            .execute(post_id, ctx, |state| {
                Ok(PostCommand::Edit {
                    actor,
                    content: content.clone().unwrap_or_else(|| state.content.clone()),
                    media_urls: media_urls
                        .clone()
                        .unwrap_or_else(|| state.media_urls.clone()),
                    mentions: mentions.clone().unwrap_or_else(|| state.mentions.clone()),
                    now: Utc::now(),
                })
            })
            .await?;
        let done = e.done();
        Ok((e.state, done))
    }

    /// Soft-deletes a post (author only); deleting again changes nothing.
    pub async fn delete(&self, ctx: &CommandContext, actor: Uuid, post_id: Uuid) -> Result<Done> {
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::Delete {
                    actor,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// Hides a post (deactivation policy); hiding again changes nothing.
    pub async fn hide(
        &self,
        ctx: &CommandContext,
        post_id: Uuid,
        reason: HideReason,
    ) -> Result<Done> {
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::Hide {
                    reason,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// Comments on a visible post; returns the comment's id.
    pub async fn add_comment(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
        content: String,
    ) -> Result<(Uuid, Done)> {
        let content = validate_text("content", content, COMMENT_MAX)?;
        self.refuse_if_blocked(actor, post_id).await?;
        let mentions = self.mentions(actor, &content).await?;
        let comment_id = Uuid::now_v7();
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::AddComment {
                    comment_id,
                    author_id: actor,
                    content: content.clone(),
                    mentions: mentions.clone(),
                    now: Utc::now(),
                })
            })
            .await?;
        let comment_id = e
            .events
            .iter()
            .find_map(|ev| match ev {
                PostEvent::CommentAdded(c) => Some(c.comment_id),
                _ => None,
            })
            .unwrap_or(comment_id);
        Ok((comment_id, e.done()))
    }

    /// Deletes a comment (its author or the post's author); deleting again changes nothing.
    pub async fn delete_comment(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
        comment_id: Uuid,
    ) -> Result<Done> {
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::DeleteComment {
                    comment_id,
                    actor,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// Shares (reposts) a visible post; returns the share's id.
    pub async fn share(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
    ) -> Result<(Uuid, Done)> {
        self.refuse_if_blocked(actor, post_id).await?;
        let share_id = Uuid::now_v7();
        let e = self
            .posts
            .execute(post_id, ctx, |_| {
                Ok(PostCommand::Share {
                    share_id,
                    user_id: actor,
                    now: Utc::now(),
                })
            })
            .await?;
        let share_id = e
            .events
            .iter()
            .find_map(|ev| match ev {
                PostEvent::Shared(s) => Some(s.share_id),
                _ => None,
            })
            .unwrap_or(share_id);
        Ok((share_id, e.done()))
    }

    /// The post's facts as its aggregate knows them (`None` if it does not exist).
    async fn facts(&self, post_id: Uuid) -> Result<Option<PostFacts>> {
        Ok(self.posts.load(post_id).await?.state.facts())
    }

    pub async fn like(&self, ctx: &CommandContext, actor: Uuid, post_id: Uuid) -> Result<Done> {
        let post = self.facts(post_id).await?;
        if let Some(p) = &post {
            self.refuse_if_blocked_by(actor, p.author_id).await?;
        }
        let e = self
            .likes
            .execute(like_id(post_id, actor), ctx, |_| {
                Ok(LikeCommand::Like {
                    post,
                    user_id: actor,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    pub async fn unlike(&self, ctx: &CommandContext, actor: Uuid, post_id: Uuid) -> Result<Done> {
        let post = self.facts(post_id).await?;
        let e = self
            .likes
            .execute(like_id(post_id, actor), ctx, |_| {
                Ok(LikeCommand::Unlike {
                    post,
                    user_id: actor,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// Bookmarks a visible post into `collection` (`None` = the default list).
    pub async fn bookmark(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
        collection: Option<String>,
    ) -> Result<Done> {
        let collection = collection.map(validate_collection).transpose()?;
        let post = self.facts(post_id).await?;
        let e = self
            .bookmarks
            .execute(bookmark_id(actor, post_id), ctx, |_| {
                Ok(BookmarkCommand::Bookmark {
                    post,
                    user_id: actor,
                    collection: collection.clone(),
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    pub async fn unbookmark(
        &self,
        ctx: &CommandContext,
        actor: Uuid,
        post_id: Uuid,
    ) -> Result<Done> {
        let post = self.facts(post_id).await?;
        let e = self
            .bookmarks
            .execute(bookmark_id(actor, post_id), ctx, |_| {
                Ok(BookmarkCommand::Unbookmark {
                    post,
                    user_id: actor,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// The current state of a post (for handlers and analysts).
    pub async fn state(&self, post_id: Uuid) -> Result<PostState> {
        Ok(self.posts.load(post_id).await?.state)
    }

    /// The active users `text` (written by `author`) mentions, in order of first mention.
    /// A user with whom a block is in effect is not mentioned (no link, no notification): the
    /// name stays plain text, as an unknown name does.
    async fn mentions(&self, author: Uuid, text: &str) -> Result<Vec<Uuid>> {
        let names = mentioned_usernames(text);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.users.ids_by_usernames(&names).await?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for id in names.iter().filter_map(|n| ids.get(n).copied()) {
            if seen.insert(id) && (id == author || !self.graph.block_between(author, id).await?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Refuses (`Blocked`) when a block is in effect between `actor` and the author of
    /// `post_id`; an unknown post is left to the aggregate to refuse.
    async fn refuse_if_blocked(&self, actor: Uuid, post_id: Uuid) -> Result<()> {
        match self.facts(post_id).await? {
            Some(p) => self.refuse_if_blocked_by(actor, p.author_id).await,
            None => Ok(()),
        }
    }

    async fn refuse_if_blocked_by(&self, actor: Uuid, author: Uuid) -> Result<()> {
        if actor != author && self.graph.block_between(actor, author).await? {
            return Err(PostCommandError::Refused(PostError::Blocked));
        }
        Ok(())
    }
}

/// `@username` tokens of `text`, lower-cased, deduplicated, in order, at most
/// [`MENTIONS_MAX`]. A token is `@` not preceded by a word character (so e-mail addresses do
/// not count), followed by a maximal run of `[A-Za-z0-9_]` of a valid username's length.
pub fn mentioned_usernames(text: &str) -> Vec<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = text.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !is_word(chars[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && is_word(chars[end]) {
                end += 1;
            }
            let len = end - start;
            if (USERNAME_MIN..=USERNAME_MAX).contains(&len) {
                let name: String = chars[start..end].iter().collect::<String>().to_lowercase();
                if !names.contains(&name) {
                    names.push(name);
                    if names.len() == MENTIONS_MAX {
                        break;
                    }
                }
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    names
}

fn invalid(field: &'static str, message: impl Into<String>) -> PostCommandError {
    PostCommandError::Invalid {
        field,
        message: message.into(),
    }
}

/// Trimmed text of 1..=`max` characters, without control characters other than line breaks
/// and tabs.
fn validate_text(field: &'static str, value: String, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    // As sent: the OpenAPI document's `maxLength` counts the white space the trim removes.
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if v.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

fn validate_media(urls: Vec<String>) -> Result<Vec<String>> {
    if urls.len() > MEDIA_MAX {
        return Err(invalid(
            "media_urls",
            format!("at most {MEDIA_MAX} media URLs"),
        ));
    }
    urls.into_iter()
        .map(|u| {
            if u.chars().count() > URL_MAX {
                return Err(invalid(
                    "media_urls",
                    format!("each URL must be at most {URL_MAX} characters"),
                ));
            }
            let u = u.trim().to_owned();
            // No credentials: the URL is shown to everyone who reads the post.
            let ok = crate::user::valid_url(&u);
            if !ok {
                return Err(invalid("media_urls", "each must be an http(s) URL"));
            }
            Ok(u)
        })
        .collect()
}

/// A collection name: at most [`COLLECTION_MAX`] characters as sent, then trimmed, not blank,
/// without control characters. Also checks the bookmark list's `collection` filter.
pub fn validate_collection(name: String) -> Result<String> {
    let v = name.trim();
    if v.is_empty() || name.chars().count() > COLLECTION_MAX {
        return Err(invalid(
            "collection",
            format!("must be 1 to {COLLECTION_MAX} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid("collection", "must not contain control characters"));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use nova_infra::testing::TestDb;

    use super::*;
    use crate::facts::fake::{Blocks, Directory};

    /// A block (either way) between a user and a post's author refuses their comments, likes
    /// and shares (422 `blocked` at the edge) and drops their mentions of each other; the
    /// author's own actions, and everyone else's, pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_block_refuses_comments_likes_shares_and_mentions() {
        let t = TestDb::sqlite();
        let db = t.open().await;
        let directory = Arc::new(Directory::default());
        let blocks = Arc::new(Blocks::default());
        let posts = PostCommands::new(
            CommandStore::new(db.store.clone()),
            directory.clone(),
            blocks.clone(),
        );
        let ctx = CommandContext::new(None, None);
        let (author, blocked, friend) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        directory.add("author", author);
        directory.add("blocked", blocked);
        directory.add("friend", friend);
        let (post, _) = posts
            .create(&ctx, author, "hello".into(), vec![])
            .await
            .unwrap();
        blocks.block(author, blocked);
        let is_blocked = |r: std::result::Result<_, PostCommandError>| {
            matches!(r, Err(PostCommandError::Refused(PostError::Blocked)))
        };
        assert!(is_blocked(
            posts
                .add_comment(&ctx, blocked, post, "hi".into())
                .await
                .map(drop)
        ));
        assert!(is_blocked(posts.like(&ctx, blocked, post).await.map(drop)));
        assert!(is_blocked(posts.share(&ctx, blocked, post).await.map(drop)));
        // Nothing was appended for them.
        let state = posts.state(post).await.unwrap();
        assert_eq!((state.comment_count, state.shares.len()), (0, 0));
        // Mentions across the block resolve to nothing, either way.
        let (theirs, _) = posts
            .create(&ctx, blocked, "@author @friend".into(), vec![])
            .await
            .unwrap();
        assert_eq!(posts.state(theirs).await.unwrap().mentions, vec![friend]);
        let (own, _) = posts
            .create(&ctx, author, "@blocked @friend @author".into(), vec![])
            .await
            .unwrap();
        assert_eq!(
            posts.state(own).await.unwrap().mentions,
            vec![friend, author]
        );
        // Others, and the author, are not affected.
        posts
            .add_comment(&ctx, friend, post, "hi".into())
            .await
            .unwrap();
        posts.like(&ctx, friend, post).await.unwrap();
        posts
            .add_comment(&ctx, author, post, "mine".into())
            .await
            .unwrap();
        // A block source that cannot answer is unavailability, not a refusal.
        *blocks.down.lock().unwrap() = true;
        let r = posts.like(&ctx, blocked, post).await;
        assert!(matches!(r, Err(PostCommandError::Unavailable(_))), "{r:?}");
        db.close().await;
    }

    /// Mentions resolve through the user directory, which lags the user domain: a name it does
    /// not list (yet) resolves to nothing and stays plain text; after it catches up, an edit
    /// resolves it. A directory that cannot answer is store trouble, not "no mentions".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mention_of_an_unknown_name_resolves_to_nothing() {
        let t = TestDb::sqlite();
        let db = t.open().await;
        let directory = Arc::new(Directory::default());
        let posts = PostCommands::new(
            CommandStore::new(db.store.clone()),
            directory.clone(),
            Arc::new(Blocks::default()),
        );
        let ctx = CommandContext::new(None, None);
        let (author, alice, carol) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        directory.add("alice", alice);

        let text = "hi @Carol and @alice";
        let (post_id, _) = posts
            .create(&ctx, author, text.into(), vec![])
            .await
            .unwrap();
        assert_eq!(posts.state(post_id).await.unwrap().mentions, vec![alice]);

        directory.add("carol", carol);
        let (state, _) = posts
            .edit(&ctx, author, post_id, Some(text.into()), None)
            .await
            .unwrap();
        assert_eq!(state.mentions, vec![carol, alice]);

        *directory.down.lock().unwrap() = true;
        let refused = posts.create(&ctx, author, "@alice".into(), vec![]).await;
        assert!(
            matches!(refused, Err(PostCommandError::Unavailable(_))),
            "{refused:?}"
        );
        // Text without mentions asks nothing.
        posts
            .create(&ctx, author, "no names".into(), vec![])
            .await
            .unwrap();
        db.close().await;
    }

    #[test]
    fn finds_mentions() {
        assert_eq!(
            mentioned_usernames("hi @Alice and @bob_2, mail me@example.com, @al @alice again"),
            vec!["alice", "bob_2"]
        );
        assert_eq!(mentioned_usernames("@abc's (@def)"), vec!["abc", "def"]);
        let long = format!("@{}", "a".repeat(33));
        assert!(mentioned_usernames(&long).is_empty());
        let many: String = (0..30).map(|i| format!("@user{i:02} ")).collect();
        assert_eq!(mentioned_usernames(&many).len(), MENTIONS_MAX);
    }

    #[test]
    fn validates_text_and_urls() {
        assert!(validate_text("content", "  ".into(), 10).is_err());
        assert!(validate_text("content", "ééé".into(), 3).is_ok());
        assert!(validate_text("content", "éééé".into(), 3).is_err());
        assert!(validate_text("content", "a\u{0}".into(), 3).is_err());
        assert_eq!(validate_text("c", " a\nb ".into(), 5).unwrap(), "a\nb");
        assert!(validate_media(vec!["https://x.io/a.png".into()]).is_ok());
        for bad in ["ftp://x.io/a", "garbage", "https://u:p@x.io/", "http://"] {
            assert!(validate_media(vec![bad.into()]).is_err(), "{bad}");
        }
        assert!(validate_media(vec!["https://x.io/".into(); 5]).is_err());
        let long = format!("https://x.io/{}", "a".repeat(URL_MAX));
        assert!(validate_media(vec![long]).is_err());
        assert!(validate_collection("".into()).is_err());
        assert!(validate_collection("x".repeat(65)).is_err());
        assert!(validate_collection("art".into()).is_ok());
    }
}
