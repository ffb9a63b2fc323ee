//! Live streams (issue 10, ADR 0017) end to end over HTTP on both engines: every route, bad
//! input, who may do what, key rotation, the publish hooks, viewers and their expiry (with a
//! clock the test moves, not a sleep), the live list's order and pages, `stream_started`
//! notifications (preferences, blocks, live == rebuild in any domain order), the deactivation
//! policy, and that no stream key ever issued is found in the database, the logs or JetStream.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::Domain;
use nova_infra::clock::Clock;
use nova_infra::db::Engine;
use nova_infra::store::ReadFilter;
use nova_projections::{Checkpoints, Projection, StoreTail};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    lifecycle_and_authorization,
    bad_input,
    viewers_expire_after_sixty_silent_seconds,
    live_list_order_and_pages,
    publish_hooks_and_key_rotation,
    going_live_notifies_followers,
    deactivation_ends_streams_and_refuses_keys,
    no_stream_key_in_database_logs_or_jetstream,
    two_api_processes_share_presence,
);

const INGEST: &str = "ingest-secret-for-tests-0123456789";

/// The app with an ingest secret and a clock the test moves.
async fn spawn_streams(engine: Engine) -> (TestApp, Clock) {
    let clock = Clock::system();
    let c = clock.clone();
    let app = spawn_configured(engine, move |s| {
        s.ingest_secret = Some(secrecy::SecretString::from(INGEST));
        s.clock = c;
    })
    .await;
    (app, clock)
}

/// Creates a stream; returns its id, key and the position header.
async fn create(app: &TestApp, token: &str, title: &str) -> (Uuid, String, String) {
    let res = app
        .post("/v1/streams")
        .bearer_auth(token)
        .json(&json!({ "title": title, "description": "a test stream" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let pos = position(&res);
    let body: Value = res.json().await.unwrap();
    let key = body["stream_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("nsk_") && key.len() == 47, "{key}");
    assert!(key[4..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    (
        body["stream_id"].as_str().unwrap().parse().unwrap(),
        key,
        pos,
    )
}

async fn command(app: &TestApp, token: &str, path: &str) -> Response {
    app.post(path).bearer_auth(token).send().await.unwrap()
}

async fn ok_command(app: &TestApp, token: &str, path: &str) -> String {
    let res = command(app, token, path).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    position(&res)
}

async fn join_res(app: &TestApp, token: &str, id: Uuid) -> Response {
    app.post(&format!("/v1/streams/{id}/viewers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn join(app: &TestApp, token: &str, id: Uuid) -> StatusCode {
    join_res(app, token, id).await.status()
}

async fn leave(app: &TestApp, token: &str, id: Uuid) -> StatusCode {
    app.delete(&format!("/v1/streams/{id}/viewers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn get_stream(app: &TestApp, token: &str, id: Uuid, min: Option<&str>) -> Value {
    let mut req = app.get(&format!("/v1/streams/{id}")).bearer_auth(token);
    if let Some(m) = min {
        req = req.header("X-Nova-Min-Position", m);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn live_list(app: &TestApp, token: &str, query: &str, min: Option<&str>) -> Value {
    let mut req = app
        .get(&format!("/v1/streams/live{query}"))
        .bearer_auth(token);
    if let Some(m) = min {
        req = req.header("X-Nova-Min-Position", m);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Calls a publish hook as nginx-rtmp does: form-encoded, the key in `name`.
async fn hook(app: &TestApp, which: &str, secret: Option<&str>, key: &str) -> Response {
    let url = match secret {
        Some(s) => format!("/v1/streams/hooks/{which}?secret={s}"),
        None => format!("/v1/streams/hooks/{which}"),
    };
    app.post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "call=publish&addr=127.0.0.1&clientid=1&app=live&flashVer=FMLE&name={key}&type=live"
        ))
        .send()
        .await
        .unwrap()
}

async fn stream_events(app: &TestApp, id: Uuid) -> Vec<nova_infra::store::RecordedEvent> {
    app.db.store.load(Domain::Stream, id, 0).await.unwrap()
}

/// Waits until `check` holds for the live list (the list's counts are refreshed every second).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lifecycle_and_authorization(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (alice, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (_, c, _) = app.user("carol").await;
    let (id, _key, pos) = create(&app, &a, "Alice live").await;

    let s = get_stream(&app, &b, id, Some(&pos)).await;
    assert_eq!(s["status"], "created");
    assert_eq!(s["title"], "Alice live");
    assert_eq!(s["description"], "a test stream");
    assert_eq!(s["broadcaster_id"], alice.to_string());
    assert!(s["started_at"].is_null() && s["ended_at"].is_null());
    // Not live yet: nobody can watch, the broadcaster cannot end it.
    expect_error(
        join_res(&app, &b, id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_not_live",
    )
    .await;
    expect_error(
        command(&app, &a, &format!("/v1/streams/{id}/end")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_not_live",
    )
    .await;

    // Only the broadcaster starts, ends and re-keys.
    for path in ["start", "end", "key/rotate"] {
        expect_error(
            command(&app, &b, &format!("/v1/streams/{id}/{path}")).await,
            StatusCode::FORBIDDEN,
            "not_broadcaster",
        )
        .await;
        let res = app
            .post(&format!("/v1/streams/{id}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let pos = ok_command(&app, &a, &format!("/v1/streams/{id}/start")).await;
    // Starting a live stream again changes nothing.
    let res = command(&app, &a, &format!("/v1/streams/{id}/start")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-nova-position").is_none());
    let s = get_stream(&app, &b, id, Some(&pos)).await;
    assert_eq!(s["status"], "live");
    assert!(s["started_at"].is_string());
    let list = live_list(&app, &b, "", Some(&pos)).await;
    assert_eq!(list["items"][0]["stream_id"], id.to_string());
    assert_eq!(list["items"][0]["broadcaster_id"], alice.to_string());
    assert_eq!(list["items"][0]["title"], "Alice live");
    assert_eq!(list["items"][0]["viewers"], 0);

    // Viewers: join (twice is one viewer), leave.
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    assert_eq!(join(&app, &c, id).await, StatusCode::NO_CONTENT);
    let s = get_stream(&app, &a, id, None).await;
    assert_eq!(
        (&s["viewers"], &s["peak_viewers"], &s["unique_viewers"]),
        (&json!(2), &json!(2), &json!(2))
    );
    assert_eq!(leave(&app, &c, id).await, StatusCode::NO_CONTENT);
    let s = get_stream(&app, &a, id, None).await;
    assert_eq!(
        (&s["viewers"], &s["peak_viewers"], &s["unique_viewers"]),
        (&json!(1), &json!(2), &json!(2))
    );
    let res = app
        .post(&format!("/v1/streams/{id}/viewers"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The broadcaster ends it: the summary is in the `ended` event and in the view.
    let pos = ok_command(&app, &a, &format!("/v1/streams/{id}/end")).await;
    let res = command(&app, &a, &format!("/v1/streams/{id}/end")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let s = get_stream(&app, &b, id, Some(&pos)).await;
    assert_eq!(s["status"], "ended");
    assert!(s["ended_at"].is_string());
    assert_eq!(
        (&s["viewers"], &s["peak_viewers"], &s["unique_viewers"]),
        (&json!(0), &json!(2), &json!(2))
    );
    assert!(s["duration_secs"].as_i64().unwrap() >= 0);
    let events = stream_events(&app, id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["created", "started", "ended"]);
    let ended = &events[2].payload;
    assert_eq!(ended["peak_viewers"], 2);
    assert_eq!(ended["unique_viewers"], 2);
    assert_eq!(ended["trigger"], "broadcaster");
    assert!(ended["duration_secs"].is_i64());
    // No heartbeat became an event.
    assert_eq!(events.len(), 3);
    let list = live_list(&app, &b, "", Some(&pos)).await;
    assert_eq!(list["items"], json!([]));

    // An ended stream stays ended.
    expect_error(
        command(&app, &a, &format!("/v1/streams/{id}/start")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_ended",
    )
    .await;
    expect_error(
        join_res(&app, &b, id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_ended",
    )
    .await;
    expect_error(
        command(&app, &a, &format!("/v1/streams/{id}/key/rotate")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_ended",
    )
    .await;
    app.stop().await;
}

async fn bad_input(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (_, a, _) = app.user("alice").await;
    let post = |body: Value| app.post("/v1/streams").bearer_auth(&a).json(&body).send();
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": "x".repeat(201)}), "title"),
        (json!({"title": "a\u{7}b"}), "title"),
        (
            json!({"title": "ok", "description": "d".repeat(2001)}),
            "description",
        ),
        (json!({}), "title"),
        (json!({"title": 5}), "title"),
        (json!({"title": "ok", "nick": 1}), "nick"),
    ] {
        let err = expect_error(
            post(body.clone()).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        )
        .await;
        assert_eq!(err["details"]["field"], field, "{body}");
    }
    // 200 characters (not bytes) is fine.
    let res = post(json!({"title": "é".repeat(200)})).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post("/v1/streams")
        .bearer_auth(&a)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app
        .post("/v1/streams")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Unknown and malformed ids.
    let unknown = Uuid::now_v7();
    for path in [
        format!("/v1/streams/{unknown}/start"),
        format!("/v1/streams/{unknown}/end"),
        format!("/v1/streams/{unknown}/key/rotate"),
        format!("/v1/streams/{unknown}/viewers"),
    ] {
        expect_error(
            command(&app, &a, &path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let res = app
        .get(&format!("/v1/streams/{unknown}"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for path in ["/v1/streams/nope", "/v1/streams/nope/start"] {
        let res = if path.ends_with("start") {
            command(&app, &a, path).await
        } else {
            app.get(path).bearer_auth(&a).send().await.unwrap()
        };
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // The live list's parameters.
    for q in [
        "?limit=0",
        "?limit=101",
        "?cursor=zz",
        "?cursor=00",
        "?sort=x",
    ] {
        let res = app
            .get(&format!("/v1/streams/live{q}"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    let res = app.get("/v1/streams/live").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn viewers_expire_after_sixty_silent_seconds(engine: Engine) {
    let (app, clock) = spawn_streams(engine).await;
    let (_, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (_, c, _) = app.user("carol").await;
    let (id, _, _) = create(&app, &a, "Expiry").await;
    let pos = ok_command(&app, &a, &format!("/v1/streams/{id}/start")).await;
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    assert_eq!(join(&app, &c, id).await, StatusCode::NO_CONTENT);

    // Bob keeps sending heartbeats, Carol closed her tab.
    clock.advance(chrono::Duration::seconds(40));
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    clock.advance(chrono::Duration::seconds(21));
    let s = get_stream(&app, &a, id, Some(&pos)).await;
    assert_eq!(
        (&s["viewers"], &s["peak_viewers"], &s["unique_viewers"]),
        (&json!(1), &json!(2), &json!(2)),
        "carol silent for 61 s is gone, bob heard 21 s ago is not"
    );
    eventually("the live list counts one viewer", async || {
        live_list(&app, &a, "", None).await["items"][0]["viewers"] == 1
    })
    .await;
    clock.advance(chrono::Duration::seconds(40));
    let s = get_stream(&app, &a, id, None).await;
    assert_eq!(s["viewers"], 0);
    eventually("the live list counts nobody", async || {
        live_list(&app, &a, "", None).await["items"][0]["viewers"] == 0
    })
    .await;
    // Coming back counts again, as the same unique viewer.
    assert_eq!(join(&app, &c, id).await, StatusCode::NO_CONTENT);
    let s = get_stream(&app, &a, id, None).await;
    assert_eq!(
        (&s["viewers"], &s["peak_viewers"], &s["unique_viewers"]),
        (&json!(1), &json!(2), &json!(2))
    );
    app.stop().await;
}

async fn live_list_order_and_pages(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (_, a, _) = app.user("alice").await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        viewers.push(app.user(&format!("viewer{i}")).await.1);
    }
    let mut ids = Vec::new();
    let mut pos = String::new();
    for (title, audience) in [("one", 1), ("three", 3), ("none", 0), ("two", 2)] {
        let (id, _, _) = create(&app, &a, title).await;
        pos = ok_command(&app, &a, &format!("/v1/streams/{id}/start")).await;
        for v in &viewers[..audience] {
            assert_eq!(join(&app, v, id).await, StatusCode::NO_CONTENT);
        }
        ids.push((title, id));
    }
    // A created, not started stream is not live.
    create(&app, &a, "not live").await;
    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = live_list(&app, &a, "", Some(&pos)).await;
    assert_eq!(titles(&all), ["three", "two", "one", "none"]);
    assert_eq!(all["items"][0]["viewers"], 3);
    assert!(all["next_cursor"].is_null());
    let first = live_list(&app, &a, "?limit=2", None).await;
    assert_eq!(titles(&first), ["three", "two"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = live_list(&app, &a, &format!("?limit=2&cursor={cursor}"), None).await;
    assert_eq!(titles(&second), ["one", "none"]);
    assert!(second["next_cursor"].is_null());
    app.stop().await;
}

async fn publish_hooks_and_key_rotation(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (_, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (id, key, created) = create(&app, &a, "Hooked").await;

    // The shared secret guards the hooks: missing or wrong is refused, and a user token is
    // no substitute.
    for secret in [None, Some("wrong"), Some("")] {
        let res = hook(&app, "on_publish", secret, &key).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{secret:?}");
    }
    let res = app
        .post("/v1/streams/hooks/on_publish")
        .bearer_auth(&a)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Unknown, malformed and missing keys.
    let forged = format!("nsk_{}", "A".repeat(43));
    for bad in [forged.as_str(), "nope", &key[..20]] {
        expect_error(
            hook(&app, "on_publish", Some(INGEST), bad).await,
            StatusCode::FORBIDDEN,
            "key_refused",
        )
        .await;
    }
    let res = app
        .post(&format!("/v1/streams/hooks/on_publish?secret={INGEST}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("app=live")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let s = get_stream(&app, &a, id, Some(&created)).await;
    assert_eq!(s["status"], "created");

    // The valid key starts it, again is fine (a reconnect), the end of the publish ends it.
    let res = hook(&app, "on_publish", Some(INGEST), &key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    assert_eq!(get_stream(&app, &b, id, Some(&pos)).await["status"], "live");
    assert_eq!(
        hook(&app, "on_publish", Some(INGEST), &key).await.status(),
        StatusCode::OK
    );
    let res = hook(&app, "on_publish_done", Some(INGEST), &key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let s = get_stream(&app, &b, id, Some(&pos)).await;
    assert_eq!(s["status"], "ended");
    let events = stream_events(&app, id).await;
    assert_eq!(events[1].payload["trigger"], "ingest");
    assert_eq!(events[2].payload["trigger"], "ingest");
    // An ended stream's key starts nothing; its publish_done changes nothing.
    expect_error(
        hook(&app, "on_publish", Some(INGEST), &key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stream_ended",
    )
    .await;
    assert_eq!(
        hook(&app, "on_publish_done", Some(INGEST), &key)
            .await
            .status(),
        StatusCode::OK
    );

    // Rotation: the new key once, the old one refused at once.
    let (id2, old, _) = create(&app, &a, "Rotated").await;
    let res = command(&app, &a, &format!("/v1/streams/{id2}/key/rotate")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let new = res.json::<Value>().await.unwrap()["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(new.len(), 47);
    expect_error(
        hook(&app, "on_publish", Some(INGEST), &old).await,
        StatusCode::FORBIDDEN,
        "key_refused",
    )
    .await;
    assert_eq!(
        hook(&app, "on_publish", Some(INGEST), &new).await.status(),
        StatusCode::OK
    );
    // Rotating while live: the running publish's key is refused for ending it too.
    let res = command(&app, &a, &format!("/v1/streams/{id2}/key/rotate")).await;
    let newer = res.json::<Value>().await.unwrap()["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_error(
        hook(&app, "on_publish_done", Some(INGEST), &new).await,
        StatusCode::FORBIDDEN,
        "key_refused",
    )
    .await;
    assert_eq!(
        hook(&app, "on_publish_done", Some(INGEST), &newer)
            .await
            .status(),
        StatusCode::OK
    );
    // The key is not needed to watch, and the event history names keys by id only.
    let rotated: Vec<Value> = stream_events(&app, id2)
        .await
        .into_iter()
        .filter(|e| e.event_type == "key_rotated")
        .map(|e| e.payload)
        .collect();
    assert_eq!(rotated.len(), 2);
    assert!(rotated[0]["key_id"].is_string());
    app.stop().await;
}

/// The notification view's rows, all columns, ordered.
async fn notification_rows(app: &TestApp, suffix: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<(String, String, String, String, Option<String>, String)> =
        sqlx::query_as(&format!(
            "SELECT notification_id, recipient_id, kind, actor_id, stream_id, created_at \
             FROM notification{suffix} ORDER BY notification_id"
        ))
        .fetch_all(&app.db.any)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(a, b, c, d, e, f)| vec![Some(a), Some(b), Some(c), Some(d), e, Some(f)])
        .collect()
}

async fn notifications_of(app: &TestApp, token: &str) -> Vec<Value> {
    let res = app
        .get("/v1/notifications")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn follow(app: &TestApp, token: &str, whom: Uuid) {
    let res = app
        .put(&format!("/v1/users/{whom}/follow"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert!(
        status.is_success(),
        "{status} {}",
        res.text().await.unwrap()
    );
}

async fn going_live_notifies_followers(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (alice, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (_, c, _) = app.user("carol").await;
    let (dave, d, _) = app.user("dave").await;
    let (_, e, _) = app.user("erin").await;
    let (_, f, _) = app.user("frank").await;
    // A follow checks its target against the user directory, which may lag a registration.
    common::caught_up(&app, "user_directory", Domain::User).await;
    for t in [&b, &c, &d, &f] {
        follow(&app, t, alice).await;
    }
    // Carol switches stream notifications off; frank unfollows before the stream.
    let res = app
        .put("/v1/notifications/preferences")
        .bearer_auth(&c)
        .json(&json!({"stream_started": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let prefs: Value = res.json().await.unwrap();
    assert_eq!(prefs["stream_started"], false);
    let res = app
        .delete(&format!("/v1/users/{alice}/follow"))
        .bearer_auth(&f)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    let (id, _, _) = create(&app, &a, "Going live").await;
    ok_command(&app, &a, &format!("/v1/streams/{id}/start")).await;
    // Erin follows after the start: not notified of it.
    follow(&app, &e, alice).await;
    caught_up(&app, "notification", Domain::Stream).await;
    caught_up(&app, "notification", Domain::Follow).await;
    caught_up(&app, "notification", Domain::User).await;

    let stream_started = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .filter(|n| n["kind"] == "stream_started")
            .cloned()
            .collect()
    };
    let bob = stream_started(&notifications_of(&app, &b).await);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0]["actor_id"], alice.to_string());
    assert_eq!(bob[0]["stream_id"], id.to_string());
    assert!(stream_started(&notifications_of(&app, &c).await).is_empty());
    assert_eq!(stream_started(&notifications_of(&app, &d).await).len(), 1);
    assert!(stream_started(&notifications_of(&app, &e).await).is_empty());
    assert!(stream_started(&notifications_of(&app, &f).await).is_empty());
    assert!(stream_started(&notifications_of(&app, &a).await).is_empty());
    // Alice blocks dave: the notification is hidden from him.
    let res = app
        .put(&format!("/v1/users/{dave}/block"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    caught_up(&app, "notification", Domain::Follow).await;
    assert!(stream_started(&notifications_of(&app, &d).await).is_empty());

    // live == rebuild, in the rebuild's domain order and in the reverse one.
    caught_up(&app, "notification", Domain::Follow).await;
    let live = notification_rows(&app, "").await;
    assert!(live
        .iter()
        .any(|r| r[2].as_deref() == Some("stream_started")));
    let view = nova_projections::notification::NotificationView::default();
    for (suffix, reverse) in [("_replay", false), ("_reverse", true)] {
        nova_projections::schema::create_copies(&app.db.any, &view.tables(), suffix)
            .await
            .unwrap();
        let copy = view.shadow(suffix).unwrap();
        let mut domains = copy.domains().to_vec();
        if reverse {
            domains.reverse();
        }
        let source = StoreTail::new(app.db.store.clone());
        for domain in domains {
            while nova_projections::project_once(
                &*copy,
                domain,
                &source,
                &app.db.any,
                &Checkpoints::default(),
            )
            .await
            .unwrap()
            {}
        }
        assert_eq!(notification_rows(&app, suffix).await, live, "{suffix}");
    }
    // The stream view rebuilds to the same rows too.
    caught_up(&app, "stream_view", Domain::Stream).await;
    let stream_rows = |suffix: &'static str| {
        let pool = app.db.any.clone();
        async move {
            let rows: Vec<(String, String, String, Option<String>, i64)> =
                sqlx::query_as(&format!(
                    "SELECT stream_id, title, status, started_at, last_version \
                     FROM stream_view{suffix} ORDER BY stream_id"
                ))
                .fetch_all(&pool)
                .await
                .unwrap();
            rows
        }
    };
    let live_streams = stream_rows("").await;
    let sv = nova_projections::stream_view::StreamView::default();
    nova_projections::schema::create_copies(&app.db.any, &sv.tables(), "_replay")
        .await
        .unwrap();
    nova_projections::catch_up(
        &*sv.shadow("_replay").unwrap(),
        &app.db.store,
        &app.db.any,
        &Checkpoints::default(),
    )
    .await
    .unwrap();
    assert_eq!(stream_rows("_replay").await, live_streams);
    app.stop().await;
}

async fn deactivation_ends_streams_and_refuses_keys(engine: Engine) {
    let (app, _clock) = spawn_streams(engine).await;
    let (_, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (live_id, live_key, _) = create(&app, &a, "Live one").await;
    let (idle_id, idle_key, _) = create(&app, &a, "Idle one").await;
    assert_eq!(
        hook(&app, "on_publish", Some(INGEST), &live_key)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(join(&app, &b, live_id).await, StatusCode::NO_CONTENT);
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    caught_up(&app, nova_policies::stream::NAME, Domain::User).await;
    caught_up(&app, "stream_view", Domain::Stream).await;

    let s = get_stream(&app, &b, live_id, None).await;
    assert_eq!(s["status"], "ended");
    assert_eq!(s["disabled"], true);
    assert_eq!(
        (&s["peak_viewers"], &s["unique_viewers"]),
        (&json!(1), &json!(1))
    );
    let types: Vec<String> = stream_events(&app, live_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["created", "started", "ended", "disabled"]);
    assert_eq!(get_stream(&app, &b, idle_id, None).await["disabled"], true);
    for key in [&live_key, &idle_key] {
        expect_error(
            hook(&app, "on_publish", Some(INGEST), key).await,
            StatusCode::FORBIDDEN,
            "key_refused",
        )
        .await;
    }
    assert_eq!(live_list(&app, &b, "", None).await["items"], json!([]));
    app.stop().await;
}

/// Log lines of this test binary (every test's servers run in it), captured by a subscriber
/// installed once.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_stream_key_in_database_logs_or_jetstream(engine: Engine) {
    let logs = captured_logs();
    let nats = nova_infra::testing::PrivateNats::start();
    let names = nova_infra::nats::Names::unique();
    let stream_names = names.clone();
    let clock = Clock::system();
    let app = spawn_configured(engine, |s| {
        s.nats_url = Some(nats.url());
        s.nats_names = names;
        s.ingest_secret = Some(secrecy::SecretString::from(INGEST));
        s.clock = clock.clone();
    })
    .await;
    let (_, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let mut keys = Vec::new();
    // A create with an Idempotency-Key: its answer (the key) must not be stored.
    let res = app
        .post("/v1/streams")
        .bearer_auth(&a)
        .header("Idempotency-Key", "create-once-0001")
        .json(&json!({"title": "Secret keeper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let id: Uuid = body["stream_id"].as_str().unwrap().parse().unwrap();
    keys.push(body["stream_key"].as_str().unwrap().to_owned());
    let res = app
        .post(&format!("/v1/streams/{id}/key/rotate"))
        .bearer_auth(&a)
        .header("Idempotency-Key", "rotate-once-0001")
        .send()
        .await
        .unwrap();
    keys.push(
        res.json::<Value>().await.unwrap()["stream_key"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    // Every use of the keys: a refused publish with the old one, a publish, its end.
    assert_eq!(
        hook(&app, "on_publish", Some(INGEST), &keys[0])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        hook(&app, "on_publish", Some(INGEST), &keys[1])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        hook(&app, "on_publish_done", Some(INGEST), &keys[1])
            .await
            .status(),
        StatusCode::OK
    );
    let (_, k, _) = create(&app, &a, "Another").await;
    keys.push(k);

    // JetStream: every message of the test's streams, once the relay has published all.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut messages = 0;
    for domain in Domain::ALL {
        let head = app.db.store.head(domain).await.unwrap();
        if head == 0 {
            continue;
        }
        let mut stream = relayed_stream(&js, &stream_names, domain, head).await;
        let last = stream.info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            messages += 1;
            for key in &keys {
                assert!(
                    !contains_bytes(&m.payload, key)
                        && !contains_bytes(format!("{:?}", m.headers).as_bytes(), key),
                    "a JetStream message of {domain} carries a stream key"
                );
            }
        }
    }
    assert!(messages > 0);
    // The events themselves, as the store returns them.
    let events = app
        .db
        .store
        .read(
            Domain::Stream,
            &ReadFilter {
                after_position: 0,
                limit: 1000,
                ..ReadFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(events.len() >= 5);
    let dump = database_bytes(&app).await;
    let log_text = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        contains_bytes(&log_text, "/v1/streams"),
        "the log capture saw the stream requests"
    );
    for key in &keys {
        assert!(
            !contains_bytes(&dump, key),
            "the database holds a stream key"
        );
        assert!(
            !contains_bytes(&log_text, key),
            "the logs hold a stream key"
        );
        for e in &events {
            assert!(!e.payload.to_string().contains(key.as_str()));
        }
        // The hash is what the key table keeps.
        let hash = nova_commands::stream::keys::hash(key);
        assert!(
            contains_bytes(&dump, &hash),
            "the key table holds each hash"
        );
    }
    stream_names.delete_streams(&js).await;
    app.stop().await;
    drop(nats);
}

/// Two API processes on one database (as behind a load balancer): viewers joining, leaving and
/// falling silent through either are counted the same by both.
async fn two_api_processes_share_presence(engine: Engine) {
    let (app, clock) = spawn_streams(engine).await;
    let c = clock.clone();
    let beside = spawn_beside(&app, move |s| s.clock = c).await;
    let second = beside.addr;
    let (_, a, _) = app.user("alice").await;
    let (_, b, _) = app.user("bob").await;
    let (_, c, _) = app.user("carol").await;
    let (id, _, _) = create(&app, &a, "Two processes").await;
    ok_command(&app, &a, &format!("/v1/streams/{id}/start")).await;
    // Both processes read the view the first one projects.
    caught_up(&app, "stream_view", Domain::Stream).await;
    let other = |method: reqwest::Method, path: String, token: &str| {
        app.client
            .request(method, format!("http://{second}{path}"))
            .bearer_auth(token)
            .send()
    };
    let viewers_on_both = async |want: i64| {
        let here = get_stream(&app, &a, id, None).await["viewers"].clone();
        let there: Value = other(reqwest::Method::GET, format!("/v1/streams/{id}"), &a)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((here, there["viewers"].clone()), (json!(want), json!(want)));
    };
    assert_eq!(join(&app, &b, id).await, StatusCode::NO_CONTENT);
    let res = other(
        reqwest::Method::POST,
        format!("/v1/streams/{id}/viewers"),
        &c,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    viewers_on_both(2).await;
    // Bob's heartbeats go to the other process now; carol leaves through the first.
    clock.advance(chrono::Duration::seconds(40));
    let res = other(
        reqwest::Method::POST,
        format!("/v1/streams/{id}/viewers"),
        &b,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(leave(&app, &c, id).await, StatusCode::NO_CONTENT);
    viewers_on_both(1).await;
    clock.advance(chrono::Duration::seconds(30));
    viewers_on_both(1).await;
    clock.advance(chrono::Duration::seconds(31));
    viewers_on_both(0).await;
    let s = get_stream(&app, &a, id, None).await;
    assert_eq!(
        (&s["peak_viewers"], &s["unique_viewers"]),
        (&json!(2), &json!(2))
    );
    app.stop().await;
}
