//! The `notification` projection and its read-time visibility (queries), on both engines:
//! each kind and its recipient, no self-notification, the one-minute dedup window, blocks and
//! preferences deciding visibility by event time, mentions added by an edit, the read marker
//! and pagination — and the same answers for any interleaving of its three domains, and from a
//! rebuild.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use nova_event_schemas::follow::{
    relationship_id, Blocked, FollowEvent, Followed, Unblocked, UnfollowReason, Unfollowed,
};
use nova_event_schemas::post::{
    like_id, CommentAdded, Liked, PostCreated, PostEdited, PostEvent, PostShared, Unliked,
};
use nova_event_schemas::stream::{Started, StreamEvent, Trigger};
use nova_event_schemas::user::{
    Erased, NotificationKind, NotificationPreferencesChanged, NotificationsRead, UserEvent,
};
use nova_event_schemas::{Domain, DomainEvent, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::on_both_backends;
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use nova_infra::testing::TestDb;
use nova_projections::checkpoint::Caught;
use nova_projections::notification::{NotificationView, NAME};
use nova_projections::{
    catch_up, project_once, spawn_projectors, Checkpoints, EventSource, Projection, StoreTail,
};
use nova_queries::notification::{self as q, NotificationRow as NotificationItem};
use nova_queries::page::{PageRequest, MAX_LIMIT};
use nova_queries::Cursor;

/// One page of `user`'s list, flattened as the HTTP edge answers it.
#[derive(Debug)]
struct Listed {
    items: Vec<NotificationItem>,
    next_cursor: Option<String>,
    unread_count: i64,
}

async fn list(
    db: &Database,
    user: Uuid,
    limit: u32,
    after: Option<&Cursor>,
    unread_only: bool,
) -> Listed {
    let req = PageRequest {
        limit,
        after: after.cloned(),
    };
    let l = q::list(&db.any, user, &req, unread_only).await.unwrap();
    Listed {
        items: l.page.items,
        next_cursor: l.page.next_cursor,
        unread_count: l.unread_count,
    }
}
use rand::{Rng, SeedableRng};
use uuid::Uuid;

on_both_backends!(
    each_kind_reaches_its_recipient,
    nobody_is_notified_of_their_own_actions,
    repeats_within_a_minute_are_one_notification,
    blocks_hide_by_event_time_and_while_in_effect,
    preferences_hide_exactly_what_was_created_while_off,
    an_edit_notifies_only_newly_mentioned_users,
    read_marker_unread_only_and_pagination,
    any_domain_interleaving_gives_the_same_view,
    rebuild_equals_live,
    the_inline_and_the_general_visibility_rules_agree,
    the_kept_unread_count_is_the_count_of_unread_rows,
    the_upgrade_counts_the_rows_already_there,
);

/// Appends events with chosen times, tracking each aggregate's version.
struct History {
    store: EventStore,
    versions: Mutex<HashMap<Uuid, i64>>,
    base: DateTime<Utc>,
}

impl History {
    fn new(store: EventStore) -> History {
        History {
            store,
            versions: Mutex::default(),
            base: Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
        }
    }

    fn at(&self, secs: i64) -> DateTime<Utc> {
        self.base + Duration::seconds(secs)
    }

    async fn append<E: DomainEvent>(&self, id: Uuid, aggregate: &'static str, event: E) {
        let version = *self.versions.lock().unwrap().get(&id).unwrap_or(&0);
        self.store
            .append(
                vec![(id, aggregate, version, vec![event])],
                EventMetadata::default(),
            )
            .await
            .unwrap();
        self.versions.lock().unwrap().insert(id, version + 1);
    }

    async fn follow(&self, follower: Uuid, followee: Uuid, t: i64) {
        let e = FollowEvent::Followed(Followed {
            follower_id: follower,
            followee_id: followee,
            followed_at: self.at(t),
        });
        self.append(relationship_id(follower, followee), "relationship", e)
            .await;
    }

    async fn block(&self, blocker: Uuid, blocked: Uuid, t: i64) {
        let e = FollowEvent::Blocked(Blocked {
            blocker_id: blocker,
            blocked_id: blocked,
            blocked_at: self.at(t),
        });
        self.append(relationship_id(blocker, blocked), "relationship", e)
            .await;
    }

    async fn unblock(&self, blocker: Uuid, blocked: Uuid, t: i64) {
        let e = FollowEvent::Unblocked(Unblocked {
            blocker_id: blocker,
            blocked_id: blocked,
            unblocked_at: self.at(t),
        });
        self.append(relationship_id(blocker, blocked), "relationship", e)
            .await;
    }

    async fn prefs(&self, user: Uuid, disabled: &[NotificationKind], t: i64) {
        let e = UserEvent::NotificationPreferencesChanged(NotificationPreferencesChanged {
            disabled: disabled.to_vec(),
            changed_at: self.at(t),
        });
        self.append(user, "user", e).await;
    }

    async fn read(&self, user: Uuid, item: &NotificationItem, t: i64) {
        let e = UserEvent::NotificationsRead(NotificationsRead {
            up_to: item.notification_id,
            up_to_created_at: item.created_at.0,
            read_at: self.at(t),
        });
        self.append(user, "user", e).await;
    }

    async fn post(&self, author: Uuid, mentions: &[Uuid], t: i64) -> Uuid {
        let post_id = Uuid::now_v7();
        let e = PostEvent::Created(PostCreated {
            post_id,
            author_id: author,
            content: "hello".into(),
            media_urls: vec![],
            mentions: mentions.to_vec(),
            created_at: self.at(t),
        });
        self.append(post_id, "post", e).await;
        post_id
    }

    async fn edit(&self, post: Uuid, mentions: &[Uuid], t: i64) {
        let e = PostEvent::Edited(PostEdited {
            content: "edited".into(),
            media_urls: vec![],
            mentions: mentions.to_vec(),
            edited_at: self.at(t),
        });
        self.append(post, "post", e).await;
    }

    async fn like(&self, post: Uuid, author: Uuid, user: Uuid, t: i64) {
        let e = PostEvent::Liked(Liked {
            post_id: post,
            user_id: user,
            post_author_id: author,
            liked_at: self.at(t),
        });
        self.append(like_id(post, user), "like", e).await;
    }

    async fn unlike(&self, post: Uuid, user: Uuid, t: i64) {
        let e = PostEvent::Unliked(Unliked {
            post_id: post,
            user_id: user,
            unliked_at: self.at(t),
        });
        self.append(like_id(post, user), "like", e).await;
    }

    async fn comment(
        &self,
        post: Uuid,
        author: Uuid,
        commenter: Uuid,
        mentions: &[Uuid],
        t: i64,
    ) -> Uuid {
        let comment_id = Uuid::now_v7();
        let e = PostEvent::CommentAdded(CommentAdded {
            comment_id,
            post_id: post,
            author_id: commenter,
            post_author_id: author,
            content: "nice".into(),
            mentions: mentions.to_vec(),
            commented_at: self.at(t),
        });
        self.append(post, "post", e).await;
        comment_id
    }

    async fn share(&self, post: Uuid, author: Uuid, user: Uuid, t: i64) {
        let e = PostEvent::Shared(PostShared {
            share_id: Uuid::now_v7(),
            post_id: post,
            user_id: user,
            post_author_id: author,
            shared_at: self.at(t),
        });
        self.append(post, "post", e).await;
    }

    async fn unfollow(&self, follower: Uuid, followee: Uuid, t: i64) {
        let e = FollowEvent::Unfollowed(Unfollowed {
            follower_id: follower,
            followee_id: followee,
            reason: UnfollowReason::Unfollowed,
            unfollowed_at: self.at(t),
        });
        self.append(relationship_id(follower, followee), "relationship", e)
            .await;
    }

    async fn go_live(&self, broadcaster: Uuid, t: i64) {
        let stream_id = Uuid::now_v7();
        let e = StreamEvent::Started(Started {
            stream_id,
            broadcaster_id: broadcaster,
            title: "live".into(),
            trigger: Trigger::Broadcaster,
            started_at: self.at(t),
        });
        self.append(stream_id, "stream", e).await;
    }

    async fn erase(&self, user: Uuid, t: i64) {
        let e = UserEvent::Erased(Erased {
            user_id: user,
            erased_at: self.at(t),
        });
        self.append(user, "user", e).await;
    }
}

async fn setup(engine: Engine) -> (TestDb, Database, History) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let h = History::new(db.store.clone());
    (t, db, h)
}

fn users<const N: usize>() -> [Uuid; N] {
    std::array::from_fn(|_| Uuid::now_v7())
}

/// Projects everything appended so far (domain after domain).
async fn project(db: &Database) {
    catch_up(
        &NotificationView::default(),
        &db.store,
        &db.any,
        &Checkpoints::default(),
    )
    .await
    .unwrap();
}

async fn visible(db: &Database, user: Uuid) -> Vec<NotificationItem> {
    list(db, user, MAX_LIMIT, None, false).await.items
}

/// (kind, actor, post, comment) of each visible notification, newest first.
type Brief = (String, Uuid, Option<Uuid>, Option<Uuid>);

async fn brief(db: &Database, user: Uuid) -> Vec<Brief> {
    visible(db, user)
        .await
        .into_iter()
        .map(|n| {
            (
                n.kind,
                n.actor_id,
                n.post_id.map(Uuid::from),
                n.comment_id.map(Uuid::from),
            )
        })
        .collect()
}

fn b(kind: &str, actor: Uuid, post: Option<Uuid>, comment: Option<Uuid>) -> Brief {
    (kind.to_owned(), actor, post, comment)
}

fn sorted(mut v: Vec<Brief>) -> Vec<Brief> {
    v.sort();
    v
}

async fn each_kind_reaches_its_recipient(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a, bob, carol, dave, m] = users();
    let p = h.post(a, &[m], 0).await;
    h.follow(bob, a, 10).await;
    h.like(p, a, bob, 20).await;
    let c = h.comment(p, a, carol, &[m, a], 30).await;
    h.share(p, a, dave, 40).await;
    project(&db).await;

    let got = brief(&db, a).await;
    assert_eq!(got[0], b("share", dave, Some(p), None));
    // The comment and the mention in it share a time; their order is by id.
    assert_eq!(
        sorted(got[1..3].to_vec()),
        sorted(vec![
            b("comment", carol, Some(p), Some(c)),
            b("mention", carol, Some(p), Some(c)),
        ])
    );
    assert_eq!(got[3], b("like", bob, Some(p), None));
    assert_eq!(got[4], b("follow", bob, None, None));
    assert_eq!(got.len(), 5);

    assert_eq!(
        brief(&db, m).await,
        vec![
            b("mention", carol, Some(p), Some(c)),
            b("mention", a, Some(p), None),
        ]
    );
    for other in [bob, carol, dave] {
        assert!(visible(&db, other).await.is_empty());
    }
    // Times are the events' own.
    let items = visible(&db, a).await;
    assert_eq!(
        items[0].created_at.to_string(),
        "2026-01-01T12:00:40.000000Z"
    );
    assert_eq!(
        items[4].created_at.to_string(),
        "2026-01-01T12:00:10.000000Z"
    );
    assert!(items.iter().all(|n| !n.read.0));
    db.close().await;
}

async fn nobody_is_notified_of_their_own_actions(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a] = users();
    let p = h.post(a, &[a], 0).await;
    h.like(p, a, a, 10).await;
    h.comment(p, a, a, &[a], 20).await;
    h.share(p, a, a, 30).await;
    h.edit(p, &[a], 40).await;
    h.follow(a, a, 50).await;
    project(&db).await;
    assert!(visible(&db, a).await.is_empty());
    db.close().await;
}

async fn repeats_within_a_minute_are_one_notification(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a, bob, carol] = users();
    let p = h.post(a, &[], 0).await;
    // Like, unlike, like again within a minute: one.
    h.like(p, a, bob, 100).await;
    h.unlike(p, bob, 110).await;
    h.like(p, a, bob, 130).await;
    h.unlike(p, bob, 140).await;
    project(&db).await;
    assert_eq!(brief(&db, a).await, vec![b("like", bob, Some(p), None)]);
    // 61 s after the notification: a new one.
    h.like(p, a, bob, 161).await;
    // Another actor is another notification, even at the same time.
    h.like(p, a, carol, 161).await;
    // Follow, unfollow (ignored), follow within a minute: one.
    h.follow(carol, a, 200).await;
    h.follow(carol, a, 250).await;
    project(&db).await;
    let got = brief(&db, a).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], b("follow", carol, None, None));
    assert_eq!(
        got.iter().filter(|n| n.0 == "like" && n.1 == bob).count(),
        2
    );
    db.close().await;
}

async fn blocks_hide_by_event_time_and_while_in_effect(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a, bob, carol] = users();
    let p = h.post(a, &[], 0).await;
    h.like(p, a, bob, 10).await;
    project(&db).await;
    assert_eq!(brief(&db, a).await, vec![b("like", bob, Some(p), None)]);

    // The recipient blocks the actor: everything from bob is hidden while it lasts.
    h.block(a, bob, 20).await;
    let c = h.comment(p, a, bob, &[], 30).await;
    project(&db).await;
    assert!(brief(&db, a).await.is_empty());
    // Unblocked: what came before shows again, what came during stays hidden.
    h.unblock(a, bob, 40).await;
    h.share(p, a, bob, 50).await;
    project(&db).await;
    assert_eq!(
        brief(&db, a).await,
        vec![
            b("share", bob, Some(p), None),
            b("like", bob, Some(p), None),
        ]
    );
    assert!(!brief(&db, a)
        .await
        .contains(&b("comment", bob, Some(p), Some(c))));

    // The other direction: the actor blocks the recipient.
    h.like(p, a, carol, 60).await;
    h.block(carol, a, 70).await;
    h.follow(carol, a, 75).await;
    project(&db).await;
    assert!(brief(&db, a).await.iter().all(|n| n.1 != carol));
    h.unblock(carol, a, 80).await;
    project(&db).await;
    let got = brief(&db, a).await;
    assert!(got.contains(&b("like", carol, Some(p), None)));
    assert!(!got.contains(&b("follow", carol, None, None)));
    db.close().await;
}

async fn preferences_hide_exactly_what_was_created_while_off(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a, bob, carol, dave] = users();
    let p = h.post(a, &[], 0).await;
    h.like(p, a, bob, 10).await;
    h.prefs(a, &[NotificationKind::Like], 20).await;
    h.like(p, a, carol, 30).await;
    h.follow(dave, a, 35).await;
    project(&db).await;
    let prefs = q::preferences(&db.any, a).await.unwrap();
    assert!(!prefs[&NotificationKind::Like]);
    assert!(prefs[&NotificationKind::Follow]);
    assert_eq!(
        brief(&db, a).await,
        vec![b("follow", dave, None, None), b("like", bob, Some(p), None),]
    );
    h.prefs(a, &[], 40).await;
    h.like(p, a, dave, 50).await;
    project(&db).await;
    assert_eq!(
        brief(&db, a).await,
        vec![
            b("like", dave, Some(p), None),
            b("follow", dave, None, None),
            b("like", bob, Some(p), None),
        ]
    );
    assert!(q::preferences(&db.any, a)
        .await
        .unwrap()
        .values()
        .all(|on| *on));
    // Somebody else's setting changes nothing for a.
    h.prefs(bob, &NotificationKind::ALL, 60).await;
    project(&db).await;
    assert_eq!(brief(&db, a).await.len(), 3);
    db.close().await;
}

async fn an_edit_notifies_only_newly_mentioned_users(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a, x, y, z] = users();
    let p = h.post(a, &[x, x], 0).await;
    h.edit(p, &[x, y, a], 100).await;
    h.edit(p, &[x], 200).await;
    h.edit(p, &[y, z], 300).await;
    project(&db).await;
    assert_eq!(brief(&db, x).await, vec![b("mention", a, Some(p), None)]);
    assert_eq!(brief(&db, y).await, vec![b("mention", a, Some(p), None)]);
    assert_eq!(brief(&db, z).await, vec![b("mention", a, Some(p), None)]);
    assert_eq!(
        visible(&db, y).await[0].created_at.to_string(),
        "2026-01-01T12:01:40.000000Z"
    );
    assert!(visible(&db, a).await.is_empty());
    db.close().await;
}

async fn read_marker_unread_only_and_pagination(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let [a] = users();
    let actors: [Uuid; 7] = users();
    for (i, actor) in actors.iter().enumerate() {
        h.follow(*actor, a, i as i64 * 10).await;
    }
    project(&db).await;
    let all = visible(&db, a).await;
    assert_eq!(all.len(), 7);
    assert_eq!(q::unread_count(&db.any, a).await.unwrap(), 7);

    // Read up to the 3rd newest: it and everything older is read.
    h.read(a, &all[2], 100).await;
    project(&db).await;
    let page = list(&db, a, 100, None, false).await;
    assert_eq!(page.unread_count, 2);
    let read: Vec<bool> = page.items.iter().map(|n| n.read.0).collect();
    assert_eq!(read, vec![false, false, true, true, true, true, true]);
    let unread = list(&db, a, 100, None, true).await;
    assert_eq!(unread.items, page.items[..2].to_vec());
    assert_eq!(unread.next_cursor, None);

    // Pages of 3 walk the whole list once, in order.
    let mut walked = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = list(&db, a, 3, cursor.as_ref(), false).await;
        walked.extend(page.items.iter().map(|n| n.notification_id));
        match page.next_cursor {
            Some(c) => cursor = Some(Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    let expected: Vec<Uuid> = all.iter().map(|n| n.notification_id).collect();
    assert_eq!(walked, expected);
    assert!(Cursor::decode("nonsense").is_none());
    assert!(Cursor::decode("").is_none());
    db.close().await;
}

/// A source that hands out one event at a time, so domains can be interleaved event by event.
struct OneAtATime(StoreTail);

#[async_trait]
impl EventSource for OneAtATime {
    async fn next_batch(
        &self,
        domain: Domain,
        after: i64,
        _max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.next_batch(domain, after, 1).await
    }
    async fn wait_for_more(&self, _: Domain, _: i64) {}
}

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

async fn wipe(db: &Database) {
    for table in TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&db.any)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(NAME)
        .execute(&db.any)
        .await
        .unwrap();
}

/// Replays from scratch, whole domains in `order`.
async fn replay_in_order(db: &Database, order: &[Domain]) {
    wipe(db).await;
    let view = NotificationView::default();
    let source = StoreTail::new(db.store.clone());
    let checkpoints = Checkpoints::default();
    for &domain in order {
        while project_once(&view, domain, &source, &db.any, &checkpoints)
            .await
            .unwrap()
        {}
    }
}

/// Replays from scratch, one event at a time from a randomly chosen domain.
async fn replay_interleaved(db: &Database, seed: u64) {
    wipe(db).await;
    let view = NotificationView::default();
    let source = OneAtATime(StoreTail::new(db.store.clone()));
    let checkpoints = Checkpoints::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut open: Vec<Domain> = view.domains().to_vec();
    while !open.is_empty() {
        let i = rng.gen_range(0..open.len());
        if !project_once(&view, open[i], &source, &db.any, &checkpoints)
            .await
            .unwrap()
        {
            open.remove(i);
        }
    }
}

/// Every row of every table of the view (sorted), and every user's visible list and count.
async fn snapshot(db: &Database, who: &[Uuid]) -> String {
    let mut out = String::new();
    let dumps: [(&str, &str); 7] = [
        (
            "notification",
            "notification_id || '|' || recipient_id || '|' || kind || '|' || actor_id || '|' \
             || COALESCE(post_id, '-') || '|' || COALESCE(comment_id, '-') || '|' || created_at",
        ),
        ("notification_post", "post_id || '|' || author_id"),
        ("notification_mention", "post_id || '|' || user_id"),
        (
            "notification_preference",
            "user_id || '|' || kind || '|' || CAST(version AS TEXT) || '|' || changed_at \
             || '|' || CAST(disabled AS TEXT)",
        ),
        (
            "notification_block",
            "user_id || '|' || other_id || '|' || CAST(version AS TEXT) || '|' || blocker_id \
             || '|' || blocked_at || '|' || COALESCE(unblocked_at, '-')",
        ),
        (
            "notification_read",
            "user_id || '|' || up_to_created_at || '|' || up_to_id || '|' \
             || CAST(version AS TEXT)",
        ),
        (
            "notification_unread",
            "recipient_id || '|' || CAST(unread AS TEXT)",
        ),
    ];
    for (table, row) in dumps {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT {row} FROM {table} ORDER BY 1"))
            .fetch_all(&db.any)
            .await
            .unwrap();
        out.push_str(&format!("{table}: {rows:?}\n"));
    }
    for user in who {
        let page = list(db, *user, MAX_LIMIT, None, false).await;
        out.push_str(&format!("{user}: {page:?}\n"));
    }
    out
}

/// A history in which blocks, preferences and the read marker matter: users a..e.
async fn mixed_history(db: &Database, h: &History) -> Vec<Uuid> {
    let [a, bob, carol, dave, eve] = users();
    let p = h.post(a, &[carol], 0).await;
    h.like(p, a, bob, 10).await;
    h.comment(p, a, carol, &[dave, a], 20).await;
    h.prefs(a, &[NotificationKind::Like, NotificationKind::Share], 30)
        .await;
    h.like(p, a, dave, 40).await;
    h.share(p, a, eve, 45).await;
    h.prefs(a, &[NotificationKind::Share], 100).await;
    h.share(p, a, bob, 110).await;
    h.follow(bob, a, 120).await;
    h.block(a, carol, 130).await;
    h.like(p, a, carol, 150).await;
    h.follow(dave, a, 140).await;
    h.unblock(a, carol, 200).await;
    h.block(eve, dave, 210).await;
    let q2 = h.post(dave, &[a, eve], 220).await;
    h.like(q2, dave, eve, 230).await;
    h.edit(p, &[carol, bob], 240).await;
    h.like(p, a, bob, 250).await;
    h.unlike(p, bob, 255).await;
    h.like(p, a, bob, 300).await;
    // The read marker points at a notification the view produced.
    project(db).await;
    let items = visible(db, a).await;
    h.read(a, &items[items.len() / 2], 400).await;
    h.prefs(dave, &[NotificationKind::Mention], 410).await;
    vec![a, bob, carol, dave, eve]
}

async fn any_domain_interleaving_gives_the_same_view(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let who = mixed_history(&db, &h).await;
    let (u, f, p) = (Domain::User, Domain::Follow, Domain::Post);
    replay_in_order(&db, &[u, f, p]).await;
    let expected = snapshot(&db, &who).await;
    assert!(expected.contains("\"mention\""), "{expected}");
    assert!(expected.contains("read: Flag(true)"), "{expected}");
    assert!(expected.contains("read: Flag(false)"), "{expected}");
    for order in [[u, p, f], [f, u, p], [f, p, u], [p, u, f], [p, f, u]] {
        replay_in_order(&db, &order).await;
        assert_eq!(snapshot(&db, &who).await, expected, "order {order:?}");
    }
    for seed in 0..4 {
        replay_interleaved(&db, seed).await;
        assert_eq!(snapshot(&db, &who).await, expected, "seed {seed}");
    }
    db.close().await;
}

async fn rebuild_equals_live(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let who = mixed_history(&db, &h).await;
    // "Live": events interleaved across domains, with more arriving after a first catch-up.
    replay_interleaved(&db, 42).await;
    let [x] = users();
    let extra = h.post(who[1], &[x, who[0]], 500).await;
    h.like(extra, who[1], who[0], 510).await;
    h.follow(x, who[0], 520).await;
    let view = NotificationView::default();
    let source = OneAtATime(StoreTail::new(db.store.clone()));
    let checkpoints = Checkpoints::default();
    for domain in [Domain::Post, Domain::User, Domain::Follow] {
        while project_once(&view, domain, &source, &db.any, &checkpoints)
            .await
            .unwrap()
        {}
    }
    let mut everyone = who.clone();
    everyone.push(x);
    let live = snapshot(&db, &everyone).await;

    let report = nova_projections::rebuild::rebuild(
        Arc::new(NotificationView::default()),
        &db.store,
        &db.any,
        &Checkpoints::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.projection, NAME);
    assert_eq!(snapshot(&db, &everyone).await, live);
    // The swapped-in tables keep projecting.
    h.follow(who[2], x, 600).await;
    project(&db).await;
    assert_eq!(
        brief(&db, x).await,
        vec![
            b("follow", who[2], None, None),
            b("mention", who[1], Some(extra), None),
        ]
    );
    db.close().await;
}

/// Every page (three at a time) of `user`'s list, all or unread only, with the unread count
/// each page reports, under the given threshold of the general visibility rule.
async fn all_pages(db: &Database, user: Uuid, unread_only: bool, max_inline: usize) -> String {
    let mut out = String::new();
    let mut after: Option<Cursor> = None;
    loop {
        let req = PageRequest {
            limit: 3,
            after: after.clone(),
        };
        let page = q::list_with(&db.any, user, &req, unread_only, max_inline)
            .await
            .unwrap();
        out.push_str(&format!("{:?} {}\n", page.page.items, page.unread_count));
        match page.page.next_cursor {
            Some(c) => after = Some(Cursor::decode(&c).unwrap()),
            None => return out,
        }
    }
}

/// The list reads a recipient's preference and block histories once and writes them into the
/// query as comparisons; past `MAX_INLINE_TERMS` it falls back to a lookup per row. A seeded
/// history with many blocks, unblocks and preference changes — several at the very instant of
/// a notification — gives the same pages, counts and read flags both ways.
async fn the_inline_and_the_general_visibility_rules_agree(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let people: [Uuid; 8] = users();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let posts: Vec<(Uuid, Uuid)> = {
        let mut v = Vec::new();
        for (i, author) in people.iter().enumerate().take(4) {
            v.push((h.post(*author, &[], i as i64).await, *author));
        }
        v
    };
    let kinds = NotificationKind::ALL;
    let mut t = 10;
    // The recipient and actor of the last notification, so that a change can hit its instant.
    let (mut last_to, mut last_by) = (people[0], people[1]);
    for _ in 0..300 {
        // Steps of zero put a change at the same instant as the event before it.
        t += [0, 0, 5, 10][rng.gen_range(0..4)];
        let (mut x, mut y) = (
            people[rng.gen_range(0..people.len())],
            people[rng.gen_range(0..people.len())],
        );
        if rng.gen_bool(0.5) {
            (x, y) = (last_to, last_by);
        }
        let (post, author) = posts[rng.gen_range(0..posts.len())];
        match rng.gen_range(0..8) {
            0 | 1 => {
                h.like(post, author, x, t).await;
                (last_to, last_by) = (author, x);
            }
            2 => {
                h.comment(post, author, x, &[y], t).await;
                (last_to, last_by) = (author, x);
            }
            3 => {
                h.share(post, author, x, t).await;
                (last_to, last_by) = (author, x);
            }
            4 => {
                h.follow(x, y, t).await;
                (last_to, last_by) = (y, x);
            }
            5 => h.block(x, y, t).await,
            6 => h.unblock(x, y, t).await,
            _ => {
                let off: Vec<NotificationKind> =
                    kinds.into_iter().filter(|_| rng.gen_bool(0.4)).collect();
                h.prefs(x, &off, t).await;
            }
        }
    }
    project(&db).await;
    for (i, user) in people.iter().enumerate() {
        let items = visible(&db, *user).await;
        if i % 2 == 0 && !items.is_empty() {
            h.read(*user, &items[items.len() / 2], t + 1).await;
        }
    }
    project(&db).await;
    let mut some_read = false;
    for user in people {
        for unread_only in [false, true] {
            let inline = all_pages(&db, user, unread_only, usize::MAX).await;
            let general = all_pages(&db, user, unread_only, 0).await;
            assert_eq!(inline, general, "{user} unread_only={unread_only}");
            some_read |= inline.contains("Flag(true)");
        }
        assert_eq!(
            q::unread_count(&db.any, user).await.unwrap(),
            q::list_with(&db.any, user, &PageRequest::first(1), false, 0)
                .await
                .unwrap()
                .unread_count
        );
    }
    assert!(some_read, "some notifications were read");
    db.close().await;
}

/// Every kept unread count, by recipient.
async fn kept_counts(db: &Database) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT recipient_id, unread FROM notification_unread ORDER BY 1")
        .fetch_all(&db.any)
        .await
        .unwrap()
}

/// How many of `user`'s notifications the read-time rule shows as unread: every page of the
/// unread-only list, counted.
async fn unread_rows(db: &Database, user: Uuid) -> i64 {
    let (mut count, mut after) = (0, None);
    loop {
        let req = PageRequest {
            limit: MAX_LIMIT,
            after,
        };
        let page = q::list(&db.any, user, &req, true).await.unwrap();
        count += page.page.items.len() as i64;
        match page.page.next_cursor {
            Some(c) => after = Some(Cursor::decode(&c).unwrap()),
            None => return count,
        }
    }
}

/// The unread count is kept by the projector (ADR 0028), not counted when read: it must equal
/// what the read-time rule counts after any history, in any interleaving of the domains. A
/// seeded history of likes, comments, shares, follows and unfollows, streams going live (whose
/// notifications an unfollow can take back), preference changes, blocks and unblocks, read
/// markers moving forward and back, and an erasure — checked while the five domains'
/// projectors run live and concurrently, then replayed from scratch one event at a time from
/// randomly chosen domains.
async fn the_kept_unread_count_is_the_count_of_unread_rows(engine: Engine) {
    let (_t, db, h) = setup(engine).await;
    let checkpoints = Checkpoints::default();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let view: Arc<dyn Projection> = Arc::new(NotificationView::default());
    let source: Arc<dyn EventSource> = Arc::new(StoreTail::new(db.store.clone()));
    let live = spawn_projectors(&view, &source, &db.any, &checkpoints, &stop_rx);
    let caught_up = || async {
        let wait = std::time::Duration::from_secs(30);
        let caught = checkpoints.wait_for_heads(&db.any, &db.store, &*view, wait);
        assert_eq!(caught.await.unwrap(), Caught::Up);
    };
    let people: [Uuid; 6] = users();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut posts = Vec::new();
    for (i, author) in people.iter().enumerate().take(3) {
        posts.push((h.post(*author, &[], i as i64).await, *author));
    }
    let check = |db: &Database| {
        let db = db.clone();
        async move {
            let mut total = 0;
            for user in people {
                let kept = q::unread_count(&db.any, user).await.unwrap();
                assert_eq!(kept, unread_rows(&db, user).await, "{user}");
                let listed = q::list(&db.any, user, &PageRequest::first(1), false)
                    .await
                    .unwrap();
                assert_eq!(listed.unread_count, kept, "{user}: the list's count");
                total += kept;
            }
            total
        }
    };
    let (mut t, mut reads, mut peak) = (10, 0, 0);
    for step in 0..240 {
        t += [0, 5, 10][rng.gen_range(0..3)];
        let (x, y) = (
            people[rng.gen_range(0..people.len())],
            people[rng.gen_range(0..people.len())],
        );
        let (post, author) = posts[rng.gen_range(0..posts.len())];
        match rng.gen_range(0..12) {
            0 | 1 => h.like(post, author, x, t).await,
            2 => {
                h.comment(post, author, x, &[y], t).await;
            }
            3 => h.share(post, author, x, t).await,
            4 => h.follow(x, y, t).await,
            5 => h.unfollow(x, y, t).await,
            6 => h.go_live(x, t).await,
            7 => h.block(x, y, t).await,
            8 => h.unblock(x, y, t).await,
            9 => {
                let off = NotificationKind::ALL
                    .into_iter()
                    .filter(|_| rng.gen_bool(0.3))
                    .collect::<Vec<_>>();
                // Sometimes back in time, so that the change hides rows already counted.
                h.prefs(x, &off, t - rng.gen_range(0..40)).await;
            }
            _ => {
                // A marker at any visible notification: forward or back.
                caught_up().await;
                let items = visible(&db, x).await;
                if !items.is_empty() {
                    h.read(x, &items[rng.gen_range(0..items.len())], t).await;
                    reads += 1;
                }
            }
        }
        if step == 200 {
            h.erase(people[5], t).await;
        }
        if step % 20 == 19 {
            caught_up().await;
            peak = peak.max(check(&db).await);
        }
    }
    // A follow that ends before the followee goes live: a replay that learns of the start
    // before the end writes the start's notification, and the end takes it back.
    let (fan, star) = (people[0], people[1]);
    h.unblock(fan, star, t + 10).await;
    h.unblock(star, fan, t + 10).await;
    h.prefs(fan, &[], t + 10).await;
    h.follow(fan, star, t + 11).await;
    h.unfollow(fan, star, t + 12).await;
    h.go_live(star, t + 13).await;
    caught_up().await;
    stop.send(true).unwrap();
    for projector in live {
        projector.await.unwrap();
    }
    let live = check(&db).await;
    assert!(
        peak > 0 && reads > 5,
        "the history has unread rows and read markers"
    );
    // The table itself, positive counts only, is the same whatever the order.
    let table = || async {
        let rows = kept_counts(&db).await;
        assert!(rows.iter().all(|(_, n)| *n > 0), "{rows:?}");
        rows
    };
    let live_table = table().await;
    for seed in 0..3 {
        replay_interleaved(&db, seed).await;
        assert_eq!(check(&db).await, live, "seed {seed}");
        assert_eq!(table().await, live_table, "seed {seed}");
    }
    let follows_last = [
        Domain::Stream,
        Domain::User,
        Domain::Post,
        Domain::Conversation,
        Domain::Follow,
    ];
    replay_in_order(&db, &follows_last).await;
    assert_eq!(check(&db).await, live, "follows last");
    assert_eq!(table().await, live_table, "follows last");
    // Counted again from scratch (as for tables the projector did not fill), the same.
    let recounted = NotificationView::default().recount(&db.any).await.unwrap();
    assert!(recounted > 0);
    assert_eq!(check(&db).await, live, "recounted");
    db.close().await;
}

/// Migration 0033 fills the kept counts of rows projected before it, by the same rule as the
/// projector: a database migrated up to 0032 and filled with notifications, preferences, blocks
/// and read markers holds, once migrated, what `NotificationView::recount` counts (which is what
/// the projector keeps: the test above).
async fn the_upgrade_counts_the_rows_already_there(engine: Engine) {
    let t = TestDb::new(engine).await;
    let dir = std::env::temp_dir().join(format!("nova-migrations-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(match engine {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        });
    for file in std::fs::read_dir(&source).unwrap() {
        let file = file.unwrap();
        let name = file.file_name().into_string().unwrap();
        if name.as_str() < "0033" {
            std::fs::copy(file.path(), dir.join(&name)).unwrap();
        }
    }
    let before = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    let db = Database::connect(&t.url).await.unwrap();
    match (db.pg_pool(), db.sqlite_pool()) {
        (Some(pg), _) => before.run(pg).await.unwrap(),
        (_, Some(lite)) => before.run(lite).await.unwrap(),
        _ => unreachable!("one engine or the other"),
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let h = History::new(db.store.clone());
    let [a, b, c] = users();
    let actors: [Uuid; 4] = users();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut ids = Vec::new();
    for i in 0..90i64 {
        let (id, recipient) = (Uuid::now_v7(), [a, b, c][(i % 3) as usize]);
        let kind = NotificationKind::ALL[rng.gen_range(0..NotificationKind::ALL.len())];
        sqlx::query(
            "INSERT INTO notification (notification_id, recipient_id, kind, actor_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(recipient.to_string())
        .bind(kind.as_str())
        .bind(actors[rng.gen_range(0..actors.len())].to_string())
        .bind(nova_infra::readmodel::ts(h.at(i)))
        .execute(&db.any)
        .await
        .unwrap();
        ids.push((id, h.at(i)));
    }
    // a: likes and shares off from t=30 to t=60, and read up to t=45.
    for (version, at, off) in [(1, 30, true), (2, 60, false)] {
        for kind in NotificationKind::ALL {
            let disabled = off && matches!(kind, NotificationKind::Like | NotificationKind::Share);
            sqlx::query(
                "INSERT INTO notification_preference (user_id, kind, version, changed_at, \
                     disabled) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(a.to_string())
            .bind(kind.as_str())
            .bind(version)
            .bind(nova_infra::readmodel::ts(h.at(at)))
            .bind(i64::from(disabled))
            .execute(&db.any)
            .await
            .unwrap();
        }
    }
    let (up_to, up_to_at) = ids[45];
    sqlx::query(
        "INSERT INTO notification_read (user_id, up_to_created_at, up_to_id, version) \
         VALUES ($1, $2, $3, 3)",
    )
    .bind(a.to_string())
    .bind(nova_infra::readmodel::ts(up_to_at))
    .bind(up_to.to_string())
    .execute(&db.any)
    .await
    .unwrap();
    // b blocks the first actor (in effect); c blocked the second from t=20 to t=50.
    for (user, other, until) in [(b, actors[0], None), (c, actors[1], Some(h.at(50)))] {
        for (x, y) in [(user, other), (other, user)] {
            sqlx::query(
                "INSERT INTO notification_block (user_id, other_id, version, blocker_id, \
                     blocked_at, unblocked_at) VALUES ($1, $2, 1, $3, $4, $5)",
            )
            .bind(x.to_string())
            .bind(y.to_string())
            .bind(user.to_string())
            .bind(nova_infra::readmodel::ts(h.at(20)))
            .bind(until.map(nova_infra::readmodel::ts))
            .execute(&db.any)
            .await
            .unwrap();
        }
    }

    db.migrate().await.unwrap();
    let migrated = kept_counts(&db).await;
    assert_eq!(migrated.len(), 3, "{migrated:?}");
    assert!(
        migrated.iter().all(|(_, n)| *n > 0 && *n < 30),
        "each recipient has rows the rule does not count: {migrated:?}"
    );
    NotificationView::default().recount(&db.any).await.unwrap();
    assert_eq!(kept_counts(&db).await, migrated);
    for user in [a, b, c] {
        assert_eq!(
            q::unread_count(&db.any, user).await.unwrap(),
            unread_rows(&db, user).await
        );
    }
    db.close().await;
}
