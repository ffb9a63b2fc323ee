//! End-to-end tests of the Content routes (API.md, domain `post`), over real HTTP, on both
//! engines: posts, edits, deletion, comments, likes, shares, bookmarks, mentions, pagination,
//! the deactivation policy, and a rebuild of `post_view` that equals the live view.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::post::PostEvent;
use nova_event_schemas::Domain;
use nova_infra::db::{Database, Engine};
use nova_policies::Policy;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    post_lifecycle,
    routes_need_a_token,
    bad_input_is_rejected,
    comments,
    likes_and_shares_count,
    mentions_are_resolved,
    bookmarks_with_collections,
    author_posts_are_paginated,
    deactivation_hides_the_authors_posts,
    deactivation_over_jetstream,
    rebuild_equals_live,
    a_corrupt_row_surfaces,
    retries_after_a_lost_answer_append_once,
);

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// GET as `token`, after the view reached `pos`; asserts 200 and returns the body.
async fn read(app: &TestApp, token: &str, path: &str, pos: &str) -> Value {
    let res = app
        .get(path)
        .bearer_auth(token)
        .header("X-Nova-Min-Position", pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().await.unwrap()
}

/// A GET after `pos` expected to fail with `status`/`code`.
async fn read_err(
    app: &TestApp,
    token: &str,
    path: &str,
    pos: &str,
    status: StatusCode,
    code: &str,
) {
    let res = app
        .get(path)
        .bearer_auth(token)
        .header("X-Nova-Min-Position", pos)
        .send()
        .await
        .unwrap();
    expect_error(res, status, code).await;
}

/// Registers and logs in a user whose directory entry is already projected (so that mentions
/// of them resolve); returns (id, access token).
async fn member(app: &TestApp, name: &str) -> (Uuid, String) {
    let (id, _, _) = app.user(name).await;
    let res = app.login(name, PASSWORD).await;
    let pos = position(&res);
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (id, token)
}

/// Creates a post; returns (id, position).
async fn create(app: &TestApp, token: &str, body: Value) -> (Uuid, String) {
    let res = call(app, Method::POST, "/v1/posts", token, Some(body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    assert!(pos.starts_with("post:"), "{pos}");
    let v: Value = res.json().await.unwrap();
    (v["post_id"].as_str().unwrap().parse().unwrap(), pos)
}

/// Sends a command expected to succeed with `status`; returns its position, if it appended.
async fn ok(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    status: StatusCode,
) -> Option<String> {
    let res = call(app, method.clone(), path, token, body).await;
    assert_eq!(res.status(), status, "{method} {path}");
    res.headers()
        .get("x-nova-position")
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn post_events(db: &Database, post_id: Uuid) -> Vec<PostEvent> {
    db.store
        .load(Domain::Post, post_id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.decode::<PostEvent>().unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["post_id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

async fn post_lifecycle(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, a) = member(&app, "alice").await;
    let (_, b) = member(&app, "bob").await;

    let (id, pos) = create(
        &app,
        &a,
        json!({"content": "  first post  ", "media_urls": ["https://example.com/a.png"]}),
    )
    .await;
    assert_eq!(id.get_version_num(), 7);
    let p = read(&app, &b, &format!("/v1/posts/{id}"), &pos).await;
    assert_eq!(p["post_id"], id.to_string());
    assert_eq!(p["author_id"], alice.to_string());
    assert_eq!(p["content"], "first post");
    assert_eq!(p["media_urls"], json!(["https://example.com/a.png"]));
    assert_eq!(p["edited_at"], Value::Null);
    assert_eq!(p["like_count"], 0);
    assert_eq!(p["comment_count"], 0);
    assert_eq!(p["share_count"], 0);
    assert!(p["created_at"].as_str().unwrap().ends_with('Z'));

    // Only the author edits or deletes.
    let path = format!("/v1/posts/{id}");
    let res = call(
        &app,
        Method::PATCH,
        &path,
        &b,
        Some(json!({"content": "mine"})),
    )
    .await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = call(&app, Method::DELETE, &path, &b, None).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    // Edit content only: media stay. Edit media only: content stays.
    let pos = ok(
        &app,
        Method::PATCH,
        &path,
        &a,
        Some(json!({"content": "edited"})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let p = read(&app, &b, &path, &pos).await;
    assert_eq!(p["content"], "edited");
    assert_eq!(p["media_urls"], json!(["https://example.com/a.png"]));
    assert!(p["edited_at"].as_str().is_some());
    let pos = ok(
        &app,
        Method::PATCH,
        &path,
        &a,
        Some(json!({"media_urls": []})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let p = read(&app, &b, &path, &pos).await;
    assert_eq!(p["content"], "edited");
    assert_eq!(p["media_urls"], json!([]));
    // The same edit again changes nothing.
    assert_eq!(
        ok(
            &app,
            Method::PATCH,
            &path,
            &a,
            Some(json!({"content": "edited"})),
            StatusCode::OK
        )
        .await,
        None
    );
    // The edit history is kept in the stream.
    let events = post_events(&app.db, id).await;
    assert!(
        matches!(&events[..], [PostEvent::Created(c), PostEvent::Edited(e1), PostEvent::Edited(e2)]
        if c.content == "first post" && e1.content == "edited" && e2.media_urls.is_empty())
    );

    // Delete: gone from reads; deleting again is fine and appends nothing; edits are refused.
    let pos = ok(&app, Method::DELETE, &path, &a, None, StatusCode::OK)
        .await
        .unwrap();
    read_err(&app, &b, &path, &pos, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        ok(&app, Method::DELETE, &path, &a, None, StatusCode::OK).await,
        None
    );
    let res = call(
        &app,
        Method::PATCH,
        &path,
        &a,
        Some(json!({"content": "back"})),
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "post_deleted").await;
    assert_eq!(post_events(&app.db, id).await.len(), 4);

    // A retried create with the same Idempotency-Key creates one post.
    let send = || {
        app.post("/v1/posts")
            .bearer_auth(&a)
            .header("Idempotency-Key", "post-1")
            .json(&json!({"content": "once"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_pos = position(&first);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(position(&again), first_pos);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let head = app.db.store.head(Domain::Post).await.unwrap();
    assert_eq!(
        format!("post:{head}"),
        first_pos,
        "the retry appended nothing"
    );

    // Unknown and malformed ids.
    let unknown = format!("/v1/posts/{}", Uuid::now_v7());
    read_err(&app, &b, &unknown, &pos, StatusCode::NOT_FOUND, "not_found").await;
    let res = call(
        &app,
        Method::PATCH,
        &unknown,
        &a,
        Some(json!({"content": "x"})),
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = call(&app, Method::DELETE, &unknown, &a, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = call(&app, Method::GET, "/v1/posts/not-a-uuid", &a, None).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_path").await;
    let res = call(&app, Method::PUT, "/v1/posts/123/like", &a, None).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_path").await;
    app.stop().await;
}

async fn routes_need_a_token(engine: Engine) {
    let app = spawn(engine).await;
    let id = Uuid::now_v7();
    let routes = [
        (Method::POST, "/v1/posts".to_owned()),
        (Method::GET, format!("/v1/posts/{id}")),
        (Method::PATCH, format!("/v1/posts/{id}")),
        (Method::DELETE, format!("/v1/posts/{id}")),
        (Method::GET, format!("/v1/users/{id}/posts")),
        (Method::POST, format!("/v1/posts/{id}/comments")),
        (Method::GET, format!("/v1/posts/{id}/comments")),
        (Method::DELETE, format!("/v1/posts/{id}/comments/{id}")),
        (Method::PUT, format!("/v1/posts/{id}/like")),
        (Method::DELETE, format!("/v1/posts/{id}/like")),
        (Method::POST, format!("/v1/posts/{id}/shares")),
        (Method::PUT, format!("/v1/posts/{id}/bookmark")),
        (Method::DELETE, format!("/v1/posts/{id}/bookmark")),
        (Method::GET, "/v1/bookmarks".to_owned()),
    ];
    for (method, path) in routes {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .json(&json!({"content": "x"}))
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let res = app
            .client
            .request(method, app.url(&path))
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    // The routes are in the OpenAPI document.
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/posts",
        "/v1/posts/{id}",
        "/v1/users/{id}/posts",
        "/v1/posts/{id}/comments",
        "/v1/posts/{id}/comments/{comment_id}",
        "/v1/posts/{id}/like",
        "/v1/posts/{id}/shares",
        "/v1/posts/{id}/bookmark",
        "/v1/bookmarks",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
    app.stop().await;
}

async fn bad_input_is_rejected(engine: Engine) {
    let app = spawn(engine).await;
    let (_, a) = member(&app, "alice").await;
    let field = |body: Value| {
        let app = &app;
        let a = a.clone();
        async move {
            let res = call(app, Method::POST, "/v1/posts", &a, Some(body.clone())).await;
            let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
            e["details"]["field"].as_str().unwrap_or("").to_owned()
        }
    };
    assert_eq!(field(json!({"content": ""})).await, "content");
    assert_eq!(field(json!({"content": " \n\t "})).await, "content");
    assert_eq!(field(json!({"content": "x".repeat(5001)})).await, "content");
    let five = vec!["https://a.io/1"; 5];
    assert_eq!(
        field(json!({"content": "ok", "media_urls": five})).await,
        "media_urls"
    );
    assert_eq!(
        field(json!({"content": "ok", "media_urls": ["ftp://a.io/1"]})).await,
        "media_urls"
    );
    assert_eq!(
        field(json!({"content": "ok", "media_urls": ["not a url"]})).await,
        "media_urls"
    );
    let long = format!("https://a.io/{}", "x".repeat(2048));
    assert_eq!(
        field(json!({"content": "ok", "media_urls": [long]})).await,
        "media_urls"
    );
    assert_eq!(field(json!({"content": 5})).await, "content");
    assert_eq!(field(json!({})).await, "content");
    assert_eq!(
        field(json!({"content": "ok", "media_urls": "https://a.io"})).await,
        "media_urls"
    );
    assert_eq!(field(json!({"content": "ok", "extra": 1})).await, "extra");
    // 5000 characters (multi-byte ones count as one) and 4 media are fine.
    let four = vec!["http://a.io/1"; 4];
    create(
        &app,
        &a,
        json!({"content": "é".repeat(5000), "media_urls": four}),
    )
    .await;

    // Not a JSON object.
    for body in ["[1, 2]", "\"text\"", "{\"content\": ", ""] {
        let res = app
            .post("/v1/posts")
            .bearer_auth(&a)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_json").await;
    }

    let (id, pos) = create(&app, &a, json!({"content": "target"})).await;
    let comments = format!("/v1/posts/{id}/comments");
    for content in [json!(""), json!("x".repeat(2001))] {
        let res = call(
            &app,
            Method::POST,
            &comments,
            &a,
            Some(json!({"content": content})),
        )
        .await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    let res = call(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{id}"),
        &a,
        Some(json!({"content": ""})),
    )
    .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let bookmark = format!("/v1/posts/{id}/bookmark");
    for collection in [json!(""), json!("c".repeat(65)), json!(3)] {
        let res = call(
            &app,
            Method::PUT,
            &bookmark,
            &a,
            Some(json!({"collection": collection})),
        )
        .await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    let res = app
        .client
        .put(app.url(&bookmark))
        .bearer_auth(&a)
        .body("[\"art\"]")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_json").await;

    // List parameters.
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=zz",
        "cursor=00",
    ] {
        for list in [
            format!("/v1/users/{id}/posts"),
            comments.clone(),
            "/v1/bookmarks".into(),
        ] {
            let path = format!("{list}?{query}");
            let res = app
                .get(&path)
                .bearer_auth(&a)
                .header("X-Nova-Min-Position", &pos)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        }
    }
    app.stop().await;
}

async fn comments(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, a) = member(&app, "alice").await;
    let (bob, b) = member(&app, "bob").await;
    let (_, c) = member(&app, "carol").await;
    let (id, _) = create(&app, &a, json!({"content": "discuss"})).await;
    let path = format!("/v1/posts/{id}/comments");

    let mut comment_ids = Vec::new();
    let mut pos = String::new();
    for (token, text) in [(&b, "one"), (&c, "two"), (&a, "three")] {
        let res = call(
            &app,
            Method::POST,
            &path,
            token,
            Some(json!({"content": text})),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        pos = position(&res);
        let v: Value = res.json().await.unwrap();
        comment_ids.push(v["comment_id"].as_str().unwrap().to_owned());
    }
    let p = read(&app, &b, &format!("/v1/posts/{id}"), &pos).await;
    assert_eq!(p["comment_count"], 3);

    // Oldest first, two per page.
    let page1 = read(&app, &c, &format!("{path}?limit=2"), &pos).await;
    let items = page1["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["content"], "one");
    assert_eq!(items[0]["author_id"], bob.to_string());
    assert_eq!(items[0]["post_id"], id.to_string());
    assert_eq!(items[0]["comment_id"], comment_ids[0]);
    assert!(items[0]["created_at"].as_str().is_some());
    assert_eq!(items[1]["content"], "two");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = read(&app, &c, &format!("{path}?limit=2&cursor={cursor}"), &pos).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["content"], "three");
    assert_eq!(page2["items"][0]["author_id"], alice.to_string());
    assert_eq!(page2["next_cursor"], Value::Null);

    // Carol may not delete Bob's comment; Bob may; Alice (post author) may delete Carol's.
    let bobs = format!("{path}/{}", comment_ids[0]);
    let res = call(&app, Method::DELETE, &bobs, &c, None).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    ok(&app, Method::DELETE, &bobs, &b, None, StatusCode::OK)
        .await
        .unwrap();
    assert_eq!(
        ok(&app, Method::DELETE, &bobs, &b, None, StatusCode::OK).await,
        None
    );
    let pos = ok(
        &app,
        Method::DELETE,
        &format!("{path}/{}", comment_ids[1]),
        &a,
        None,
        StatusCode::OK,
    )
    .await
    .unwrap();
    let list = read(&app, &b, &path, &pos).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        read(&app, &b, &format!("/v1/posts/{id}"), &pos).await["comment_count"],
        1
    );
    let res = call(
        &app,
        Method::DELETE,
        &format!("{path}/{}", Uuid::now_v7()),
        &a,
        None,
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{}/comments", Uuid::now_v7()),
        &a,
        Some(json!({"content": "x"})),
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;

    // No comments on a deleted post.
    let pos = ok(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{id}"),
        &a,
        None,
        StatusCode::OK,
    )
    .await
    .unwrap();
    let res = call(
        &app,
        Method::POST,
        &path,
        &b,
        Some(json!({"content": "late"})),
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "post_deleted").await;
    read_err(&app, &b, &path, &pos, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

async fn likes_and_shares_count(engine: Engine) {
    let app = spawn(engine).await;
    let (_, a) = member(&app, "alice").await;
    let (bob, b) = member(&app, "bob").await;
    let (_, c) = member(&app, "carol").await;
    let (id, _) = create(&app, &a, json!({"content": "like me"})).await;
    let like = format!("/v1/posts/{id}/like");
    let get = format!("/v1/posts/{id}");

    let pos = ok(&app, Method::PUT, &like, &b, None, StatusCode::OK)
        .await
        .unwrap();
    // Liking twice is one like: nothing appended.
    assert_eq!(
        ok(&app, Method::PUT, &like, &b, None, StatusCode::OK).await,
        None
    );
    assert_eq!(read(&app, &a, &get, &pos).await["like_count"], 1);
    let pos = ok(&app, Method::PUT, &like, &c, None, StatusCode::OK)
        .await
        .unwrap();
    assert_eq!(read(&app, &a, &get, &pos).await["like_count"], 2);
    let pos = ok(&app, Method::DELETE, &like, &c, None, StatusCode::OK)
        .await
        .unwrap();
    assert_eq!(
        ok(&app, Method::DELETE, &like, &c, None, StatusCode::OK).await,
        None
    );
    assert_eq!(read(&app, &a, &get, &pos).await["like_count"], 1);

    // Shares.
    let res = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/shares"),
        &b,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    let v: Value = res.json().await.unwrap();
    assert!(v["share_id"].as_str().unwrap().parse::<Uuid>().is_ok());
    let p = read(&app, &a, &get, &pos).await;
    assert_eq!(p["share_count"], 1);
    // Every share counts, also a second one by someone else.
    let pos = ok(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/shares"),
        &c,
        None,
        StatusCode::CREATED,
    )
    .await
    .unwrap();
    let p = read(&app, &a, &get, &pos).await;
    assert_eq!(p["share_count"], 2);
    let events = post_events(&app.db, id).await;
    assert!(events
        .iter()
        .any(|e| matches!(e, PostEvent::Shared(s) if s.user_id == bob)));

    // Unknown post: 404; deleted post: 422.
    let unknown = Uuid::now_v7();
    for (method, path) in [
        (Method::PUT, format!("/v1/posts/{unknown}/like")),
        (Method::DELETE, format!("/v1/posts/{unknown}/like")),
        (Method::POST, format!("/v1/posts/{unknown}/shares")),
        (Method::PUT, format!("/v1/posts/{unknown}/bookmark")),
    ] {
        let res = call(&app, method, &path, &b, None).await;
        expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    ok(&app, Method::DELETE, &get, &a, None, StatusCode::OK)
        .await
        .unwrap();
    let res = call(&app, Method::PUT, &like, &c, None).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "post_deleted").await;
    let res = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/shares"),
        &c,
        None,
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "post_deleted").await;
    // Taking a like back from a deleted post is allowed.
    ok(&app, Method::DELETE, &like, &b, None, StatusCode::OK)
        .await
        .unwrap();
    app.stop().await;
}

async fn mentions_are_resolved(engine: Engine) {
    let app = spawn(engine).await;
    let (_, a) = member(&app, "alice").await;
    let (bob, _) = member(&app, "bob").await;
    let (carol, c) = member(&app, "carol").await;
    let (dave, d) = member(&app, "dave").await;
    // Dave deactivates: mentions of him stay plain text.
    let res = call(&app, Method::DELETE, "/v1/users/me", &d, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let res = app
        .get(&format!("/v1/users/{dave}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let (id, pos) = create(
        &app,
        &a,
        json!({"content": "hi @Bob and @carol, @BOB again; @dave @nobody mail@bob"}),
    )
    .await;
    let p = read(&app, &c, &format!("/v1/posts/{id}"), &pos).await;
    assert_eq!(p["mentions"], json!([bob.to_string(), carol.to_string()]));
    let events = post_events(&app.db, id).await;
    assert!(matches!(&events[..], [PostEvent::Created(e)] if e.mentions == vec![bob, carol]));

    // An edit recomputes them.
    let pos = ok(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{id}"),
        &a,
        Some(json!({"content": "only @carol"})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let p = read(&app, &c, &format!("/v1/posts/{id}"), &pos).await;
    assert_eq!(p["mentions"], json!([carol.to_string()]));

    // Comments too.
    let res = call(
        &app,
        Method::POST,
        &format!("/v1/posts/{id}/comments"),
        &c,
        Some(json!({"content": "thanks @bob"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    let list = read(&app, &a, &format!("/v1/posts/{id}/comments"), &pos).await;
    assert_eq!(list["items"][0]["mentions"], json!([bob.to_string()]));
    app.stop().await;
}

async fn bookmarks_with_collections(engine: Engine) {
    let app = spawn(engine).await;
    let (_, a) = member(&app, "alice").await;
    let (_, b) = member(&app, "bob").await;
    let (p1, _) = create(&app, &a, json!({"content": "one"})).await;
    let (p2, _) = create(&app, &a, json!({"content": "two"})).await;
    let (p3, _) = create(&app, &a, json!({"content": "three"})).await;

    // No body: the default list. A body: a named collection.
    let res = app
        .client
        .put(app.url(&format!("/v1/posts/{p1}/bookmark")))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    ok(
        &app,
        Method::PUT,
        &format!("/v1/posts/{p2}/bookmark"),
        &b,
        Some(json!({"collection": "art"})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let pos = ok(
        &app,
        Method::PUT,
        &format!("/v1/posts/{p3}/bookmark"),
        &b,
        Some(json!({"collection": null})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    // The same collection again appends nothing.
    assert_eq!(
        ok(
            &app,
            Method::PUT,
            &format!("/v1/posts/{p2}/bookmark"),
            &b,
            Some(json!({"collection": "art"})),
            StatusCode::OK
        )
        .await,
        None
    );

    let all = read(&app, &b, "/v1/bookmarks", &pos).await;
    assert_eq!(ids(&all), [p3, p2, p1].map(|p| p.to_string()));
    assert_eq!(all["items"][1]["collection"], "art");
    assert_eq!(all["items"][0]["collection"], Value::Null);
    assert_eq!(all["items"][0]["post"]["content"], "three");
    assert!(all["items"][0]["bookmarked_at"].as_str().is_some());
    let art = read(&app, &b, "/v1/bookmarks?collection=art", &pos).await;
    assert_eq!(ids(&art), [p2.to_string()]);
    let default = read(&app, &b, "/v1/bookmarks?collection=", &pos).await;
    assert_eq!(ids(&default), [p3, p1].map(|p| p.to_string()));
    // Bookmarks are private to their owner.
    assert_eq!(ids(&read(&app, &a, "/v1/bookmarks", &pos).await).len(), 0);

    // Pagination.
    let page1 = read(&app, &b, "/v1/bookmarks?limit=2", &pos).await;
    assert_eq!(ids(&page1), [p3, p2].map(|p| p.to_string()));
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = read(
        &app,
        &b,
        &format!("/v1/bookmarks?limit=2&cursor={cursor}"),
        &pos,
    )
    .await;
    assert_eq!(ids(&page2), [p1.to_string()]);
    assert_eq!(page2["next_cursor"], Value::Null);

    // Moving p1 into "art" re-bookmarks it (newest now).
    let pos = ok(
        &app,
        Method::PUT,
        &format!("/v1/posts/{p1}/bookmark"),
        &b,
        Some(json!({"collection": "art"})),
        StatusCode::OK,
    )
    .await
    .unwrap();
    let art = read(&app, &b, "/v1/bookmarks?collection=art", &pos).await;
    assert_eq!(ids(&art), [p1, p2].map(|p| p.to_string()));

    // Unbookmark (twice), and a deleted post drops out of the list.
    let path = format!("/v1/posts/{p2}/bookmark");
    ok(&app, Method::DELETE, &path, &b, None, StatusCode::OK)
        .await
        .unwrap();
    assert_eq!(
        ok(&app, Method::DELETE, &path, &b, None, StatusCode::OK).await,
        None
    );
    let pos = ok(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{p3}"),
        &a,
        None,
        StatusCode::OK,
    )
    .await
    .unwrap();
    let all = read(&app, &b, "/v1/bookmarks", &pos).await;
    assert_eq!(ids(&all), [p1.to_string()]);
    let res = call(
        &app,
        Method::PUT,
        &format!("/v1/posts/{p3}/bookmark"),
        &b,
        None,
    )
    .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "post_deleted").await;
    app.stop().await;
}

async fn author_posts_are_paginated(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, a) = member(&app, "alice").await;
    let (bob, b) = member(&app, "bob").await;
    let mut created = Vec::new();
    for i in 0..5 {
        let (id, _) = create(&app, &a, json!({"content": format!("post {i}")})).await;
        created.push(id.to_string());
    }
    // Reads below wait for this, the latest post, so every post is projected.
    let (_, pos) = create(&app, &b, json!({"content": "not alice's"})).await;
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{alice}/posts?limit=2&cursor={c}"),
            None => format!("/v1/users/{alice}/posts?limit=2"),
        };
        let page = read(&app, &b, &path, &pos).await;
        let items = ids(&page);
        assert!(items.len() <= 2);
        seen.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created, "newest first, each once");
    let all = read(&app, &b, &format!("/v1/users/{alice}/posts"), &pos).await;
    assert_eq!(ids(&all), created);
    assert_eq!(all["items"][0]["author_id"], alice.to_string());
    // Bob's one post; an unknown user is a 404, not an empty list.
    let bobs = read(&app, &a, &format!("/v1/users/{bob}/posts"), &pos).await;
    assert_eq!(ids(&bobs).len(), 1);
    read_err(
        &app,
        &a,
        &format!("/v1/users/{}/posts", Uuid::now_v7()),
        &pos,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    app.stop().await;
}

async fn deactivation_hides_the_authors_posts(engine: Engine) {
    let app = spawn(engine).await;
    deactivation_scenario(&app).await;
    app.stop().await;
}

/// The same with projectors and the policy consuming JetStream (a private nats-server).
async fn deactivation_over_jetstream(engine: Engine) {
    let nats = nova_infra::testing::PrivateNats::start();
    let app = spawn_with_nats(engine, nats.url()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/readyz").send().await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deactivation_scenario(&app).await;
    app.stop().await;
    drop(nats);
}

async fn deactivation_scenario(app: &TestApp) {
    let (alice, a) = member(app, "alice").await;
    let (_, b) = member(app, "bob").await;
    let (p1, _) = create(app, &a, json!({"content": "one"})).await;
    let (p2, _) = create(app, &a, json!({"content": "two"})).await;
    let (p3, _) = create(app, &a, json!({"content": "three"})).await;
    let (bobs, _) = create(app, &b, json!({"content": "bob's"})).await;
    ok(
        app,
        Method::DELETE,
        &format!("/v1/posts/{p3}"),
        &a,
        None,
        StatusCode::OK,
    )
    .await
    .unwrap();

    let res = call(app, Method::DELETE, "/v1/users/me", &a, None).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The policy hides p1 and p2 (p3 is already deleted).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hidden =
            |events: Vec<PostEvent>| events.iter().any(|e| matches!(e, PostEvent::Hidden(_)));
        if hidden(post_events(&app.db, p1).await) && hidden(post_events(&app.db, p2).await) {
            break;
        }
        assert!(Instant::now() < deadline, "posts were not hidden");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = app.db.store.head(Domain::Post).await.unwrap();
    let pos = format!("post:{head}");
    for p in [p1, p2, p3] {
        read_err(
            app,
            &b,
            &format!("/v1/posts/{p}"),
            &pos,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // A deactivated author has no public posts: the list is a 404 once the directory knows.
    let user_head = app.db.store.head(Domain::User).await.unwrap();
    read_err(
        app,
        &b,
        &format!("/v1/users/{alice}/posts"),
        &format!("user:{user_head}"),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    read(app, &b, &format!("/v1/posts/{bobs}"), &pos).await;
    assert!(!post_events(&app.db, p3)
        .await
        .iter()
        .any(|e| matches!(e, PostEvent::Hidden(_))));

    // The hide carries the deactivation as its cause.
    let deactivated = app
        .db
        .store
        .load(Domain::User, alice, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "deactivated")
        .unwrap();
    let recorded = app.db.store.load(Domain::Post, p1, 0).await.unwrap();
    let hide = recorded.iter().find(|e| e.event_type == "hidden").unwrap();
    assert_eq!(hide.metadata.causation_id, Some(deactivated.event_id));
    assert_eq!(
        hide.metadata.correlation_id,
        deactivated.metadata.correlation_id
    );

    // Handling the same event again appends nothing.
    let policy = nova_policies::post::PostOnUserDeactivated::new(
        nova_commands::post::PostCommands::new(
            app.command_store(),
            app.read_models(),
            app.read_models(),
        ),
        app.read_models(),
        nova_policies::CatchUp::new(app.db.any.clone(), nova_projections::Checkpoints::default()),
    );
    assert_eq!(policy.name(), "policy_post_on_user_deactivated");
    policy.handle(&deactivated).await.unwrap();
    policy.handle(&deactivated).await.unwrap();
    assert_eq!(app.db.store.head(Domain::Post).await.unwrap(), head);
}

type PostRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
);
type CommentRow = (String, String, String, String, String, String);
type BookmarkRow = (String, String, Option<String>, String);

async fn snapshot(db: &Database) -> (Vec<PostRow>, Vec<CommentRow>, Vec<BookmarkRow>) {
    let posts = sqlx::query_as(
        "SELECT post_id, author_id, content, media_urls, mentions, created_at, edited_at, \
                visible, like_count, comment_count, share_count FROM posts ORDER BY post_id",
    )
    .fetch_all(&db.any)
    .await
    .unwrap();
    let comments = sqlx::query_as(
        "SELECT comment_id, post_id, author_id, content, mentions, created_at \
         FROM post_comments ORDER BY comment_id",
    )
    .fetch_all(&db.any)
    .await
    .unwrap();
    let bookmarks = sqlx::query_as(
        "SELECT user_id, post_id, collection, bookmarked_at FROM post_bookmarks \
         ORDER BY user_id, post_id",
    )
    .fetch_all(&db.any)
    .await
    .unwrap();
    (posts, comments, bookmarks)
}

async fn rebuild_equals_live(engine: Engine) {
    let mut app = spawn(engine).await;
    let (_, a) = member(&app, "alice").await;
    let (_, b) = member(&app, "bob").await;
    let (_, c) = member(&app, "carol").await;
    let mut posts = Vec::new();
    for i in 0..4 {
        let token = if i % 2 == 0 { &a } else { &b };
        let (id, _) = create(
            &app,
            token,
            json!({"content": format!("post {i} @carol"), "media_urls": ["https://x.io/1"]}),
        )
        .await;
        posts.push(id);
    }
    for (i, p) in posts.iter().enumerate() {
        for token in [&a, &b, &c].into_iter().take(i + 1) {
            ok(
                &app,
                Method::PUT,
                &format!("/v1/posts/{p}/like"),
                token,
                None,
                StatusCode::OK,
            )
            .await;
            ok(
                &app,
                Method::POST,
                &format!("/v1/posts/{p}/comments"),
                token,
                Some(json!({"content": "hey @alice"})),
                StatusCode::CREATED,
            )
            .await;
        }
        ok(
            &app,
            Method::POST,
            &format!("/v1/posts/{p}/shares"),
            &c,
            None,
            StatusCode::CREATED,
        )
        .await;
        ok(
            &app,
            Method::PUT,
            &format!("/v1/posts/{p}/bookmark"),
            &c,
            Some(json!({"collection": if i % 2 == 0 { "x" } else { "y" }})),
            StatusCode::OK,
        )
        .await;
    }
    ok(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{}/like", posts[3]),
        &a,
        None,
        StatusCode::OK,
    )
    .await;
    ok(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{}/bookmark", posts[2]),
        &c,
        None,
        StatusCode::OK,
    )
    .await;
    ok(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{}", posts[1]),
        &b,
        Some(json!({"content": "edited"})),
        StatusCode::OK,
    )
    .await;
    ok(
        &app,
        Method::PUT,
        &format!("/v1/posts/{}/bookmark", posts[0]),
        &c,
        None,
        StatusCode::OK,
    )
    .await;
    ok(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{}", posts[0]),
        &a,
        None,
        StatusCode::OK,
    )
    .await;
    let head = app.db.store.head(Domain::Post).await.unwrap();
    let p = read(
        &app,
        &c,
        &format!("/v1/posts/{}", posts[3]),
        &format!("post:{head}"),
    )
    .await;
    assert_eq!(
        (
            p["like_count"].as_i64(),
            p["comment_count"].as_i64(),
            p["share_count"].as_i64()
        ),
        (Some(2), Some(3), Some(1))
    );

    app.stop_server().await;
    let live = snapshot(&app.db).await;
    assert_eq!(live.0.len(), 4);
    let report = nova_projections::rebuild::rebuild(
        nova_projections::rebuild::find("post_view").unwrap(),
        &app.db.store,
        &app.db.any,
        &nova_projections::Checkpoints::default(),
        |_| {},
    )
    .await
    .unwrap();
    // The view also reads the user domain (for `user.erased`, ADR 0025).
    let user_head = app.db.store.head(Domain::User).await.unwrap();
    assert_eq!(
        report.positions,
        vec![(Domain::Post, head), (Domain::User, user_head)]
    );
    assert_eq!(snapshot(&app.db).await, live);
    app.stop().await;
}

/// A read-model row that does not decode is an error that surfaces (a logged 500), never a
/// field silently defaulted or a row silently dropped from a list.
async fn a_corrupt_row_surfaces(engine: Engine) {
    let app = spawn(engine).await;
    let (a, ta) = member(&app, "corrupt_a").await;
    let (post, pos) = create(&app, &ta, json!({"content": "fine", "media_urls": []})).await;
    let (other, pos2) = create(&app, &ta, json!({"content": "also fine"})).await;
    read(&app, &ta, &format!("/v1/posts/{post}"), &pos).await;
    read(&app, &ta, &format!("/v1/posts/{other}"), &pos2).await;

    // Damage one stored value the way a bad migration or a stray write could.
    sqlx::query("UPDATE posts SET media_urls = 'not json' WHERE post_id = $1")
        .bind(post.to_string())
        .execute(&app.db.any)
        .await
        .unwrap();
    read_err(
        &app,
        &ta,
        &format!("/v1/posts/{post}"),
        &pos,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    )
    .await;
    // The list does not quietly skip the bad row either.
    read_err(
        &app,
        &ta,
        &format!("/v1/users/{a}/posts"),
        &pos2,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    )
    .await;
    // A broken id is caught the same way.
    sqlx::query("UPDATE posts SET media_urls = '[]', author_id = 'nope' WHERE post_id = $1")
        .bind(post.to_string())
        .execute(&app.db.any)
        .await
        .unwrap();
    read_err(
        &app,
        &ta,
        &format!("/v1/posts/{post}"),
        &pos,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
    )
    .await;
    // The undamaged post still reads.
    read(&app, &ta, &format!("/v1/posts/{other}"), &pos2).await;
    app.stop().await;
}

/// A crash between the append and the storing of the answer leaves a claim without an
/// answer; once a retry may take it over, it appends nothing new and answers what the first
/// run created: the same post, comment and share ids.
async fn retries_after_a_lost_answer_append_once(engine: Engine) {
    let app = spawn_configured(engine, |s| {
        s.idempotency_takeover = Duration::from_millis(200);
    })
    .await;
    let (_, token, _) = app.user("lost_answers").await;
    let send = |path: String, key: &'static str, body: Value| {
        app.post(&path)
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let lose_answers = || async {
        sqlx::query("UPDATE idempotency_keys SET status = NULL, headers = NULL, body = NULL")
            .execute(&app.db.any)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let res = send("/v1/posts".into(), "lost-post", json!({"content": "once"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    let post: Value = res.json().await.unwrap();
    let post_id = post["post_id"].as_str().unwrap().to_owned();
    let comments = format!("/v1/posts/{post_id}/comments");
    let shares = format!("/v1/posts/{post_id}/shares");
    let res = send(comments.clone(), "lost-comment", json!({"content": "hi"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let comment: Value = res.json().await.unwrap();
    let res = send(shares.clone(), "lost-share", json!({})).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let share: Value = res.json().await.unwrap();
    let head = app.db.store.head(Domain::Post).await.unwrap();

    lose_answers().await;
    let res = send("/v1/posts".into(), "lost-post", json!({"content": "once"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(position(&res), pos);
    assert_eq!(
        res.json::<Value>().await.unwrap()["post_id"],
        post["post_id"]
    );
    let res = send(comments, "lost-comment", json!({"content": "hi"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["comment_id"], comment["comment_id"], "{again}");
    let res = send(shares, "lost-share", json!({})).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["share_id"], share["share_id"], "{again}");
    assert_eq!(
        app.db.store.head(Domain::Post).await.unwrap(),
        head,
        "a retry appended again"
    );
    app.stop().await;
}
