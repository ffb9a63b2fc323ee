//! End-to-end tests of the Social graph routes (API.md), the `follow_graph` projection and the
//! follow domain's deactivation policy — over real HTTP, on both engines.

mod common;

use std::time::Duration;

use common::*;
use nova_commands::facts::FollowFactSource;
use nova_commands::follow::FollowCommands;
use nova_commands::CommandContext;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_infra::store::ReadFilter;
use nova_policies::follow::{FollowOnUserDeactivated, NAME as POLICY_NAME};
use nova_policies::{CatchUp, Policy};
use nova_projections::checkpoint::Caught;
use nova_projections::follow_graph::FollowGraph;
use nova_projections::{Checkpoints, Projection};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

on_both_backends!(
    follow_unfollow_walkthrough,
    follow_is_idempotent,
    routes_reject_bad_input,
    routes_require_a_token,
    unknown_or_deactivated_targets_are_not_found,
    follow_across_a_block_is_refused_both_ways,
    block_fact_answers_both_ways,
    block_removes_follows_and_unblock_does_not_restore_them,
    lists_paginate_with_a_cursor,
    deactivation_policy_removes_the_users_edges,
    policy_handling_an_event_twice_appends_nothing,
    rebuild_equals_live,
    lists_skip_deactivated_users,
    deactivation_policy_over_jetstream,
);

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Registers and logs in users, then waits until the directory knows them all (the follow
/// commands check targets there).
async fn users(app: &TestApp, names: &[&str]) -> Vec<(Uuid, String)> {
    let mut out = Vec::new();
    for name in names {
        let (id, token, _) = app.user(name).await;
        out.push((id, token));
    }
    caught_up(app, "user_directory", Domain::User).await;
    out
}

async fn command(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> Response {
    let req = match method {
        "PUT" => app.client.put(app.url(path)),
        "DELETE" => app.delete(path),
        "GET" => app.get(path),
        other => panic!("unexpected method {other}"),
    };
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    req.send().await.unwrap()
}

/// Runs a follow command that must succeed; returns (version, position header if any).
async fn ok(app: &TestApp, method: &str, path: &str, token: &str) -> (i64, Option<String>) {
    let res = command(app, method, path, Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK, "{method} {path}");
    let pos = res
        .headers()
        .get("x-nova-position")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.unwrap();
    (body["version"].as_i64().unwrap(), pos)
}

async fn follow(app: &TestApp, token: &str, target: Uuid) -> (i64, Option<String>) {
    ok(app, "PUT", &format!("/v1/users/{target}/follow"), token).await
}

/// One page of `/v1/users/{id}/{which}`, read after the follow graph caught up.
async fn page(app: &TestApp, token: &str, id: Uuid, which: &str, query: &str) -> Value {
    caught_up(app, "follow_graph", Domain::Follow).await;
    let res = app
        .get(&format!("/v1/users/{id}/{which}{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{which} of {id}");
    res.json().await.unwrap()
}

/// The ids of a whole list (first page of 100).
async fn ids(app: &TestApp, token: &str, id: Uuid, which: &str) -> Vec<Uuid> {
    page(app, token, id, which, "?limit=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["user_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// (followers, following) on the public profile, read after the graph caught up.
async fn profile_counts(app: &TestApp, id: Uuid) -> (i64, i64) {
    let head = app.db.store.head(Domain::Follow).await.unwrap();
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", format!("follow:{head}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let p: Value = res.json().await.unwrap();
    (
        p["followers"].as_i64().unwrap(),
        p["following"].as_i64().unwrap(),
    )
}

async fn follow_event_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM follow_events")
        .fetch_one(&app.db.any)
        .await
        .unwrap();
    n
}

type EdgeRow = (String, String, String);
type CountRow = (String, i64, i64);

async fn graph_rows(app: &TestApp, suffix: &str) -> (Vec<EdgeRow>, Vec<CountRow>) {
    let edges = sqlx::query_as(&format!(
        "SELECT follower_id, followee_id, followed_at FROM follow_edges{suffix} \
         ORDER BY follower_id, followee_id"
    ))
    .fetch_all(&app.db.any)
    .await
    .unwrap();
    let counts = sqlx::query_as(&format!(
        "SELECT user_id, followers, following FROM follow_counts{suffix} ORDER BY user_id"
    ))
    .fetch_all(&app.db.any)
    .await
    .unwrap();
    (edges, counts)
}

fn commands(app: &TestApp) -> FollowCommands {
    FollowCommands::new(app.command_store(), app.read_models())
}

async fn deactivate(app: &TestApp, token: &str) {
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

async fn follow_unfollow_walkthrough(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((a, ta), (b, tb)) = (u[0].clone(), u[1].clone());

    let (version, pos) = follow(&app, &ta, b).await;
    assert_eq!(version, 1);
    let pos = pos.expect("a follow appends");
    assert!(pos.starts_with("follow:"), "{pos}");

    // Read-your-writes on the list through X-Nova-Min-Position.
    let res = app
        .get(&format!("/v1/users/{b}/followers"))
        .bearer_auth(&tb)
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["user_id"], a.to_string());
    assert_eq!(items[0]["username"], "alice");
    assert_eq!(items[0]["display_name"], Value::Null);
    assert!(items[0]["followed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(ids(&app, &tb, a, "following").await, vec![b]);
    assert!(ids(&app, &tb, a, "followers").await.is_empty());

    // Counts on profiles.
    let res = app
        .get(&format!("/v1/users/{b}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    let p: Value = res.json().await.unwrap();
    assert_eq!(
        (p["followers"].as_i64(), p["following"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(profile_counts(&app, a).await, (0, 1));
    let me: Value = app
        .get("/v1/users/me")
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["following"], 1);

    // Following back is the same relationship's next version.
    assert_eq!(follow(&app, &tb, a).await.0, 2);
    assert_eq!(profile_counts(&app, a).await, (1, 1));

    let (version, pos) = ok(&app, "DELETE", &format!("/v1/users/{b}/follow"), &ta).await;
    assert_eq!(version, 3);
    assert!(pos.is_some());
    assert!(ids(&app, &tb, b, "followers").await.is_empty());
    assert_eq!(profile_counts(&app, b).await, (0, 1));
    assert_eq!(profile_counts(&app, a).await, (1, 0));

    // Unfollowing again changes nothing.
    let (version, pos) = ok(&app, "DELETE", &format!("/v1/users/{b}/follow"), &ta).await;
    assert_eq!((version, pos), (3, None));

    // The routes are documented.
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    for p in ["follow", "block", "followers", "following"] {
        assert!(paths[format!("/v1/users/{{id}}/{p}")].is_object(), "{p}");
    }
    assert!(paths["/v1/users/{id}/follow"]["put"].is_object());
    assert!(paths["/v1/users/{id}/follow"]["delete"].is_object());
    assert!(paths["/v1/users/{id}/block"]["put"].is_object());
    assert!(paths["/v1/users/{id}/block"]["delete"].is_object());
    let params: Vec<&str> = paths["/v1/users/{id}/followers"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["id", "limit", "cursor", "X-Nova-Min-Position"] {
        assert!(params.contains(&name), "{name} in {params:?}");
    }
    assert!(doc["components"]["schemas"]["PageBody_FollowEntry"].is_object());
    app.stop().await;
}

async fn follow_is_idempotent(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((_, ta), (b, _)) = (u[0].clone(), u[1].clone());

    let (v1, p1) = follow(&app, &ta, b).await;
    let (v2, p2) = follow(&app, &ta, b).await;
    assert_eq!((v1, v2), (1, 1));
    assert!(p1.is_some());
    assert_eq!(p2, None, "a repeated follow appends nothing");
    assert_eq!(follow_event_count(&app).await, 1);
    assert_eq!(profile_counts(&app, b).await, (1, 0));

    // Through Idempotency-Key, a retried block returns the first answer and appends once.
    let block = || {
        app.client
            .put(app.url(&format!("/v1/users/{b}/block")))
            .bearer_auth(&ta)
            .header("Idempotency-Key", "block-bob-1")
    };
    let first = block().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first_pos = position(&first);
    let first: Value = first.json().await.unwrap();
    let again = block().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(position(&again), first_pos);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first["version"], 3, "unfollowed + blocked");
    assert_eq!(follow_event_count(&app).await, 3);
    app.stop().await;
}

async fn routes_reject_bad_input(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((a, ta), (b, _)) = (u[0].clone(), u[1].clone());

    for (method, path) in [
        ("PUT", "/v1/users/not-a-uuid/follow"),
        ("DELETE", "/v1/users/not-a-uuid/follow"),
        ("PUT", "/v1/users/12345/block"),
        ("DELETE", "/v1/users/12345/block"),
        ("GET", "/v1/users/nope/followers"),
        ("GET", "/v1/users/nope/following"),
    ] {
        let res = command(&app, method, path, Some(&ta)).await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_path").await;
    }

    // Oneself.
    let res = command(&app, "PUT", &format!("/v1/users/{a}/follow"), Some(&ta)).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "self_follow").await;
    let res = command(&app, "PUT", &format!("/v1/users/{a}/block"), Some(&ta)).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "self_block").await;

    // List parameters.
    for (query, code) in [
        ("?limit=0", "invalid_field"),
        ("?limit=101", "invalid_field"),
        ("?limit=abc", "invalid_field"),
        ("?cursor=zz", "invalid_field"),
        ("?cursor=", "invalid_field"),
        ("?cursor=6162", "invalid_field"),
        ("?color=red", "invalid_query"),
    ] {
        let res = command(
            &app,
            "GET",
            &format!("/v1/users/{b}/followers{query}"),
            Some(&ta),
        )
        .await;
        expect_error(res, StatusCode::BAD_REQUEST, code).await;
    }
    assert_eq!(follow_event_count(&app).await, 0);
    app.stop().await;
}

async fn routes_require_a_token(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice"]).await;
    let a = u[0].0;
    for (method, which) in [
        ("PUT", "follow"),
        ("DELETE", "follow"),
        ("PUT", "block"),
        ("DELETE", "block"),
        ("GET", "followers"),
        ("GET", "following"),
    ] {
        let path = format!("/v1/users/{a}/{which}");
        let res = command(&app, method, &path, None).await;
        expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let res = command(&app, method, &path, Some("not.a.token")).await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    app.stop().await;
}

async fn unknown_or_deactivated_targets_are_not_found(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "carol"]).await;
    let ((_, ta), (c, tc)) = (u[0].clone(), u[1].clone());
    let nobody = Uuid::now_v7();
    for (method, which) in [
        ("PUT", "follow"),
        ("PUT", "block"),
        ("GET", "followers"),
        ("GET", "following"),
    ] {
        let res = command(
            &app,
            method,
            &format!("/v1/users/{nobody}/{which}"),
            Some(&ta),
        )
        .await;
        expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Ending a relationship needs no live target: nothing to end is a no-op.
    for which in ["follow", "block"] {
        let res = command(
            &app,
            "DELETE",
            &format!("/v1/users/{nobody}/{which}"),
            Some(&ta),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "DELETE {which} of nobody");
    }

    // A follow and a block made before the deactivation can still be ended afterwards.
    ok(&app, "PUT", &format!("/v1/users/{c}/block"), &ta).await;
    deactivate(&app, &tc).await;
    caught_up(&app, "user_directory", Domain::User).await;
    for (method, which) in [
        ("PUT", "follow"),
        ("PUT", "block"),
        ("GET", "followers"),
        ("GET", "following"),
    ] {
        let res = command(&app, method, &format!("/v1/users/{c}/{which}"), Some(&ta)).await;
        expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    ok(&app, "DELETE", &format!("/v1/users/{c}/block"), &ta).await;
    // The block and its lifting; nothing else was appended.
    assert_eq!(follow_event_count(&app).await, 2);
    app.stop().await;
}

/// The "does a block exist between a and b" fact, over the read models: either direction,
/// only while the block is in effect.
async fn block_fact_answers_both_ways(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob", "carol"]).await;
    let ((a, ta), (b, _), (c, _)) = (u[0].clone(), u[1].clone(), u[2].clone());
    let facts = app.read_models();

    ok(&app, "PUT", &format!("/v1/users/{b}/block"), &ta).await;
    caught_up(&app, "notification", Domain::Follow).await;
    assert!(facts.block_between(a, b).await.unwrap());
    assert!(facts.block_between(b, a).await.unwrap());
    assert!(!facts.block_between(a, c).await.unwrap());

    ok(&app, "DELETE", &format!("/v1/users/{b}/block"), &ta).await;
    caught_up(&app, "notification", Domain::Follow).await;
    assert!(!facts.block_between(a, b).await.unwrap());
    assert!(!facts.block_between(b, a).await.unwrap());
    app.stop().await;
}

async fn follow_across_a_block_is_refused_both_ways(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((a, ta), (b, tb)) = (u[0].clone(), u[1].clone());

    ok(&app, "PUT", &format!("/v1/users/{b}/block"), &ta).await;
    let res = command(&app, "PUT", &format!("/v1/users/{a}/follow"), Some(&tb)).await;
    let blocked = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "blocked").await;
    let res = command(&app, "PUT", &format!("/v1/users/{b}/follow"), Some(&ta)).await;
    let blocking = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "blocked").await;
    // The blocked user learns nothing the blocker would not.
    assert_eq!(blocked, blocking);

    // Blocking twice appends nothing; the blocked user cannot lift the block.
    let (v, pos) = ok(&app, "PUT", &format!("/v1/users/{b}/block"), &ta).await;
    assert_eq!((v, pos), (1, None));
    let (v, pos) = ok(&app, "DELETE", &format!("/v1/users/{a}/block"), &tb).await;
    assert_eq!((v, pos), (1, None));
    let res = command(&app, "PUT", &format!("/v1/users/{a}/follow"), Some(&tb)).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "blocked").await;

    // After the blocker lifts it, following works again.
    let (v, pos) = ok(&app, "DELETE", &format!("/v1/users/{b}/block"), &ta).await;
    assert_eq!(v, 2);
    assert!(pos.is_some());
    assert_eq!(follow(&app, &tb, a).await.0, 3);
    assert_eq!(profile_counts(&app, a).await, (1, 0));
    app.stop().await;
}

async fn block_removes_follows_and_unblock_does_not_restore_them(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob", "carol"]).await;
    let ((a, ta), (b, tb), (c, tc)) = (u[0].clone(), u[1].clone(), u[2].clone());
    follow(&app, &ta, b).await;
    follow(&app, &tb, a).await;
    follow(&app, &tc, a).await;
    follow(&app, &tc, b).await;
    assert_eq!(profile_counts(&app, a).await, (2, 1));
    assert_eq!(profile_counts(&app, b).await, (2, 1));

    let (v, pos) = ok(&app, "PUT", &format!("/v1/users/{a}/block"), &tb).await;
    assert_eq!(v, 5, "two follows, two unfollows, one block");
    assert!(pos.is_some());
    assert_eq!(ids(&app, &ta, a, "followers").await, vec![c]);
    assert!(ids(&app, &ta, a, "following").await.is_empty());
    assert_eq!(ids(&app, &ta, b, "followers").await, vec![c]);
    assert!(ids(&app, &ta, b, "following").await.is_empty());
    assert_eq!(profile_counts(&app, a).await, (1, 0));
    assert_eq!(profile_counts(&app, b).await, (1, 0));
    // The third user's follows are untouched.
    let mut of_c = ids(&app, &ta, c, "following").await;
    of_c.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(of_c, expected);

    let (v, _) = ok(&app, "DELETE", &format!("/v1/users/{a}/block"), &tb).await;
    assert_eq!(v, 6);
    assert_eq!(ids(&app, &ta, a, "followers").await, vec![c]);
    assert!(ids(&app, &ta, a, "following").await.is_empty());
    assert_eq!(profile_counts(&app, a).await, (1, 0));
    assert_eq!(profile_counts(&app, b).await, (1, 0));
    app.stop().await;
}

async fn lists_paginate_with_a_cursor(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["star", "reader"]).await;
    let ((star, _), (_, token)) = (u[0].clone(), u[1].clone());
    // Followers registered directly (no sessions needed), each following `star`.
    let follows = commands(&app);
    let ctx = CommandContext::new(None, None);
    let mut fans = Vec::new();
    for i in 0..25 {
        let (id, _) = app.register(&format!("fan_{i:02}")).await;
        fans.push(id);
    }
    caught_up(&app, "user_directory", Domain::User).await;
    for fan in &fans {
        follows.follow(&ctx, *fan, star).await.unwrap();
    }

    // Default page size is 20.
    let first = page(&app, &token, star, "followers", "").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 20);
    assert!(first["next_cursor"].is_string());

    let mut seen = Vec::new();
    let mut times = Vec::new();
    let mut query = "?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let p = page(&app, &token, star, "followers", &query).await;
        pages += 1;
        for item in p["items"].as_array().unwrap() {
            seen.push(item["user_id"].as_str().unwrap().parse::<Uuid>().unwrap());
            times.push(item["followed_at"].as_str().unwrap().to_owned());
            assert!(item["username"].as_str().unwrap().starts_with("fan_"));
        }
        match p["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    // Newest first: the last fan to follow comes first.
    let mut newest_first = fans.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert!(times.windows(2).all(|w| w[0] >= w[1]));

    // The fans' `following` lists hold the star.
    assert_eq!(ids(&app, &token, fans[0], "following").await, vec![star]);
    assert_eq!(profile_counts(&app, star).await, (25, 0));
    app.stop().await;
}

async fn deactivation_policy_removes_the_users_edges(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob", "carol", "dave"]).await;
    let ((a, ta), (b, tb), (c, tc), (d, td)) =
        (u[0].clone(), u[1].clone(), u[2].clone(), u[3].clone());
    follow(&app, &ta, b).await;
    follow(&app, &tb, a).await;
    follow(&app, &tc, b).await;
    follow(&app, &tb, d).await;
    follow(&app, &ta, c).await;
    ok(&app, "PUT", &format!("/v1/users/{b}/block"), &td).await;
    assert_eq!(profile_counts(&app, a).await, (1, 2));

    deactivate(&app, &tb).await;
    // Wait on the condition: the policy has handled the user stream up to its head, then the
    // graph has applied what the policy appended.
    let head = app.db.store.head(Domain::User).await.unwrap();
    let caught = Checkpoints::default()
        .wait_for(
            &app.db.any,
            POLICY_NAME,
            Domain::User,
            head,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(caught, Caught::Up);
    caught_up(&app, "follow_graph", Domain::Follow).await;

    assert_eq!(profile_counts(&app, a).await, (0, 1));
    assert_eq!(profile_counts(&app, c).await, (1, 0));
    assert_eq!(profile_counts(&app, d).await, (0, 0));
    assert_eq!(ids(&app, &ta, a, "following").await, vec![c]);
    assert!(ids(&app, &ta, a, "followers").await.is_empty());
    assert!(nova_queries::follow::edges_of(&app.db.any, b)
        .await
        .unwrap()
        .is_empty());

    // The unfollows name the reason and point back at the deactivation.
    let user_events = app
        .db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                aggregate_id: Some(b),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deactivated = user_events
        .iter()
        .find(|e| e.event_type == "deactivated")
        .unwrap();
    let follow_events = app
        .db
        .store
        .read(
            Domain::Follow,
            &ReadFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let removed: Vec<_> = follow_events
        .iter()
        .filter(|e| e.payload["reason"] == "deactivated")
        .collect();
    assert_eq!(
        removed.len(),
        3,
        "a→b, b→a, c→b; b→d had already ended by the block"
    );
    for e in removed {
        assert_eq!(e.metadata.causation_id, Some(deactivated.event_id));
        assert_eq!(
            e.metadata.correlation_id,
            deactivated.metadata.correlation_id
        );
    }
    // Between the remaining users, following goes on as before.
    follow(&app, &tc, a).await;
    assert_eq!(profile_counts(&app, a).await, (1, 1));
    app.stop().await;
}

async fn policy_handling_an_event_twice_appends_nothing(engine: Engine) {
    let app = spawn(engine).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((a, ta), (b, tb)) = (u[0].clone(), u[1].clone());
    follow(&app, &ta, b).await;
    follow(&app, &tb, a).await;
    deactivate(&app, &tb).await;

    let user_events = app
        .db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                aggregate_id: Some(b),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deactivated = user_events
        .iter()
        .find(|e| e.event_type == "deactivated")
        .unwrap()
        .clone();
    // A second instance of the policy (as another process would run), handling the same event
    // as the live one, and then again.
    let checkpoints = Checkpoints::default();
    let policy = FollowOnUserDeactivated::new(
        commands(&app),
        app.read_models(),
        CatchUp::new(app.db.any.clone(), checkpoints.clone()),
    );
    policy.handle(&deactivated).await.unwrap();
    caught_up(&app, "follow_graph", Domain::Follow).await;
    let head = app.db.store.head(Domain::Follow).await.unwrap();
    assert_eq!(head, 4, "two follows, two removals");
    policy.handle(&deactivated).await.unwrap();
    policy.handle(&deactivated).await.unwrap();
    assert_eq!(app.db.store.head(Domain::Follow).await.unwrap(), head);
    assert_eq!(profile_counts(&app, a).await, (0, 0));

    // Redelivery of the whole user stream through the runtime (as after a lost checkpoint).
    let mut app = app;
    app.stop_server().await;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(POLICY_NAME)
        .execute(&app.db.any)
        .await
        .unwrap();
    nova_policies::react_all(&policy, &app.db.store, &app.db.any, &checkpoints)
        .await
        .unwrap();
    let handled = checkpoints
        .load(&app.db.any, POLICY_NAME, Domain::User)
        .await
        .unwrap();
    assert_eq!(handled, app.db.store.head(Domain::User).await.unwrap());
    assert_eq!(app.db.store.head(Domain::Follow).await.unwrap(), head);
    app.stop().await;
}

async fn rebuild_equals_live(engine: Engine) {
    let app = spawn(engine).await;
    let names: Vec<String> = (0..6).map(|i| format!("user_{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let u = users(&app, &names).await;
    // A mix of follows, unfollows, blocks, unblocks and a deactivation.
    for (i, (_, token)) in u.iter().enumerate() {
        for (j, (other, _)) in u.iter().enumerate() {
            if i != j && (i + j) % 3 != 0 {
                follow(&app, token, *other).await;
            }
        }
    }
    ok(
        &app,
        "DELETE",
        &format!("/v1/users/{}/follow", u[1].0),
        &u[0].1,
    )
    .await;
    ok(&app, "PUT", &format!("/v1/users/{}/block", u[3].0), &u[2].1).await;
    ok(
        &app,
        "DELETE",
        &format!("/v1/users/{}/block", u[3].0),
        &u[2].1,
    )
    .await;
    ok(&app, "PUT", &format!("/v1/users/{}/block", u[4].0), &u[5].1).await;
    deactivate(&app, &u[0].1).await;
    let head = app.db.store.head(Domain::User).await.unwrap();
    let caught = Checkpoints::default()
        .wait_for(
            &app.db.any,
            POLICY_NAME,
            Domain::User,
            head,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(caught, Caught::Up);
    caught_up(&app, "follow_graph", Domain::Follow).await;
    let live = graph_rows(&app, "").await;
    assert!(!live.0.is_empty());

    // A from-scratch replay into a copy beside the live tables.
    let copy = FollowGraph::default().shadow("_replay").unwrap();
    nova_projections::schema::create_copies(
        &app.db.any,
        &FollowGraph::default().tables(),
        "_replay",
    )
    .await
    .unwrap();
    nova_projections::catch_up(&*copy, &app.db.store, &app.db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(graph_rows(&app, "_replay").await, live);

    // The zero-downtime rebuild swaps in an equal copy, with the live projector running.
    let report = nova_projections::rebuild::rebuild(
        nova_projections::rebuild::find("follow_graph").unwrap(),
        &app.db.store,
        &app.db.any,
        &Checkpoints::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.projection, "follow_graph");
    assert_eq!(graph_rows(&app, "").await, live);
    // The swapped-in tables keep serving.
    let id = u[1].0.to_string();
    let expected = live.1.iter().find(|r| r.0 == id).map(|r| (r.1, r.2));
    assert_eq!(Some(profile_counts(&app, u[1].0).await), expected);
    app.stop().await;
}

async fn lists_skip_deactivated_users(engine: Engine) {
    let mut app = spawn(engine).await;
    let u = users(&app, &["alice", "bob", "carol"]).await;
    let ((a, ta), (b, tb), (c, tc)) = (u[0].clone(), u[1].clone(), u[2].clone());
    follow(&app, &tb, a).await;
    follow(&app, &tc, a).await;
    follow(&app, &ta, b).await;
    caught_up(&app, "follow_graph", Domain::Follow).await;

    // Deactivate bob with no policy running: his edges are still in the graph, but the lists
    // (names from the directory) no longer show him.
    app.stop_server().await;
    let users = app.user_commands();
    let who = users.authenticate(&tb).await.unwrap();
    users
        .deactivate(&CommandContext::new(None, Some(b)), who)
        .await
        .unwrap();
    nova_projections::catch_up(
        &nova_projections::user_directory::UserDirectory::default(),
        &app.db.store,
        &app.db.any,
        &Checkpoints::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        nova_queries::follow::edges_of(&app.db.any, b)
            .await
            .unwrap()
            .len(),
        2
    );
    let page =
        nova_queries::follow::followers(&app.db.any, a, &nova_queries::PageRequest::first(20))
            .await
            .unwrap();
    let listed: Vec<Uuid> = page.items.iter().map(|i| i.user_id).collect();
    assert_eq!(listed, vec![c]);
    let page =
        nova_queries::follow::following(&app.db.any, a, &nova_queries::PageRequest::first(20))
            .await
            .unwrap();
    assert!(page.items.is_empty());
    app.stop().await;
}

async fn deactivation_policy_over_jetstream(engine: Engine) {
    // Delivered through a real (private) nats-server: the graph and the policy consume
    // JetStream durable consumers.
    let nats = nova_infra::testing::PrivateNats::start();
    let app = spawn_with_nats(engine, nats.url()).await;
    let u = users(&app, &["alice", "bob"]).await;
    let ((a, ta), (b, tb)) = (u[0].clone(), u[1].clone());
    follow(&app, &ta, b).await;
    follow(&app, &tb, a).await;
    assert_eq!(profile_counts(&app, a).await, (1, 1));

    deactivate(&app, &tb).await;
    let head = app.db.store.head(Domain::User).await.unwrap();
    let caught = Checkpoints::default()
        .wait_for(
            &app.db.any,
            POLICY_NAME,
            Domain::User,
            head,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(caught, Caught::Up);
    caught_up(&app, "follow_graph", Domain::Follow).await;
    assert_eq!(profile_counts(&app, a).await, (0, 0));
    assert_eq!(app.db.store.head(Domain::Follow).await.unwrap(), 4);
    app.stop().await;
}
