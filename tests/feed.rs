//! End-to-end tests of `GET /v1/feed` (API.md "Read views"), over real HTTP, on both engines.
//!
//! Users register through the API (so they have tokens); follows and posts are appended to the
//! store directly as events, so these tests do not depend on the follow and post routes.

mod common;

use chrono::{Duration, Utc};
use common::*;
use nova_event_schemas::follow::{self, FollowEvent, Followed};
use nova_event_schemas::post::{PostCreated, PostEvent};
use nova_event_schemas::EventMetadata;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

on_both_backends!(
    feed_requires_a_token,
    bad_query_values_are_400,
    pages_through_the_feed,
    read_your_writes_with_min_position,
);

/// Appends `follower` follows `followee`; returns the follow domain's position.
async fn follow(app: &TestApp, follower: Uuid, followee: Uuid) -> i64 {
    app.db
        .store
        .append(
            vec![(
                follow::relationship_id(follower, followee),
                "relationship",
                0,
                vec![FollowEvent::Followed(Followed {
                    follower_id: follower,
                    followee_id: followee,
                    followed_at: Utc::now(),
                })],
            )],
            EventMetadata::default(),
        )
        .await
        .unwrap()
        .last_position
}

/// Appends `count` posts by `author`, one a millisecond apart (oldest first); returns their
/// ids and the post domain's position.
async fn posts(app: &TestApp, author: Uuid, count: usize) -> (Vec<Uuid>, i64) {
    let start = Utc::now() - Duration::seconds(10);
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for i in 0..count {
        let post_id = Uuid::now_v7();
        ids.push(post_id);
        streams.push((
            post_id,
            "post",
            0,
            vec![PostEvent::Created(PostCreated {
                post_id,
                author_id: author,
                content: format!("post {i}"),
                media_urls: vec![],
                mentions: vec![],
                created_at: start + Duration::milliseconds(i as i64),
            })],
        ));
    }
    let pos = app
        .db
        .store
        .append(streams, EventMetadata::default())
        .await
        .unwrap()
        .last_position;
    (ids, pos)
}

async fn get_feed(app: &TestApp, token: &str, query: &str, min: Option<String>) -> Value {
    let mut req = app.get(&format!("/v1/feed{query}")).bearer_auth(token);
    if let Some(m) = min {
        req = req.header("X-Nova-Min-Position", m);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["post_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn feed_requires_a_token(engine: Engine) {
    let app = spawn(engine).await;
    let res = app.get("/v1/feed").send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .get("/v1/feed")
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // With a token: an empty feed, in the list shape of API.md.
    let (_, token, _) = app.user("feed_reader").await;
    let page = get_feed(&app, &token, "", None).await;
    assert_eq!(page["items"], serde_json::json!([]));
    assert!(page.get("next_cursor").is_some_and(Value::is_null));

    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/feed"]["get"].is_object());
    app.stop().await;
}

async fn bad_query_values_are_400(engine: Engine) {
    let app = spawn(engine).await;
    let (_, token, _) = app.user("feed_bad").await;
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=abc",
        "?limit=-1",
        "?limit=",
    ] {
        let res = app
            .get(&format!("/v1/feed{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(err["details"]["field"], "limit", "{query}");
    }
    for cursor in ["nope", "00", "zz", "7a7a7c7a7a", &"ab".repeat(200)] {
        let res = app
            .get(&format!("/v1/feed?cursor={cursor}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let err = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(err["details"]["field"], "cursor", "{cursor}");
    }
    let res = app
        .get("/v1/feed")
        .bearer_auth(&token)
        .header("X-Nova-Min-Position", "post:abc")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;
    // The limits themselves are fine.
    for query in ["?limit=1", "?limit=100"] {
        get_feed(&app, &token, query, None).await;
    }
    app.stop().await;
}

async fn pages_through_the_feed(engine: Engine) {
    let app = spawn(engine).await;
    let (reader, token, _) = app.user("feed_pager").await;
    let (author, _, _) = app.user("feed_author").await;
    let (stranger, _, _) = app.user("feed_stranger").await;
    let f = follow(&app, reader, author).await;
    get_feed(&app, &token, "", Some(format!("follow:{f}"))).await;
    let (theirs, _) = posts(&app, author, 25).await;
    posts(&app, stranger, 3).await;
    let (mine, pos) = posts(&app, reader, 2).await;

    // One page with everything: newest first by (created_at, post_id).
    let mut expected: Vec<(String, Uuid)> = Vec::new();
    let first = get_feed(&app, &token, "?limit=100", Some(format!("post:{pos}"))).await;
    for item in first["items"].as_array().unwrap() {
        expected.push((
            item["created_at"].as_str().unwrap().to_owned(),
            item["post_id"].as_str().unwrap().parse().unwrap(),
        ));
    }
    assert_eq!(
        expected.len(),
        27,
        "25 followed + 2 own, none of the stranger's"
    );
    let mut sorted = expected.clone();
    sorted.sort_by(|a, b| (&b.0, b.1.to_string()).cmp(&(&a.0, a.1.to_string())));
    assert_eq!(expected, sorted, "newest first");
    let all: Vec<Uuid> = expected.iter().map(|e| e.1).collect();
    for id in theirs.iter().chain(&mine) {
        assert!(all.contains(id));
    }
    assert!(first["next_cursor"].is_null());

    // Default limit 20, then pages of 10 following the cursors.
    let default = get_feed(&app, &token, "", None).await;
    assert_eq!(ids(&default), all[..20]);
    assert!(default["next_cursor"].is_string());
    let mut seen = Vec::new();
    let mut query = "?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let page = get_feed(&app, &token, &query, None).await;
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);
    let item = &default["items"][0];
    for key in [
        "post_id",
        "author_id",
        "content",
        "media_urls",
        "created_at",
        "edited_at",
    ] {
        assert!(item.get(key).is_some(), "{key} in {item}");
    }
    app.stop().await;
}

async fn read_your_writes_with_min_position(engine: Engine) {
    let app = spawn(engine).await;
    let (reader, token, _) = app.user("feed_ryw").await;
    let (author, author_token, _) = app.user("feed_ryw_author").await;
    let f = follow(&app, reader, author).await;
    get_feed(&app, &token, "", Some(format!("follow:{f}"))).await;
    for round in 0..5 {
        let (ids_, pos) = posts(&app, author, 1).await;
        let page = get_feed(&app, &token, "", Some(format!("post:{pos}"))).await;
        assert!(ids(&page).contains(&ids_[0]), "round {round}: {page}");
        assert_eq!(ids(&page).len(), round + 1);
    }
    // The author's deactivation (a user-domain write) hides their posts once waited for.
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&author_token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let pos = position(&res);
    let page = get_feed(&app, &token, "", Some(pos)).await;
    assert_eq!(ids(&page), Vec::<Uuid>::new());
    app.stop().await;
}
