//! End-to-end tests of the notification routes (API.md "Read views"), over real HTTP, on both
//! engines. Users are registered through the routes; follow and post facts are appended
//! directly to the event store (those domains' routes are not needed to test this view).

mod common;

use chrono::Utc;
use common::*;
use nova_event_schemas::follow::{relationship_id, FollowEvent, Followed};
use nova_event_schemas::post::{like_id, CommentAdded, Liked, PostCreated, PostEvent};
use nova_event_schemas::user::UserEvent;
use nova_event_schemas::{Domain, DomainEvent, EventMetadata};
use nova_infra::db::Engine;
use nova_infra::nats::Envelope;
use nova_infra::store::{AppendRequest, NewEvent, RecordedEvent, StreamAppend};
use nova_projections::Checkpoints;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    list_mark_read_and_pages,
    bad_input_and_missing_token,
    preferences_roundtrip_and_effect,
    over_jetstream,
    stored_v1_read_markers_reach_every_consumer,
);

/// Appends one event to a new aggregate (or the next version of `version`); returns the
/// `X-Nova-Min-Position` value that waits for it.
async fn append<E: DomainEvent>(
    app: &TestApp,
    id: Uuid,
    aggregate: &'static str,
    version: i64,
    event: E,
) -> String {
    let appended = app
        .db
        .store
        .append(
            vec![(id, aggregate, version, vec![event])],
            EventMetadata::default(),
        )
        .await
        .unwrap();
    format!("{}:{}", E::DOMAIN, appended.last_position)
}

async fn post(app: &TestApp, author: Uuid) -> (Uuid, String) {
    let post_id = Uuid::now_v7();
    let pos = append(
        app,
        post_id,
        "post",
        0,
        PostEvent::Created(PostCreated {
            post_id,
            author_id: author,
            content: "hi".into(),
            media_urls: vec![],
            mentions: vec![],
            created_at: Utc::now(),
        }),
    )
    .await;
    (post_id, pos)
}

async fn like(app: &TestApp, post: Uuid, author: Uuid, user: Uuid) -> String {
    append(
        app,
        like_id(post, user),
        "like",
        0,
        PostEvent::Liked(Liked {
            post_id: post,
            user_id: user,
            post_author_id: author,
            liked_at: Utc::now(),
        }),
    )
    .await
}

async fn follow(app: &TestApp, follower: Uuid, followee: Uuid) -> String {
    append(
        app,
        relationship_id(follower, followee),
        "relationship",
        0,
        FollowEvent::Followed(Followed {
            follower_id: follower,
            followee_id: followee,
            followed_at: Utc::now(),
        }),
    )
    .await
}

async fn notifications(app: &TestApp, token: &str, query: &str, min: Option<&str>) -> Value {
    let mut req = app
        .get(&format!("/v1/notifications{query}"))
        .bearer_auth(token);
    if let Some(min) = min {
        req = req.header("X-Nova-Min-Position", min);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn list_mark_read_and_pages(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, alice_token, _) = app.user("alice").await;
    let (bob, bob_token, _) = app.user("bob").await;
    let (carol, _, _) = app.user("carol").await;

    let empty = notifications(&app, &alice_token, "", None).await;
    assert_eq!(
        empty,
        json!({"items": [], "next_cursor": null, "unread_count": 0})
    );

    // Read-your-writes on each domain the view consumes.
    let pos = follow(&app, bob, alice).await;
    let page = notifications(&app, &alice_token, "", Some(&pos)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (p, _) = post(&app, alice).await;
    like(&app, p, alice, bob).await;
    let comment_id = Uuid::now_v7();
    let pos = append(
        &app,
        p,
        "post",
        1,
        PostEvent::CommentAdded(CommentAdded {
            comment_id,
            post_id: p,
            author_id: carol,
            post_author_id: alice,
            content: "hey".into(),
            mentions: vec![],
            commented_at: Utc::now(),
        }),
    )
    .await;
    let page = notifications(&app, &alice_token, "", Some(&pos)).await;
    assert_eq!(page["unread_count"], 3);
    assert_eq!(page["next_cursor"], Value::Null);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let newest = &items[0];
    assert_eq!(newest["kind"], "comment");
    assert_eq!(newest["actor_id"], carol.to_string());
    assert_eq!(newest["post_id"], p.to_string());
    assert_eq!(newest["comment_id"], comment_id.to_string());
    assert_eq!(newest["read"], false);
    assert!(newest["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(items[1]["kind"], "like");
    assert_eq!(items[1]["actor_id"], bob.to_string());
    assert_eq!(items[1]["comment_id"], Value::Null);
    assert_eq!(items[2]["kind"], "follow");
    assert_eq!(items[2]["post_id"], Value::Null);
    // Nobody else sees alice's notifications.
    assert_eq!(
        notifications(&app, &bob_token, "", None).await["unread_count"],
        0
    );

    // Pages of two.
    let first = notifications(&app, &alice_token, "?limit=2", None).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = notifications(
        &app,
        &alice_token,
        &format!("?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0], items[2]);
    assert_eq!(second["next_cursor"], Value::Null);

    // Mark read up to the like: it and the follow are read; unread_count moves.
    let like_id = items[1]["notification_id"].as_str().unwrap();
    let res = app
        .post("/v1/notifications/read")
        .bearer_auth(&alice_token)
        .json(&json!({"up_to": like_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    assert!(pos.starts_with("user:"), "{pos}");
    let body: Value = res.json().await.unwrap();
    assert!(body["version"].as_i64().unwrap() > 0);
    let page = notifications(&app, &alice_token, "", Some(&pos)).await;
    assert_eq!(page["unread_count"], 1);
    let read: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["read"])
        .collect();
    assert_eq!(read, vec![&json!(false), &json!(true), &json!(true)]);
    // Read-your-writes without the header too: the caller's own settings are current.
    let unread = notifications(&app, &alice_token, "?unread_only=true", None).await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 1);
    assert_eq!(unread["items"][0]["kind"], "comment");

    // Marking an older one read does not move the marker back.
    let follow_id = items[2]["notification_id"].as_str().unwrap();
    let res = app
        .post("/v1/notifications/read")
        .bearer_auth(&alice_token)
        .json(&json!({"up_to": follow_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        notifications(&app, &alice_token, "", None).await["unread_count"],
        1
    );
    app.stop().await;
}

async fn bad_input_and_missing_token(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, alice_token, _) = app.user("alice").await;
    let (bob, bob_token, _) = app.user("bob").await;
    let pos = follow(&app, bob, alice).await;
    let page = notifications(&app, &alice_token, "", Some(&pos)).await;
    let alices = page["items"][0]["notification_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // No token, or a bad one: 401 on every route.
    expect_error(
        app.get("/v1/notifications").send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        app.get("/v1/notifications")
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    expect_error(
        app.post("/v1/notifications/read")
            .json(&json!({"up_to": alices}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        app.get("/v1/notifications/preferences")
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        app.client
            .put(app.url("/v1/notifications/preferences"))
            .json(&json!({"like": false}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // Bad list parameters.
    for (query, code) in [
        ("?limit=0", "invalid_field"),
        ("?limit=101", "invalid_field"),
        ("?limit=ten", "invalid_field"),
        ("?unread_only=maybe", "invalid_query"),
        ("?cursor=zz", "invalid_field"),
        ("?cursor=6869", "invalid_field"),
        ("?color=red", "invalid_query"),
    ] {
        let res = app
            .get(&format!("/v1/notifications{query}"))
            .bearer_auth(&alice_token)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, code).await;
    }
    let res = app
        .get("/v1/notifications")
        .bearer_auth(&alice_token)
        .header("X-Nova-Min-Position", "post:x")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;

    // Bad mark-read bodies; unknown and foreign ids are 404.
    for body in [
        json!({}),
        json!({"up_to": "x"}),
        json!({"up_to": 5}),
        json!({"up_to": alices, "more": 1}),
    ] {
        let res = app
            .post("/v1/notifications/read")
            .bearer_auth(&alice_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    let res = app
        .post("/v1/notifications/read")
        .bearer_auth(&alice_token)
        .json(&json!({"up_to": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .post("/v1/notifications/read")
        .bearer_auth(&bob_token)
        .json(&json!({"up_to": alices}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;

    // Bad preference bodies.
    for body in [
        json!({"likes": false}),
        json!({"like": "no"}),
        json!({"like": 0}),
        json!({"like": null}),
    ] {
        let res = app
            .client
            .put(app.url("/v1/notifications/preferences"))
            .bearer_auth(&alice_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    let res = app
        .get("/v1/notifications/preferences")
        .bearer_auth(&alice_token)
        .header("X-Nova-Min-Position", "follow:-1")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;

    // The routes are documented.
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/notifications",
        "/v1/notifications/read",
        "/v1/notifications/preferences",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/v1/notifications/preferences"]["put"].is_object());

    // Nothing of the above changed alice's state.
    let page = notifications(&app, &alice_token, "", None).await;
    assert_eq!(page["unread_count"], 1);
    app.stop().await;
}

async fn preferences_roundtrip_and_effect(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, token, _) = app.user("alice").await;
    let (bob, _, _) = app.user("bob").await;
    let (carol, _, _) = app.user("carol").await;
    let all_on = json!({"follow": true, "like": true, "comment": true, "mention": true, "share": true, "stream_started": true, "message": true});

    let (app_ref, token_ref) = (&app, &token);
    let get = move || async move {
        let res = app_ref
            .get("/v1/notifications/preferences")
            .bearer_auth(token_ref)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()
    };
    let put = |body: Value| {
        let req = app
            .client
            .put(app.url("/v1/notifications/preferences"))
            .bearer_auth(&token)
            .json(&body);
        async move { req.send().await.unwrap() }
    };

    assert_eq!(get().await, all_on);
    let res = put(json!({"like": false})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(position(&res).starts_with("user:"));
    let expected = json!({"follow": true, "like": false, "comment": true, "mention": true, "share": true, "stream_started": true, "message": true});
    assert_eq!(res.json::<Value>().await.unwrap(), expected);
    // Read-your-writes: the GET waits for the caller's own latest event.
    assert_eq!(get().await, expected);
    // Partial: only the given kinds change.
    let res = put(json!({"share": false, "mention": false})).await;
    let expected = json!({"follow": true, "like": false, "comment": true, "mention": false, "share": false, "stream_started": true, "message": true});
    assert_eq!(res.json::<Value>().await.unwrap(), expected);
    assert_eq!(get().await, expected);
    // An empty change changes nothing.
    let res = put(json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), expected);

    // While likes are off, a like is not shown; a follow is.
    let (p, _) = post(&app, alice).await;
    let pos_like = like(&app, p, alice, bob).await;
    let pos = follow(&app, carol, alice).await;
    notifications(&app, &token, "", Some(&pos_like)).await;
    let page = notifications(&app, &token, "", Some(&pos)).await;
    let kinds: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["kind"])
        .collect();
    assert_eq!(kinds, vec![&json!("follow")]);
    assert_eq!(page["unread_count"], 1);

    // Back on: later likes show, the one made while off stays hidden.
    let res = put(json!({"like": true, "share": true, "mention": true})).await;
    assert_eq!(res.json::<Value>().await.unwrap(), all_on);
    let pos = like(&app, p, alice, carol).await;
    let page = notifications(&app, &token, "", Some(&pos)).await;
    let actors: Vec<(String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().to_owned(),
                n["actor_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            ("like".to_owned(), carol.to_string()),
            ("follow".to_owned(), carol.to_string()),
        ]
    );
    app.stop().await;
}

/// The view fed through the relay and JetStream (three domains, three consumers) answers the
/// same, and read-your-writes holds on each domain.
async fn over_jetstream(engine: Engine) {
    let nats = nova_infra::testing::PrivateNats::start();
    let app = spawn_with_nats(engine, nats.url()).await;
    let (alice, token, _) = app.user("alice").await;
    let (bob, _, _) = app.user("bob").await;
    let res = app
        .client
        .put(app.url("/v1/notifications/preferences"))
        .bearer_auth(&token)
        .json(&json!({"share": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pos = follow(&app, bob, alice).await;
    let page = notifications(&app, &token, "", Some(&pos)).await;
    assert_eq!(page["items"][0]["kind"], "follow");
    let (p, _) = post(&app, alice).await;
    let pos = like(&app, p, alice, bob).await;
    let page = notifications(&app, &token, "", Some(&pos)).await;
    let kinds: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["kind"])
        .collect();
    assert_eq!(kinds, vec![&json!("like"), &json!("follow")]);
    assert_eq!(page["unread_count"], 2);
    let res = app
        .get("/v1/notifications/preferences")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["share"], false);
    app.stop().await;
    drop(nats);
}

/// `user.notifications_read` v1 (the view's text for `up_to_created_at`) is still in stores
/// written before v2. Raw v1 rows, stored below the typed API, are read by every consumer: the
/// notification projection live (here over the relay and JetStream) and in a rebuild, the user
/// aggregate (a command that depends on the marker), and the JetStream envelope codec. New
/// appends write v2, and a history mixing both rebuilds to the same view.
async fn stored_v1_read_markers_reach_every_consumer(engine: Engine) {
    let nats = nova_infra::testing::PrivateNats::start();
    let app = spawn_with_nats(engine, nats.url()).await;
    let (alice, token, _) = app.user("alice").await;
    let (bob, _, _) = app.user("bob").await;
    let pos = follow(&app, bob, alice).await;
    notifications(&app, &token, "", Some(&pos)).await;
    let (p, _) = post(&app, alice).await;
    let pos = like(&app, p, alice, bob).await;
    let page = notifications(&app, &token, "", Some(&pos)).await;
    assert_eq!(page["unread_count"], 2);
    let (liked, followed) = (&page["items"][0], &page["items"][1]);
    assert_eq!(followed["kind"], "follow");
    let follow_id = followed["notification_id"].as_str().unwrap().to_owned();
    let follow_at = followed["created_at"].as_str().unwrap().to_owned();
    let like_id = liked["notification_id"].as_str().unwrap().to_owned();
    let like_at = liked["created_at"].as_str().unwrap().to_owned();

    // A v1 event, as the code before v2 stored it.
    let user_events = |app: &TestApp| {
        let store = app.db.store.clone();
        async move { store.load(Domain::User, alice, 0).await.unwrap() }
    };
    let version = user_events(&app).await.last().unwrap().version;
    let appended = app
        .db
        .store
        .backend()
        .append_batch(
            Domain::User,
            &[AppendRequest {
                streams: vec![StreamAppend {
                    aggregate_id: alice,
                    aggregate_type: "user".into(),
                    expected_version: version,
                    events: vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "notifications_read".into(),
                        schema_version: 1,
                        payload: json!({
                            "up_to": follow_id,
                            "up_to_created_at": follow_at,
                            "read_at": Utc::now(),
                        }),
                    }],
                }],
                metadata: EventMetadata::default(),
                recorded_at: Utc::now(),
                command_key: None,
            }],
        )
        .await
        .unwrap();
    let v1_position = appended[0].as_ref().unwrap().last_position;
    let stored: RecordedEvent = user_events(&app).await.pop().unwrap();
    assert_eq!(
        (stored.event_type.as_str(), stored.schema_version),
        ("notifications_read", 1)
    );

    // Decoding upcasts it exactly: the instant, written the view's way, is the v1 text.
    let UserEvent::NotificationsRead(read) = stored.decode::<UserEvent>().unwrap() else {
        panic!("not a read marker");
    };
    assert_eq!(read.up_to.to_string(), follow_id);
    assert_eq!(
        nova_projections::user_directory::ts(read.up_to_created_at),
        follow_at
    );

    // The JetStream envelope carries the stored version and payload untouched; its consumer
    // decodes (and upcasts) like the store's.
    let envelope = Envelope {
        prev_position: v1_position - 1,
        event: stored.clone(),
    };
    let carried = Envelope::decode(&envelope.encode()).unwrap();
    assert_eq!(carried, envelope);
    assert_eq!(
        carried.event.decode::<UserEvent>().unwrap(),
        stored.decode::<UserEvent>().unwrap()
    );

    // The live projection (fed over JetStream by the relay) applies it.
    let marker = |app: &TestApp| {
        let pool = app.db.any.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "SELECT up_to_created_at, up_to_id FROM notification_read WHERE user_id = $1",
            )
            .bind(alice.to_string())
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let min = format!("user:{v1_position}");
    let page = notifications(&app, &token, "", Some(&min)).await;
    assert_eq!(page["unread_count"], 1);
    assert_eq!(page["items"][0]["read"], false);
    assert_eq!(page["items"][1]["read"], true);
    assert_eq!(marker(&app).await, (follow_at.clone(), follow_id.clone()));

    // A rebuild (from the store) gives the same view.
    let rebuild = |app: &TestApp| {
        let (store, pool) = (app.db.store.clone(), app.db.any.clone());
        async move {
            nova_projections::rebuild::rebuild(
                nova_projections::rebuild::find("notification").unwrap(),
                &store,
                &pool,
                &Checkpoints::default(),
                |_| {},
            )
            .await
            .unwrap();
        }
    };
    rebuild(&app).await;
    assert_eq!(marker(&app).await, (follow_at.clone(), follow_id.clone()));
    assert_eq!(
        notifications(&app, &token, "", None).await["unread_count"],
        1
    );

    // The aggregate loads the v1 marker: marking the same notification again changes nothing.
    let mark = |up_to: String| {
        app.post("/v1/notifications/read")
            .bearer_auth(&token)
            .json(&json!({ "up_to": up_to }))
            .send()
    };
    let res = mark(follow_id.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(user_events(&app).await.len() as i64, version + 1);

    // Moving it on appends v2.
    let res = mark(like_id.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let newest = user_events(&app).await.pop().unwrap();
    assert_eq!(
        (newest.event_type.as_str(), newest.schema_version),
        ("notifications_read", 2)
    );
    let page = notifications(&app, &token, "", Some(&pos)).await;
    assert_eq!(page["unread_count"], 0);
    assert_eq!(marker(&app).await, (like_at.clone(), like_id.clone()));

    // A history of v1 and v2 rebuilds to the same marker.
    rebuild(&app).await;
    assert_eq!(marker(&app).await, (like_at, like_id));
    assert_eq!(
        notifications(&app, &token, "", None).await["unread_count"],
        0
    );
    app.stop().await;
    drop(nats);
}
