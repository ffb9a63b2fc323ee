//! The social core as a whole: 50 users follow, unfollow, block, unblock, post (with
//! `@mentions`), like, unlike, comment, share, delete and deactivate, in a random order drawn from
//! a seeded generator, over real HTTP. A plain in-memory model applies the same operations.
//! Afterwards every active user's feed, notification list and follower/following counts, and
//! every post's counters, must equal what the model predicts — and must stay equal after each
//! projection is rebuilt from scratch.
//!
//! The seed comes from `NOVA_SCENARIO_SEED` (default fixed) and is printed, so a failure can be
//! replayed exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_projections::Checkpoints;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(fifty_users_match_the_model_and_a_rebuild);

const USERS: usize = 50;
const OPERATIONS: usize = 700;
const DEACTIVATIONS: usize = 4;
/// The dedup window of the notification view; the model assumes the whole run fits in it.
const DEDUP_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Follow,
    Like,
    Comment,
    Mention,
    Share,
}

struct User {
    id: Uuid,
    name: String,
    token: String,
    active: bool,
}

struct Post {
    id: Uuid,
    author: usize,
    /// Neither deleted by its author nor hidden by the deactivation policy.
    visible: bool,
    likes: BTreeSet<usize>,
    comments: u64,
    shares: u64,
}

struct Notification {
    recipient: usize,
    kind: Kind,
    actor: usize,
    post: Option<Uuid>,
    /// A block between actor and recipient was in effect when it was created.
    born_blocked: bool,
}

#[derive(Default)]
struct Model {
    users: Vec<User>,
    follows: BTreeSet<(usize, usize)>,
    /// (blocker, blocked)
    blocks: BTreeSet<(usize, usize)>,
    posts: Vec<Post>,
    notifications: Vec<Notification>,
    /// Keys that already produced a notification (the whole run is inside one dedup window).
    dedup: BTreeSet<(usize, Kind, usize, Option<Uuid>)>,
}

impl Model {
    fn blocked_between(&self, a: usize, b: usize) -> bool {
        self.blocks.contains(&(a, b)) || self.blocks.contains(&(b, a))
    }

    fn notify(&mut self, recipient: usize, kind: Kind, actor: usize, post: Option<Uuid>) {
        if recipient == actor || !self.dedup.insert((recipient, kind, actor, post)) {
            return;
        }
        let born_blocked = self.blocked_between(recipient, actor);
        self.notifications.push(Notification {
            recipient,
            kind,
            actor,
            post,
            born_blocked,
        });
    }

    /// Post ids of `u`'s home timeline (order is checked separately, on the server's keys).
    fn feed(&self, u: usize) -> BTreeSet<Uuid> {
        self.posts
            .iter()
            .filter(|p| p.visible && self.users[p.author].active)
            .filter(|p| p.author == u || self.follows.contains(&(u, p.author)))
            .map(|p| p.id)
            .collect()
    }

    /// (kind, actor, post) of `u`'s visible notifications, as a sorted multiset.
    fn notifications_of(&self, u: usize) -> Vec<(Kind, usize, Option<Uuid>)> {
        let mut out: Vec<_> = self
            .notifications
            .iter()
            .filter(|n| n.recipient == u && !n.born_blocked)
            .filter(|n| !self.blocked_between(n.recipient, n.actor))
            .map(|n| (n.kind, n.actor, n.post))
            .collect();
        out.sort();
        out
    }

    fn counts(&self, u: usize) -> (i64, i64) {
        let followers = self.follows.iter().filter(|(_, b)| *b == u).count() as i64;
        let following = self.follows.iter().filter(|(a, _)| *a == u).count() as i64;
        (followers, following)
    }

    fn active(&self) -> Vec<usize> {
        (0..self.users.len())
            .filter(|&i| self.users[i].active)
            .collect()
    }
}

/// What every read returned, for one point in time.
#[derive(Debug, PartialEq)]
struct Snapshot {
    feeds: BTreeMap<Uuid, Vec<Uuid>>,
    notifications: BTreeMap<Uuid, Vec<(String, Uuid, Option<Uuid>)>>,
    counts: BTreeMap<Uuid, (i64, i64)>,
    posts: BTreeMap<Uuid, Option<(i64, i64, i64)>>,
}

fn seed() -> u64 {
    std::env::var("NOVA_SCENARIO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e6f_7661)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn fifty_users_match_the_model_and_a_rebuild(engine: Engine) {
    let seed = seed();
    println!("scenario seed {seed} on {engine:?} (set NOVA_SCENARIO_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = spawn(engine).await;
    let mut m = Model::default();
    for i in 0..USERS {
        let name = format!("member{i:02}");
        let (id, token, _) = app.user(&name).await;
        m.users.push(User {
            id,
            name,
            token,
            active: true,
        });
    }
    // Mentions resolve through the directory: let it see everyone first.
    wait_until_projected(&app).await;

    let started = Instant::now();
    let mut deactivations = 0;
    for _ in 0..OPERATIONS {
        let actors = m.active();
        let a = actors[rng.gen_range(0..actors.len())];
        let b = rng.gen_range(0..USERS);
        let roll = rng.gen_range(0..100);
        match roll {
            0..=21 => follow(&app, &mut m, a, b).await,
            22..=27 => unfollow(&app, &mut m, a, b).await,
            28..=31 => block(&app, &mut m, a, b).await,
            32..=34 => unblock(&app, &mut m, a, b).await,
            35..=54 => create_post(&app, &mut m, &mut rng, a).await,
            55..=91 if !m.posts.is_empty() => {
                let p = rng.gen_range(0..m.posts.len());
                match roll {
                    55..=72 => like(&app, &mut m, a, p).await,
                    73..=78 => unlike(&app, &mut m, a, p).await,
                    79..=85 => comment(&app, &mut m, a, p).await,
                    86..=89 => share(&app, &mut m, a, p).await,
                    _ => delete_post(&app, &mut m, p).await,
                }
            }
            92.. if deactivations < DEACTIVATIONS && roll == 99 => {
                deactivations += 1;
                deactivate(&app, &mut m, a).await;
            }
            _ => create_post(&app, &mut m, &mut rng, a).await,
        }
    }
    assert!(
        started.elapsed() < DEDUP_WINDOW,
        "the operations took {:?}: longer than the dedup window the model assumes",
        started.elapsed()
    );

    wait_until_projected(&app).await;
    let live = snapshot(&app, &m).await;
    check_against_model(&m, &live);

    for name in ["follow_graph", "post_view", "feed", "notification"] {
        let projection = nova_projections::rebuild::find(name).unwrap();
        nova_projections::rebuild::rebuild(
            projection,
            &app.db.store,
            &app.db.any,
            &Checkpoints::default(),
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("rebuild of {name}: {e}"));
    }
    let rebuilt = snapshot(&app, &m).await;
    assert_eq!(live, rebuilt, "reads after rebuilding every projection");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Operations: each sends one request, checks the status the model predicts, then updates it.
// ---------------------------------------------------------------------------------------------

async fn send(m: &Model, actor: usize, req: reqwest::RequestBuilder) -> Response {
    let res = req
        .header("Authorization", bearer(&m.users[actor].token))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    Response { status, body }
}

struct Response {
    status: StatusCode,
    body: String,
}

impl Response {
    fn expect(&self, status: StatusCode, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn follow(app: &TestApp, m: &mut Model, a: usize, b: usize) {
    let path = format!("/v1/users/{}/follow", m.users[b].id);
    let res = send(m, a, app.client.put(app.url(&path))).await;
    if a == b {
        res.expect(StatusCode::UNPROCESSABLE_ENTITY, "self follow");
    } else if !m.users[b].active {
        res.expect(StatusCode::NOT_FOUND, "follow of a deactivated user");
    } else if m.blocked_between(a, b) {
        res.expect(StatusCode::UNPROCESSABLE_ENTITY, "follow across a block");
    } else {
        res.expect(StatusCode::OK, "follow");
        if m.follows.insert((a, b)) {
            m.notify(b, Kind::Follow, a, None);
        }
    }
}

async fn unfollow(app: &TestApp, m: &mut Model, a: usize, b: usize) {
    if a == b || !m.users[b].active {
        return;
    }
    let path = format!("/v1/users/{}/follow", m.users[b].id);
    send(m, a, app.client.delete(app.url(&path)))
        .await
        .expect(StatusCode::OK, "unfollow");
    m.follows.remove(&(a, b));
}

async fn block(app: &TestApp, m: &mut Model, a: usize, b: usize) {
    if a == b || !m.users[b].active {
        return;
    }
    let path = format!("/v1/users/{}/block", m.users[b].id);
    send(m, a, app.client.put(app.url(&path)))
        .await
        .expect(StatusCode::OK, "block");
    m.follows.remove(&(a, b));
    m.follows.remove(&(b, a));
    m.blocks.insert((a, b));
    // Likes, comments and shares learn of blocks from the notification view.
    blocks_projected(app).await;
}

/// Waits until the notification view (where post commands read blocks) has every block.
async fn blocks_projected(app: &TestApp) {
    let head = app.db.store.head(Domain::Follow).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let checkpoints = Checkpoints::default();
    while checkpoints
        .load(
            &app.db.any,
            nova_projections::notification::NAME,
            Domain::Follow,
        )
        .await
        .unwrap()
        < head
    {
        assert!(Instant::now() < deadline, "blocks were not projected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn unblock(app: &TestApp, m: &mut Model, a: usize, b: usize) {
    if a == b || !m.users[b].active {
        return;
    }
    let path = format!("/v1/users/{}/block", m.users[b].id);
    send(m, a, app.client.delete(app.url(&path)))
        .await
        .expect(StatusCode::OK, "unblock");
    m.blocks.remove(&(a, b));
    blocks_projected(app).await;
}

async fn create_post(app: &TestApp, m: &mut Model, rng: &mut StdRng, a: usize) {
    // Up to two mentions, of anyone (deactivated users are not resolved, so not notified).
    let mentioned: Vec<usize> = (0..rng.gen_range(0..=2))
        .map(|_| rng.gen_range(0..USERS))
        .collect();
    let mut content = format!("post {} by {}", m.posts.len(), m.users[a].name);
    for &u in &mentioned {
        content.push_str(&format!(" hi @{}", m.users[u].name));
    }
    let res = send(
        m,
        a,
        app.post("/v1/posts").json(&json!({ "content": content })),
    )
    .await;
    res.expect(StatusCode::CREATED, "create post");
    let id: Uuid = res.json()["post_id"].as_str().unwrap().parse().unwrap();
    m.posts.push(Post {
        id,
        author: a,
        visible: true,
        likes: BTreeSet::new(),
        comments: 0,
        shares: 0,
    });
    for u in mentioned {
        if m.users[u].active {
            m.notify(u, Kind::Mention, a, Some(id));
        }
    }
}

/// Status of `a`'s action on post `p`: the API answers 422 for actions on a deleted or hidden
/// post (`post_deleted`) and across a block with its author (`blocked`).
fn action_status(m: &Model, a: usize, p: usize, ok: StatusCode) -> StatusCode {
    let post = &m.posts[p];
    if post.visible && (a == post.author || !m.blocked_between(a, post.author)) {
        ok
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

async fn like(app: &TestApp, m: &mut Model, a: usize, p: usize) {
    let path = format!("/v1/posts/{}/like", m.posts[p].id);
    let res = send(m, a, app.client.put(app.url(&path))).await;
    res.expect(action_status(m, a, p, StatusCode::OK), "like");
    if res.status == StatusCode::OK && m.posts[p].likes.insert(a) {
        let (author, id) = (m.posts[p].author, m.posts[p].id);
        m.notify(author, Kind::Like, a, Some(id));
    }
}

async fn unlike(app: &TestApp, m: &mut Model, a: usize, p: usize) {
    if !m.posts[p].visible {
        return;
    }
    let path = format!("/v1/posts/{}/like", m.posts[p].id);
    send(m, a, app.client.delete(app.url(&path)))
        .await
        .expect(StatusCode::OK, "unlike");
    m.posts[p].likes.remove(&a);
}

async fn comment(app: &TestApp, m: &mut Model, a: usize, p: usize) {
    let path = format!("/v1/posts/{}/comments", m.posts[p].id);
    let res = send(m, a, app.post(&path).json(&json!({"content": "nice one"}))).await;
    res.expect(action_status(m, a, p, StatusCode::CREATED), "comment");
    if res.status == StatusCode::CREATED {
        m.posts[p].comments += 1;
        let (author, id) = (m.posts[p].author, m.posts[p].id);
        m.notify(author, Kind::Comment, a, Some(id));
    }
}

async fn share(app: &TestApp, m: &mut Model, a: usize, p: usize) {
    let path = format!("/v1/posts/{}/shares", m.posts[p].id);
    let res = send(m, a, app.post(&path)).await;
    res.expect(action_status(m, a, p, StatusCode::CREATED), "share");
    if res.status == StatusCode::CREATED {
        m.posts[p].shares += 1;
        let (author, id) = (m.posts[p].author, m.posts[p].id);
        m.notify(author, Kind::Share, a, Some(id));
    }
}

async fn delete_post(app: &TestApp, m: &mut Model, p: usize) {
    let author = m.posts[p].author;
    if !m.users[author].active || !m.posts[p].visible {
        return;
    }
    let path = format!("/v1/posts/{}", m.posts[p].id);
    send(m, author, app.delete(&path))
        .await
        .expect(StatusCode::OK, "delete post");
    m.posts[p].visible = false;
}

async fn deactivate(app: &TestApp, m: &mut Model, a: usize) {
    send(m, a, app.delete("/v1/users/me"))
        .await
        .expect(StatusCode::OK, "deactivate");
    m.users[a].active = false;
    m.follows.retain(|&(x, y)| x != a && y != a);
    for p in m.posts.iter_mut().filter(|p| p.author == a) {
        p.visible = false;
    }
    // The directory must know before anyone may be refused a follow of this user.
    wait_until_projected(app).await;
}

// ---------------------------------------------------------------------------------------------
// Reads.
// ---------------------------------------------------------------------------------------------

/// Waits until the policies have reacted to every user event and every projection has applied
/// every event of every domain (policies append, so this loops until nothing moves).
async fn wait_until_projected(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let policies = [
        "policy_follow_on_user_deactivated",
        "policy_post_on_user_deactivated",
    ];
    let checkpoints = Checkpoints::default();
    loop {
        let mut done = true;
        for p in policies {
            let head = app.db.store.head(Domain::User).await.unwrap();
            let at = checkpoints
                .load(&app.db.any, p, Domain::User)
                .await
                .unwrap();
            done &= at >= head;
        }
        let status =
            nova_projections::status::status(&app.db.store, &app.db.any, nova_policies::CATALOG)
                .await
                .unwrap();
        done &= status.iter().all(|s| s.lag_events == 0);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "projections did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_json(app: &TestApp, token: &str, path: &str) -> Value {
    let res = app
        .get(path)
        .header("Authorization", bearer(token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().await.unwrap()
}

/// Every page of a list, small pages so that cursors are exercised.
async fn all_pages(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=7&cursor={c}"),
            None => format!("{path}?limit=7"),
        };
        let page = get_json(app, token, &url).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

fn uuid_of(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| s.parse().ok())
}

async fn snapshot(app: &TestApp, m: &Model) -> Snapshot {
    let mut s = Snapshot {
        feeds: BTreeMap::new(),
        notifications: BTreeMap::new(),
        counts: BTreeMap::new(),
        posts: BTreeMap::new(),
    };
    for u in m.active() {
        let user = &m.users[u];
        let feed = all_pages(app, &user.token, "/v1/feed").await;
        // Newest first by (created_at, post_id), each post once.
        let keys: Vec<(String, Uuid)> = feed
            .iter()
            .map(|i| {
                (
                    i["created_at"].as_str().unwrap().to_owned(),
                    uuid_of(&i["post_id"]).unwrap(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|x, y| y.cmp(x));
        sorted.dedup();
        assert_eq!(keys, sorted, "feed of {} is not newest-first", user.name);
        s.feeds
            .insert(user.id, keys.into_iter().map(|(_, id)| id).collect());

        let notes = all_pages(app, &user.token, "/v1/notifications").await;
        let mut notes: Vec<(String, Uuid, Option<Uuid>)> = notes
            .iter()
            .map(|n| {
                (
                    n["kind"].as_str().unwrap().to_owned(),
                    uuid_of(&n["actor_id"]).unwrap(),
                    uuid_of(&n["post_id"]),
                )
            })
            .collect();
        notes.sort();
        s.notifications.insert(user.id, notes);

        let profile = get_json(app, &user.token, &format!("/v1/users/{}", user.id)).await;
        s.counts.insert(
            user.id,
            (
                profile["followers"].as_i64().unwrap(),
                profile["following"].as_i64().unwrap(),
            ),
        );
    }
    let reader = &m.users[m.active()[0]].token;
    for p in &m.posts {
        let res = app
            .get(&format!("/v1/posts/{}", p.id))
            .header("Authorization", bearer(reader))
            .send()
            .await
            .unwrap();
        let counters = match res.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => {
                let v: Value = res.json().await.unwrap();
                Some((
                    v["like_count"].as_i64().unwrap(),
                    v["comment_count"].as_i64().unwrap(),
                    v["share_count"].as_i64().unwrap(),
                ))
            }
            other => panic!("GET post {}: {other}", p.id),
        };
        s.posts.insert(p.id, counters);
    }
    s
}

fn check_against_model(m: &Model, s: &Snapshot) {
    let mut compared_items = 0;
    for u in m.active() {
        let user = &m.users[u];
        let feed: BTreeSet<Uuid> = s.feeds[&user.id].iter().copied().collect();
        assert_eq!(feed, m.feed(u), "feed of {}", user.name);
        compared_items += feed.len();

        let expected: Vec<(String, Uuid, Option<Uuid>)> = m
            .notifications_of(u)
            .into_iter()
            .map(|(k, actor, post)| {
                let kind = format!("{k:?}").to_lowercase();
                (kind, m.users[actor].id, post)
            })
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(
            s.notifications[&user.id], expected,
            "notifications of {}",
            user.name
        );
        compared_items += expected.len();
        assert_eq!(s.counts[&user.id], m.counts(u), "counts of {}", user.name);
    }
    for p in &m.posts {
        let expected =
            p.visible
                .then_some((p.likes.len() as i64, p.comments as i64, p.shares as i64));
        // A visible post of a deactivated author is hidden by the policy: never visible here.
        assert_eq!(s.posts[&p.id], expected, "counters of post {}", p.id);
    }
    let hidden = m
        .notifications
        .iter()
        .filter(|n| n.born_blocked || m.blocked_between(n.recipient, n.actor))
        .count();
    println!(
        "compared {compared_items} feed items and notifications ({} stored, {hidden} hidden by \
         blocks), {} follows, {} blocks, {} posts ({} visible), {} deactivated users",
        m.notifications.len(),
        m.follows.len(),
        m.blocks.len(),
        m.posts.len(),
        m.posts.iter().filter(|p| p.visible).count(),
        m.users.iter().filter(|u| !u.active).count()
    );
    // The run must have produced something worth comparing.
    assert!(compared_items > 200, "only {compared_items} items compared");
}
