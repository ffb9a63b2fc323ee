//! Tests of the `post` domain: given/when/then examples for every rule, then property tests
//! that drive random command sequences through `handle_command` + `apply_event`.

use chrono::Duration;
use proptest::prelude::*;

use super::*;
use crate::given::given;

const POST: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a1);
const AUTHOR: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const OTHER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const THIRD: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_717_200_000, 0).expect("valid timestamp")
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(minutes)
}

fn cid(n: u128) -> Uuid {
    Uuid::from_u128(0xc0_0000_0000_0000_0000_0000_0000_0000 + n)
}

fn created() -> PostEvent {
    PostEvent::Created(PostCreated {
        post_id: POST,
        author_id: AUTHOR,
        content: "hello @bob".into(),
        media_urls: vec!["https://example.com/a.png".into()],
        mentions: vec![OTHER],
        created_at: t0(),
    })
}

fn create_cmd() -> PostCommand {
    PostCommand::Create {
        post_id: POST,
        author_id: AUTHOR,
        content: "hello @bob".into(),
        media_urls: vec!["https://example.com/a.png".into()],
        mentions: vec![OTHER],
        now: t0(),
    }
}

fn edit_cmd(actor: Uuid, content: &str, now: DateTime<Utc>) -> PostCommand {
    PostCommand::Edit {
        actor,
        content: content.into(),
        media_urls: vec![],
        mentions: vec![],
        now,
    }
}

fn deleted(now: DateTime<Utc>) -> PostEvent {
    PostEvent::Deleted(PostDeleted {
        author_id: AUTHOR,
        deleted_at: now,
    })
}

fn hidden(now: DateTime<Utc>) -> PostEvent {
    PostEvent::Hidden(PostHidden {
        author_id: AUTHOR,
        reason: HideReason::AuthorDeactivated,
        hidden_at: now,
    })
}

fn comment_added(comment: Uuid, by: Uuid, now: DateTime<Utc>) -> PostEvent {
    PostEvent::CommentAdded(CommentAdded {
        comment_id: comment,
        post_id: POST,
        author_id: by,
        post_author_id: AUTHOR,
        content: "nice".into(),
        mentions: vec![],
        commented_at: now,
    })
}

fn add_comment(comment: Uuid, by: Uuid, now: DateTime<Utc>) -> PostCommand {
    PostCommand::AddComment {
        comment_id: comment,
        author_id: by,
        content: "nice".into(),
        mentions: vec![],
        now,
    }
}

fn comment_deleted(comment: Uuid, by: Uuid, now: DateTime<Utc>) -> PostEvent {
    PostEvent::CommentDeleted(CommentDeleted {
        comment_id: comment,
        post_id: POST,
        deleted_by: by,
        deleted_at: now,
    })
}

fn fold(events: impl IntoIterator<Item = PostEvent>) -> PostState {
    events
        .into_iter()
        .fold(PostState::default(), Post::apply_event)
}

fn facts(visible: bool) -> Option<PostFacts> {
    Some(PostFacts {
        post_id: POST,
        author_id: AUTHOR,
        visible,
    })
}

fn liked(now: DateTime<Utc>) -> PostEvent {
    PostEvent::Liked(Liked {
        post_id: POST,
        user_id: OTHER,
        post_author_id: AUTHOR,
        liked_at: now,
    })
}

fn unliked(now: DateTime<Utc>) -> PostEvent {
    PostEvent::Unliked(Unliked {
        post_id: POST,
        user_id: OTHER,
        unliked_at: now,
    })
}

fn bookmarked(collection: Option<&str>, now: DateTime<Utc>) -> PostEvent {
    PostEvent::Bookmarked(Bookmarked {
        post_id: POST,
        user_id: OTHER,
        collection: collection.map(str::to_owned),
        bookmarked_at: now,
    })
}

fn bookmark_cmd(collection: Option<&str>, visible: bool, now: DateTime<Utc>) -> BookmarkCommand {
    BookmarkCommand::Bookmark {
        post: facts(visible),
        user_id: OTHER,
        collection: collection.map(str::to_owned),
        now,
    }
}

// ---------------------------------------------------------------------------------------------
// Post: creation, edits, deletion, hiding.
// ---------------------------------------------------------------------------------------------

#[test]
fn create_emits_created() {
    given::<Post>([]).when(create_cmd()).then(vec![created()]);
    let state = fold([created()]);
    assert!(state.exists() && state.visible());
    assert_eq!(state.author_id, AUTHOR);
    assert_eq!(state.mentions, vec![OTHER]);
    assert_eq!(
        state.facts(),
        Some(PostFacts {
            post_id: POST,
            author_id: AUTHOR,
            visible: true
        })
    );
}

#[test]
fn create_twice_is_refused() {
    given::<Post>([created()])
        .when(create_cmd())
        .then_err(PostError::AlreadyExists);
}

#[test]
fn every_command_on_a_missing_post_is_not_found() {
    for command in [
        edit_cmd(AUTHOR, "x", at(1)),
        PostCommand::Delete {
            actor: AUTHOR,
            now: at(1),
        },
        PostCommand::Hide {
            reason: HideReason::AuthorDeactivated,
            now: at(1),
        },
        add_comment(cid(1), OTHER, at(1)),
        PostCommand::DeleteComment {
            comment_id: cid(1),
            actor: AUTHOR,
            now: at(1),
        },
        PostCommand::Share {
            share_id: cid(9),
            user_id: OTHER,
            now: at(1),
        },
    ] {
        given::<Post>([])
            .when(command)
            .then_err(PostError::NotFound);
    }
    assert_eq!(PostState::default().facts(), None);
}

#[test]
fn author_edits_and_the_history_is_the_stream() {
    let edited = PostEvent::Edited(PostEdited {
        content: "second".into(),
        media_urls: vec![],
        mentions: vec![],
        edited_at: at(1),
    });
    given::<Post>([created()])
        .when(edit_cmd(AUTHOR, "second", at(1)))
        .then(vec![edited.clone()]);
    let state = fold([created(), edited]);
    assert_eq!(state.content, "second");
    assert!(state.media_urls.is_empty() && state.mentions.is_empty());
    assert_eq!(state.edited_at, Some(at(1)));
    assert_eq!(state.created_at, Some(t0()));
}

#[test]
fn an_edit_that_changes_nothing_appends_nothing() {
    given::<Post>([created()])
        .when(PostCommand::Edit {
            actor: AUTHOR,
            content: "hello @bob".into(),
            media_urls: vec!["https://example.com/a.png".into()],
            mentions: vec![OTHER],
            now: at(1),
        })
        .then(vec![]);
}

#[test]
fn only_the_author_edits() {
    given::<Post>([created()])
        .when(edit_cmd(OTHER, "mine now", at(1)))
        .then_err(PostError::Forbidden);
}

#[test]
fn a_deleted_or_hidden_post_cannot_be_edited() {
    for gone in [deleted(at(1)), hidden(at(1))] {
        given::<Post>([created(), gone])
            .when(edit_cmd(AUTHOR, "again", at(2)))
            .then_err(PostError::Deleted);
    }
}

#[test]
fn author_deletes_once() {
    given::<Post>([created()])
        .when(PostCommand::Delete {
            actor: AUTHOR,
            now: at(1),
        })
        .then(vec![deleted(at(1))]);
    given::<Post>([created(), deleted(at(1))])
        .when(PostCommand::Delete {
            actor: AUTHOR,
            now: at(2),
        })
        .then(vec![]);
    let state = fold([created(), deleted(at(1))]);
    assert!(state.exists() && state.deleted && !state.visible());
}

#[test]
fn only_the_author_deletes() {
    given::<Post>([created()])
        .when(PostCommand::Delete {
            actor: OTHER,
            now: at(1),
        })
        .then_err(PostError::Forbidden);
}

#[test]
fn hide_is_idempotent_and_skips_deleted_posts() {
    let hide = || PostCommand::Hide {
        reason: HideReason::AuthorDeactivated,
        now: at(2),
    };
    given::<Post>([created()])
        .when(hide())
        .then(vec![hidden(at(2))]);
    given::<Post>([created(), hidden(at(1))])
        .when(hide())
        .then(vec![]);
    given::<Post>([created(), deleted(at(1))])
        .when(hide())
        .then(vec![]);
    let state = fold([created(), hidden(at(1))]);
    assert!(state.hidden && !state.visible());
    assert_eq!(state.facts().map(|f| f.visible), Some(false));
}

// ---------------------------------------------------------------------------------------------
// Comments and shares.
// ---------------------------------------------------------------------------------------------

#[test]
fn anyone_comments_on_a_visible_post() {
    given::<Post>([created()])
        .when(add_comment(cid(1), OTHER, at(1)))
        .then(vec![comment_added(cid(1), OTHER, at(1))]);
    let state = fold([created(), comment_added(cid(1), OTHER, at(1))]);
    assert_eq!(state.comment_count, 1);
}

#[test]
fn a_retried_comment_with_the_same_id_appends_nothing() {
    given::<Post>([created(), comment_added(cid(1), OTHER, at(1))])
        .when(add_comment(cid(1), OTHER, at(2)))
        .then(vec![]);
}

#[test]
fn no_comments_on_a_deleted_or_hidden_post() {
    for gone in [deleted(at(1)), hidden(at(1))] {
        given::<Post>([created(), gone])
            .when(add_comment(cid(1), OTHER, at(2)))
            .then_err(PostError::Deleted);
    }
}

#[test]
fn comment_author_or_post_author_deletes_a_comment() {
    let history = [created(), comment_added(cid(1), OTHER, at(1))];
    for actor in [OTHER, AUTHOR] {
        given::<Post>(history.clone())
            .when(PostCommand::DeleteComment {
                comment_id: cid(1),
                actor,
                now: at(2),
            })
            .then(vec![comment_deleted(cid(1), actor, at(2))]);
    }
    given::<Post>(history.clone())
        .when(PostCommand::DeleteComment {
            comment_id: cid(1),
            actor: THIRD,
            now: at(2),
        })
        .then_err(PostError::Forbidden);
    let state = fold(
        history
            .into_iter()
            .chain([comment_deleted(cid(1), OTHER, at(2))]),
    );
    assert_eq!(state.comment_count, 0);
}

#[test]
fn deleting_a_comment_twice_appends_nothing() {
    given::<Post>([
        created(),
        comment_added(cid(1), OTHER, at(1)),
        comment_deleted(cid(1), OTHER, at(2)),
    ])
    .when(PostCommand::DeleteComment {
        comment_id: cid(1),
        actor: OTHER,
        now: at(3),
    })
    .then(vec![]);
}

#[test]
fn deleting_an_unknown_comment_is_not_found() {
    given::<Post>([created()])
        .when(PostCommand::DeleteComment {
            comment_id: cid(7),
            actor: AUTHOR,
            now: at(1),
        })
        .then_err(PostError::CommentNotFound);
}

#[test]
fn shares_count_and_carry_the_post_author() {
    let shared = PostEvent::Shared(PostShared {
        share_id: cid(5),
        post_id: POST,
        user_id: OTHER,
        post_author_id: AUTHOR,
        shared_at: at(1),
    });
    let share = || PostCommand::Share {
        share_id: cid(5),
        user_id: OTHER,
        now: at(1),
    };
    given::<Post>([created()])
        .when(share())
        .then(vec![shared.clone()]);
    given::<Post>([created(), shared.clone()])
        .when(share())
        .then(vec![]);
    assert_eq!(fold([created(), shared]).share_count(), 1);
    given::<Post>([created(), deleted(at(1))])
        .when(share())
        .then_err(PostError::Deleted);
}

// ---------------------------------------------------------------------------------------------
// Likes.
// ---------------------------------------------------------------------------------------------

#[test]
fn like_then_like_again_is_one_like() {
    let like = |now| LikeCommand::Like {
        post: facts(true),
        user_id: OTHER,
        now,
    };
    given::<Like>([]).when(like(at(1))).then(vec![liked(at(1))]);
    given::<Like>([liked(at(1))]).when(like(at(2))).then(vec![]);
}

#[test]
fn unlike_is_idempotent() {
    let unlike = |now| LikeCommand::Unlike {
        post: facts(true),
        user_id: OTHER,
        now,
    };
    given::<Like>([liked(at(1))])
        .when(unlike(at(2)))
        .then(vec![unliked(at(2))]);
    given::<Like>([liked(at(1)), unliked(at(2))])
        .when(unlike(at(3)))
        .then(vec![]);
    given::<Like>([]).when(unlike(at(3))).then(vec![]);
}

#[test]
fn like_needs_a_visible_post() {
    given::<Like>([])
        .when(LikeCommand::Like {
            post: None,
            user_id: OTHER,
            now: at(1),
        })
        .then_err(PostError::NotFound);
    given::<Like>([])
        .when(LikeCommand::Like {
            post: facts(false),
            user_id: OTHER,
            now: at(1),
        })
        .then_err(PostError::Deleted);
    given::<Like>([])
        .when(LikeCommand::Unlike {
            post: None,
            user_id: OTHER,
            now: at(1),
        })
        .then_err(PostError::NotFound);
    // Taking one's like back from a deleted post is fine.
    given::<Like>([liked(at(1))])
        .when(LikeCommand::Unlike {
            post: facts(false),
            user_id: OTHER,
            now: at(2),
        })
        .then(vec![unliked(at(2))]);
}

// ---------------------------------------------------------------------------------------------
// Bookmarks.
// ---------------------------------------------------------------------------------------------

#[test]
fn bookmark_into_collections() {
    given::<Bookmark>([])
        .when(bookmark_cmd(None, true, at(1)))
        .then(vec![bookmarked(None, at(1))]);
    // Same collection again: nothing.
    given::<Bookmark>([bookmarked(None, at(1))])
        .when(bookmark_cmd(None, true, at(2)))
        .then(vec![]);
    given::<Bookmark>([bookmarked(Some("art"), at(1))])
        .when(bookmark_cmd(Some("art"), true, at(2)))
        .then(vec![]);
    // Another collection: moved.
    given::<Bookmark>([bookmarked(None, at(1))])
        .when(bookmark_cmd(Some("art"), true, at(2)))
        .then(vec![bookmarked(Some("art"), at(2))]);
    let state = [bookmarked(None, at(1)), bookmarked(Some("art"), at(2))]
        .into_iter()
        .fold(BookmarkState::default(), Bookmark::apply_event);
    assert!(state.bookmarked);
    assert_eq!(state.collection.as_deref(), Some("art"));
}

#[test]
fn bookmark_needs_a_visible_post() {
    given::<Bookmark>([])
        .when(BookmarkCommand::Bookmark {
            post: None,
            user_id: OTHER,
            collection: None,
            now: at(1),
        })
        .then_err(PostError::NotFound);
    given::<Bookmark>([])
        .when(bookmark_cmd(None, false, at(1)))
        .then_err(PostError::Deleted);
}

#[test]
fn unbookmark_is_idempotent() {
    let unbookmark = |now| BookmarkCommand::Unbookmark {
        post: facts(true),
        user_id: OTHER,
        now,
    };
    let un = PostEvent::Unbookmarked(Unbookmarked {
        post_id: POST,
        user_id: OTHER,
        unbookmarked_at: at(2),
    });
    given::<Bookmark>([bookmarked(Some("art"), at(1))])
        .when(unbookmark(at(2)))
        .then(vec![un.clone()]);
    given::<Bookmark>([bookmarked(Some("art"), at(1)), un.clone()])
        .when(unbookmark(at(3)))
        .then(vec![]);
    given::<Bookmark>([]).when(unbookmark(at(3))).then(vec![]);
    let state = [bookmarked(Some("art"), at(1)), un]
        .into_iter()
        .fold(BookmarkState::default(), Bookmark::apply_event);
    assert_eq!(state, BookmarkState::default());
}

#[test]
fn aggregates_ignore_each_others_events() {
    let post_state = fold([created(), liked(at(1)), bookmarked(None, at(1))]);
    assert_eq!(post_state, fold([created()]));
    let like_state = [created(), bookmarked(None, at(1))]
        .into_iter()
        .fold(LikeState::default(), Like::apply_event);
    assert_eq!(like_state, LikeState::default());
}

// ---------------------------------------------------------------------------------------------
// Properties over random command sequences.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Edit(u8, bool),
    Delete(u8),
    Hide,
    Comment(u8, u8),
    DeleteComment(u8, u8),
    Share(u8),
}

fn user(n: u8) -> Uuid {
    [AUTHOR, OTHER, THIRD][usize::from(n % 3)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), any::<bool>()).prop_map(|(u, b)| Op::Edit(u, b)),
        any::<u8>().prop_map(Op::Delete),
        Just(Op::Hide),
        (any::<u8>(), 0u8..6).prop_map(|(u, c)| Op::Comment(u, c)),
        (any::<u8>(), 0u8..6).prop_map(|(u, c)| Op::DeleteComment(u, c)),
        (0u8..4).prop_map(Op::Share),
    ]
}

proptest! {
    #[test]
    fn post_counters_never_go_negative_and_state_is_the_fold(ops in prop::collection::vec(op(), 0..40)) {
        let mut history = vec![created()];
        let mut state = fold(history.clone());
        for (i, op) in ops.into_iter().enumerate() {
            let now = at(i as i64 + 1);
            let command = match op {
                Op::Edit(u, b) => edit_cmd(user(u), if b { "a" } else { "b" }, now),
                Op::Delete(u) => PostCommand::Delete { actor: user(u), now },
                Op::Hide => PostCommand::Hide { reason: HideReason::AuthorDeactivated, now },
                Op::Comment(u, c) => add_comment(cid(c.into()), user(u), now),
                Op::DeleteComment(u, c) => PostCommand::DeleteComment {
                    comment_id: cid(c.into()), actor: user(u), now,
                },
                Op::Share(s) => PostCommand::Share { share_id: cid(100 + u128::from(s)), user_id: OTHER, now },
            };
            if let Ok(events) = Post::handle_command(&state, command) {
                for e in events {
                    history.push(e.clone());
                    state = Post::apply_event(state, e);
                }
            }
            prop_assert!(state.comment_count >= 0);
            prop_assert!(state.share_count() >= 0);
            let live = state.comments.values().filter(|c| !c.deleted).count() as i64;
            prop_assert_eq!(state.comment_count, live);
            prop_assert_eq!(&state, &fold(history.clone()));
        }
    }

    #[test]
    fn likes_alternate_and_state_is_the_fold(ops in prop::collection::vec(any::<bool>(), 0..40)) {
        let mut state = LikeState::default();
        let mut history = Vec::new();
        for (i, like) in ops.into_iter().enumerate() {
            let now = at(i as i64);
            let command = if like {
                LikeCommand::Like { post: facts(true), user_id: OTHER, now }
            } else {
                LikeCommand::Unlike { post: facts(true), user_id: OTHER, now }
            };
            let events = Like::handle_command(&state, command).expect("visible post");
            prop_assert!(events.len() <= 1);
            for e in events {
                history.push(e.clone());
                state = Like::apply_event(state, e);
            }
            prop_assert_eq!(state.liked, like);
        }
        // Liked, Unliked, Liked, ...: the like count (likes minus unlikes) is 0 or 1.
        for (i, e) in history.iter().enumerate() {
            let expect_like = i % 2 == 0;
            prop_assert_eq!(matches!(e, PostEvent::Liked(_)), expect_like);
        }
        let folded = history.into_iter().fold(LikeState::default(), Like::apply_event);
        prop_assert_eq!(folded, state);
    }

    #[test]
    fn bookmarks_follow_the_last_command(ops in prop::collection::vec(prop::option::of(0u8..3), 0..40)) {
        let mut state = BookmarkState::default();
        let mut history = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let now = at(i as i64);
            let command = match op {
                Some(c) => bookmark_cmd([Some("a"), Some("b"), None][usize::from(c)], true, now),
                None => BookmarkCommand::Unbookmark { post: facts(true), user_id: OTHER, now },
            };
            let expected = match &command {
                BookmarkCommand::Bookmark { collection, .. } => (true, collection.clone()),
                BookmarkCommand::Unbookmark { .. } => (false, None),
            };
            for e in Bookmark::handle_command(&state, command).expect("visible post") {
                history.push(e.clone());
                state = Bookmark::apply_event(state, e);
            }
            prop_assert_eq!((state.bookmarked, state.collection.clone()), expected);
        }
        let folded = history.into_iter().fold(BookmarkState::default(), Bookmark::apply_event);
        prop_assert_eq!(folded, state);
    }
}
