//! Consistency holes closed by the hardening pass (issue 15), end to end on both engines:
//! policies in the projection status, blocks that refuse and hide, author status in the post
//! view's reads, and one rebuild of a projection at a time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_projections::Checkpoints;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    policies_are_in_the_projection_status,
    a_block_refuses_and_hides,
    post_reads_follow_author_status,
    one_rebuild_of_a_projection_at_a_time,
    a_follow_racing_a_deactivation_is_ended,
);

async fn admin(app: &TestApp, name: &str) -> String {
    let (_, token, _) = app.user(name).await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            name,
            nova_event_schemas::user::Role::Admin,
        )
        .await
        .unwrap();
    token
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Waits until `projection` has applied `domain` up to its current head.
async fn caught_up(app: &TestApp, projection: &str, domain: Domain) {
    let head = app.db.store.head(domain).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let checkpoints = Checkpoints::default();
    while checkpoints
        .load(&app.db.any, projection, domain)
        .await
        .unwrap()
        < head
    {
        assert!(
            Instant::now() < deadline,
            "{projection} did not reach {domain}:{head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Policies show in `/v1/projections` (and `nova projections status`, which reads the same
/// function) with their position and lag per consumed domain.
async fn policies_are_in_the_projection_status(engine: Engine) {
    let app = spawn(engine).await;
    let token = admin(&app, "ops").await;
    let (_, gone, _) = app.user("leaver").await;
    assert_eq!(
        send(&app, Method::DELETE, "/v1/users/me", &gone, None)
            .await
            .status(),
        StatusCode::OK
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = send(&app, Method::GET, "/v1/projections", &token, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        let items = body["items"].as_array().unwrap();
        let policies: Vec<&Value> = items.iter().filter(|r| r["kind"] == "policy").collect();
        // One row per policy and consumed domain, and nothing else.
        let mut listed: Vec<(String, String)> = policies
            .iter()
            .map(|r| {
                (
                    r["projection"].as_str().unwrap().to_owned(),
                    r["domain"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut expected: Vec<(String, String)> = nova_policies::CATALOG
            .iter()
            .flat_map(|(name, domains)| {
                domains
                    .iter()
                    .map(|d| ((*name).to_owned(), d.as_str().to_owned()))
            })
            .collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
        assert!(items
            .iter()
            .any(|r| r["projection"] == "feed" && r["kind"] == "projection"));
        let mut caught_up = true;
        for p in &policies {
            let domain = Domain::parse(p["domain"].as_str().unwrap()).unwrap();
            let head = app.db.store.head(domain).await.unwrap();
            assert!(p["head"].as_i64().unwrap() <= head);
            assert_eq!(
                p["lag_events"].as_i64().unwrap(),
                p["head"].as_i64().unwrap() - p["position"].as_i64().unwrap()
            );
            caught_up &= p["position"] == head && p["status"] == "caught_up";
        }
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policies did not catch up: {policies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// A blocked user (either direction) cannot comment on, like or share the other's posts
/// (422 `blocked`), their mentions of each other link nobody, and comments written before the
/// block are no longer listed — until the block is lifted.
async fn a_block_refuses_and_hides(engine: Engine) {
    let app = spawn(engine).await;
    let (_, a, _) = app.user("alice").await;
    let (bob, b, _) = app.user("bob").await;
    let (_, c, _) = app.user("carol").await;
    caught_up(&app, nova_projections::user_directory::NAME, Domain::User).await;
    let post = create_post(&app, &a, "hello").await;
    let comments = format!("/v1/posts/{post}/comments");
    for (who, text) in [(&b, "before the block"), (&c, "a friend")] {
        let res = send(
            &app,
            Method::POST,
            &comments,
            who,
            Some(json!({"content": text})),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    caught_up(&app, nova_projections::post_view::NAME, Domain::Post).await;
    assert_eq!(
        contents(&app, &comments, &c).await,
        ["before the block", "a friend"]
    );

    let res = send(
        &app,
        Method::PUT,
        &format!("/v1/users/{bob}/block"),
        &a,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_projections::notification::NAME, Domain::Follow).await;
    let post_head = app.db.store.head(Domain::Post).await.unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            comments.clone(),
            Some(json!({"content": "after"})),
        ),
        (Method::PUT, format!("/v1/posts/{post}/like"), None),
        (Method::POST, format!("/v1/posts/{post}/shares"), None),
    ] {
        let res = send(&app, method.clone(), &path, &b, body).await;
        expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "blocked").await;
    }
    assert_eq!(
        app.db.store.head(Domain::Post).await.unwrap(),
        post_head,
        "nothing appended"
    );
    // The earlier comment is hidden from everyone; carol's stays.
    for who in [&a, &b, &c] {
        assert_eq!(contents(&app, &comments, who).await, ["a friend"]);
    }
    // Mentions across the block link nobody, in either direction.
    let theirs = create_post(&app, &b, "hi @alice and @carol").await;
    let own = create_post(&app, &a, "hi @bob and @carol").await;
    caught_up(&app, nova_projections::post_view::NAME, Domain::Post).await;
    let carol_id = user_id(&app, "carol").await;
    for p in [theirs, own] {
        let res = send(&app, Method::GET, &format!("/v1/posts/{p}"), &c, None).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["mentions"], json!([carol_id]), "{body}");
    }
    // Others still comment; the blocker's own post is open to them.
    let res = send(
        &app,
        Method::PUT,
        &format!("/v1/posts/{post}/like"),
        &c,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    // Lifted, the old comment is listed again and bob may comment.
    let res = send(
        &app,
        Method::DELETE,
        &format!("/v1/users/{bob}/block"),
        &a,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_projections::notification::NAME, Domain::Follow).await;
    assert_eq!(
        contents(&app, &comments, &c).await,
        ["before the block", "a friend"]
    );
    let res = send(
        &app,
        Method::POST,
        &comments,
        &b,
        Some(json!({"content": "again"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    app.stop().await;
}

async fn create_post(app: &TestApp, token: &str, content: &str) -> String {
    let res = send(
        app,
        Method::POST,
        "/v1/posts",
        token,
        Some(json!({"content": content})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    body["post_id"].as_str().unwrap().to_owned()
}

async fn user_id(app: &TestApp, name: &str) -> Uuid {
    app.user_commands().user_id_of(name).await.unwrap().unwrap()
}

/// The comments' contents as `token` lists them.
async fn contents(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let res = send(app, Method::GET, path, token, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /v1/users/{id}/posts` of an unknown user is a 404, not an empty page; a deactivated
/// author's posts, and their comments on others' posts, are not shown — including a post the
/// deactivation policy cannot know of (written straight to the store after it ran).
async fn post_reads_follow_author_status(engine: Engine) {
    let app = spawn(engine).await;
    let (_, reader, _) = app.user("reader").await;
    let res = send(
        &app,
        Method::GET,
        &format!("/v1/users/{}/posts", Uuid::now_v7()),
        &reader,
        None,
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = send(
        &app,
        Method::GET,
        "/v1/users/not-a-uuid/posts",
        &reader,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let (leaver, l, _) = app.user("leaver").await;
    caught_up(&app, nova_projections::user_directory::NAME, Domain::User).await;
    let theirs = create_post(&app, &l, "mine").await;
    let readers = create_post(&app, &reader, "open for comments").await;
    let comments = format!("/v1/posts/{readers}/comments");
    let res = send(
        &app,
        Method::POST,
        &comments,
        &l,
        Some(json!({"content": "from the leaver"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    caught_up(&app, nova_projections::post_view::NAME, Domain::Post).await;
    let posts_of = format!("/v1/users/{leaver}/posts");
    let res = send(&app, Method::GET, &posts_of, &reader, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        contents(&app, &comments, &reader).await,
        ["from the leaver"]
    );

    // A post that races the deactivation: committed after the policy listed the author's
    // posts, so nothing hides it; the reads hide it by the author's status.
    let res = send(&app, Method::DELETE, "/v1/users/me", &l, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_projections::user_directory::NAME, Domain::User).await;
    let racing = nova_commands::post::PostCommands::new(
        app.command_store(),
        app.read_models(),
        app.read_models(),
    );
    let ctx = nova_commands::CommandContext::new(None, Some(leaver));
    let (raced, _) = racing
        .create(&ctx, leaver, "raced".into(), vec![])
        .await
        .unwrap();
    caught_up(&app, nova_projections::post_view::NAME, Domain::Post).await;
    for p in [theirs.clone(), raced.to_string()] {
        let res = send(&app, Method::GET, &format!("/v1/posts/{p}"), &reader, None).await;
        expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = send(&app, Method::GET, &posts_of, &reader, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    assert!(contents(&app, &comments, &reader).await.is_empty());
    // The reader's own post is untouched.
    let res = send(
        &app,
        Method::GET,
        &format!("/v1/posts/{readers}"),
        &reader,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;
}

/// Two rebuilds of one projection cannot run at once: while one holds the lease (here taken
/// as another process would), the API answers 409 and a direct rebuild is refused; released —
/// or expired, as a crashed holder's would — the next rebuild runs.
async fn one_rebuild_of_a_projection_at_a_time(engine: Engine) {
    use nova_projections::rebuild::{self, Lease, RebuildError};
    let app = spawn(engine).await;
    let token = admin(&app, "ops").await;
    let held = Lease::take(&app.db.any, "feed").await.unwrap();
    let res = send(
        &app,
        Method::POST,
        "/v1/projections/feed/rebuild",
        &token,
        None,
    )
    .await;
    expect_error(res, StatusCode::CONFLICT, "rebuild_in_progress").await;
    let live = rebuild::find("feed").unwrap();
    let direct = rebuild::rebuild(
        live.clone(),
        &app.db.store,
        &app.db.any,
        &Checkpoints::default(),
        |_| {},
    )
    .await;
    assert!(matches!(direct, Err(RebuildError::Busy(_))), "{direct:?}");
    // Another projection is not held back.
    let res = send(
        &app,
        Method::POST,
        "/v1/projections/notification/rebuild",
        &token,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    held.release(&app.db.any).await;
    rebuild::rebuild(
        live.clone(),
        &app.db.store,
        &app.db.any,
        &Checkpoints::default(),
        |_| {},
    )
    .await
    .unwrap();

    // An expired lease (its holder died) is taken over.
    let _abandoned = Lease::take(&app.db.any, "feed").await.unwrap();
    sqlx::query("UPDATE rebuild_leases SET lease_until = 0 WHERE projection = 'feed'")
        .execute(&app.db.any)
        .await
        .unwrap();
    let res = send(
        &app,
        Method::POST,
        "/v1/projections/feed/rebuild",
        &token,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // Done, the lease row is gone again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<(String,)> = sqlx::query_as("SELECT projection FROM rebuild_leases")
            .fetch_all(&app.db.any)
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "leases left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// A user directory that has not seen any deactivation yet: everyone is active.
struct StaleDirectory;

#[async_trait::async_trait]
impl nova_commands::facts::UserFactSource for StaleDirectory {
    async fn is_active(&self, _user: Uuid) -> nova_commands::facts::FactResult<bool> {
        Ok(true)
    }

    async fn ids_by_usernames(
        &self,
        _usernames: &[String],
    ) -> nova_commands::facts::FactResult<std::collections::HashMap<String, Uuid>> {
        Ok(Default::default())
    }
}

/// A follow accepted on a stale "is active?" after the deactivation policy already ended the
/// target's follows — the race that let a follow outlive its target — is ended too; a follow
/// of an active user is left alone.
async fn a_follow_racing_a_deactivation_is_ended(engine: Engine) {
    use nova_commands::facts::FollowFactSource;
    let app = spawn(engine).await;
    let (target, t, _) = app.user("target").await;
    let (fan, _, _) = app.user("fan").await;
    let (friend, _, _) = app.user("friend").await;
    caught_up(&app, nova_projections::user_directory::NAME, Domain::User).await;
    let res = send(&app, Method::DELETE, "/v1/users/me", &t, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_policies::follow::NAME, Domain::User).await;

    // The racing command: its directory still says the target is active.
    let stale = nova_commands::follow::FollowCommands::new(
        app.command_store(),
        std::sync::Arc::new(StaleDirectory),
    );
    let ctx = nova_commands::CommandContext::new(None, Some(fan));
    stale.follow(&ctx, fan, target).await.unwrap();
    stale.follow(&ctx, fan, friend).await.unwrap();

    caught_up(&app, nova_policies::follow::RACE_NAME, Domain::Follow).await;
    caught_up(&app, nova_projections::follow_graph::NAME, Domain::Follow).await;
    let graph = app.read_models();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !graph.edges_of(target).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the racing follow survived");
        tokio::time::sleep(Duration::from_millis(50)).await;
        caught_up(&app, nova_projections::follow_graph::NAME, Domain::Follow).await;
    }
    assert_eq!(graph.edges_of(friend).await.unwrap(), vec![(fan, friend)]);
    // The end of the follow names its cause.
    let ended = app
        .db
        .store
        .read(
            Domain::Follow,
            &nova_infra::store::ReadFilter {
                after_position: 0,
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "unfollowed")
        .count();
    assert_eq!(ended, 1);
    app.stop().await;
}
