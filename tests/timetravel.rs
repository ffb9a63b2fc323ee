//! Time travel (ADR 0024): an aggregate's state at every version and at instants between its
//! events equals folding its exported events up to that point; an as-of copy of every view
//! equals the live view as it stood at that instant, and building one leaves the live view
//! alone.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use esrs::Aggregate;
use nova_aggregates::{follow, post, user};
use nova_event_schemas::{Domain, DomainEvent};
use nova_infra::db::Engine;
use nova_projections::as_of::{self, Which};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::AnyPool;
use uuid::Uuid;

on_both_backends!(
    state_at_every_version_equals_the_fold_of_its_events,
    as_of_copy_equals_the_view_at_that_instant,
);

/// Folds exported events (`/v1/events` items) with the aggregate's own `apply_event`.
fn fold<A>(events: &[Value]) -> Value
where
    A: Aggregate,
    A::Event: DomainEvent,
    A::State: serde::Serialize,
{
    let mut state = A::State::default();
    for e in events {
        let event = A::Event::from_stored(
            e["event_type"].as_str().unwrap(),
            e["schema_version"].as_i64().unwrap() as i32,
            e["payload"].clone(),
        )
        .unwrap();
        state = A::apply_event(state, event);
    }
    serde_json::to_value(state).unwrap()
}

fn fold_any(aggregate_type: &str, events: &[Value]) -> Value {
    match aggregate_type {
        "user" => fold::<user::User>(events),
        "username_claim" => fold::<user::UsernameClaim>(events),
        "relationship" => fold::<follow::Relationship>(events),
        "post" => fold::<post::Post>(events),
        "like" => fold::<post::Like>(events),
        "bookmark" => fold::<post::Bookmark>(events),
        other => panic!("no fold for {other} in this test"),
    }
}

async fn analyst(app: &TestApp, name: &str, role: nova_event_schemas::user::Role) -> String {
    let (_, token, _) = app.user(name).await;
    app.user_commands()
        .grant_role(&nova_commands::CommandContext::new(None, None), name, role)
        .await
        .unwrap();
    token
}

/// A domain's exported events (JSON pages, followed to the end).
async fn exported(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page: Value = app
            .get(&format!("/v1/events?{query}&after={after}&limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => after = c.parse().unwrap(),
            None => return out,
        }
    }
}

/// `method path` with a bearer token and a JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// [`send`], which must succeed.
async fn ok(app: &TestApp, method: Method, path: String, token: &str, body: Value) {
    let res = send(app, method.clone(), &path, token, body).await;
    assert!(
        res.status().is_success(),
        "{method} {path}: {}",
        res.status()
    );
}

/// Creates a post; answers its id.
async fn new_post(app: &TestApp, token: &str, content: &str) -> Uuid {
    let res = send(
        app,
        Method::POST,
        "/v1/posts",
        token,
        json!({ "content": content }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["post_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn state(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.get(path).bearer_auth(token).send().await.unwrap()
}

async fn state_ok(app: &TestApp, token: &str, path: &str) -> Value {
    let res = state(app, token, path).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.json().await.unwrap()
}

async fn between() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

fn enc(t: DateTime<Utc>) -> String {
    // Nanoseconds: SQLite keeps the clock's full precision.
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

async fn state_at_every_version_equals_the_fold_of_its_events(engine: Engine) {
    let app = spawn(engine).await;
    let (bob, bob_token, bob_refresh) = app.user("bob").await;
    let (carl, carl_token, _) = app.user("carl").await;
    let ana = analyst(&app, "ana", nova_event_schemas::user::Role::Analyst).await;
    let boss = analyst(&app, "boss", nova_event_schemas::user::Role::Admin).await;

    // A post's life: created, edited twice, commented on, liked, bookmarked, shared.
    let post_id = new_post(&app, &bob_token, "first words").await;
    let post_path = format!("/v1/posts/{post_id}");
    let edit = |content: &'static str| {
        send(
            &app,
            Method::PATCH,
            &post_path,
            &bob_token,
            json!({ "content": content }),
        )
    };
    assert_eq!(edit("second words").await.status(), StatusCode::OK);
    let between_edits = between().await;
    assert_eq!(edit("third words").await.status(), StatusCode::OK);
    // Then Carl's reactions and follow; Bob's profile, refresh and password change.
    for (method, path, token, body) in [
        (
            Method::POST,
            format!("/v1/posts/{post_id}/comments"),
            &carl_token,
            json!({"content": "nice"}),
        ),
        (
            Method::PUT,
            format!("{post_path}/like"),
            &carl_token,
            json!({}),
        ),
        (
            Method::PUT,
            format!("{post_path}/bookmark"),
            &carl_token,
            json!({}),
        ),
        (
            Method::POST,
            format!("{post_path}/shares"),
            &carl_token,
            json!({}),
        ),
        (
            Method::PUT,
            format!("/v1/users/{bob}/follow"),
            &carl_token,
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/v1/users/{bob}/follow"),
            &carl_token,
            json!({}),
        ),
        (
            Method::PATCH,
            "/v1/users/me".to_owned(),
            &bob_token,
            json!({"display_name": "Bobby", "status": "here"}),
        ),
        (
            Method::POST,
            "/v1/sessions/refresh".to_owned(),
            &bob_token,
            json!({"refresh_token": bob_refresh}),
        ),
        (
            Method::POST,
            "/v1/users/me/password".to_owned(),
            &bob_token,
            json!({"current_password": PASSWORD, "new_password": "another long password"}),
        ),
    ] {
        ok(&app, method, path, token, body).await;
    }

    // Every aggregate of three domains, at every version: the state equals folding the
    // exported events up to that version.
    let mut checked = 0;
    for domain in ["user", "follow", "post"] {
        let events = exported(&app, &ana, &format!("domain={domain}")).await;
        let mut ids: Vec<Uuid> = events
            .iter()
            .map(|e| e["aggregate_id"].as_str().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let mine: Vec<Value> = events
                .iter()
                .filter(|e| e["aggregate_id"] == id.to_string())
                .cloned()
                .collect();
            let aggregate_type = mine[0]["aggregate_type"].as_str().unwrap();
            for v in 1..=mine.len() {
                let got = state_ok(
                    &app,
                    &ana,
                    &format!("/v1/aggregates/{domain}/{id}/state?version={v}"),
                )
                .await;
                assert_eq!(got["version"], v as i64);
                assert_eq!(got["aggregate_type"], aggregate_type);
                assert_eq!(got["domain"], domain);
                assert_eq!(got["aggregate_id"], id.to_string());
                assert_eq!(got["recorded_at"], mine[v - 1]["recorded_at"]);
                assert_eq!(
                    got["state"],
                    fold_any(aggregate_type, &mine[..v]),
                    "{domain} {aggregate_type} {id} at version {v}"
                );
                checked += 1;
            }
            // Without a parameter: the current state.
            let now = state_ok(&app, &ana, &format!("/v1/aggregates/{domain}/{id}/state")).await;
            assert_eq!(now["version"], mine.len() as i64);
            assert_eq!(now["state"], fold_any(aggregate_type, &mine));
            assert!(now.get("as_of").is_none());
            // At each event's own instant (inclusive), and just before it.
            for (i, e) in mine.iter().enumerate() {
                let t: DateTime<Utc> = e["recorded_at"].as_str().unwrap().parse().unwrap();
                let at = state_ok(
                    &app,
                    &ana,
                    &format!("/v1/aggregates/{domain}/{id}/state?as_of={}", enc(t)),
                )
                .await;
                assert!(at["version"].as_i64().unwrap() > i as i64);
                assert!(at["as_of"].is_string());
                if i > 0 && mine[i - 1]["recorded_at"] != e["recorded_at"] {
                    let before = t - chrono::Duration::nanoseconds(1);
                    let at = state_ok(
                        &app,
                        &ana,
                        &format!("/v1/aggregates/{domain}/{id}/state?as_of={}", enc(before)),
                    )
                    .await;
                    assert_eq!(at["version"], i as i64);
                    assert_eq!(at["state"], fold_any(aggregate_type, &mine[..i]));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} states checked");

    // The post, read by hand: its content at each version, and between the two edits.
    let p = |q: String| {
        let path = format!("/v1/aggregates/post/{post_id}/state{q}");
        let ana = ana.clone();
        let app = &app;
        async move { state_ok(app, &ana, &path).await }
    };
    assert_eq!(
        p("?version=1".into()).await["state"]["content"],
        "first words"
    );
    assert_eq!(
        p("?version=2".into()).await["state"]["content"],
        "second words"
    );
    let mid = p(format!("?as_of={}", enc(between_edits))).await;
    assert_eq!(mid["version"], 2);
    assert_eq!(mid["state"]["content"], "second words");
    assert_eq!(mid["state"]["comment_count"], 0);
    let now = p(String::new()).await;
    assert_eq!(now["state"]["content"], "third words");
    assert_eq!(now["state"]["comment_count"], 1);
    assert_eq!(now["state"]["shares"].as_array().unwrap().len(), 1);
    // Admins may ask too.
    let by_admin = state_ok(&app, &boss, &format!("/v1/aggregates/post/{post_id}/state")).await;
    assert_eq!(by_admin, now);

    // Bob's state holds no secret at any version: no hash, nothing the credentials table holds.
    let secrets: Vec<(String,)> = sqlx::query_as("SELECT secret FROM user_credentials")
        .fetch_all(&app.db.any)
        .await
        .unwrap();
    assert!(secrets.len() >= 3);
    let bob_now = state_ok(&app, &ana, &format!("/v1/aggregates/user/{bob}/state")).await;
    assert_eq!(bob_now["state"]["display_name"], "Bobby");
    for v in 1..=bob_now["version"].as_i64().unwrap() {
        let text = state_ok(
            &app,
            &ana,
            &format!("/v1/aggregates/user/{bob}/state?version={v}"),
        )
        .await
        .to_string();
        assert!(!text.contains("$argon2"), "{text}");
        assert!(!text.contains("hash"), "{text}");
        for (s,) in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in the state: {text}");
        }
    }

    // Bad input and missing things.
    let base = format!("/v1/aggregates/post/{post_id}/state");
    for (path, status, code) in [
        (
            format!("/v1/aggregates/nope/{post_id}/state"),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            "/v1/aggregates/post/not-a-uuid/state".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            format!("{base}?version=0"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{base}?version=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{base}?as_of=yesterday"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{base}?version=1&as_of={}", enc(Utc::now())),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{base}?color=red"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{base}?version=999"),
            StatusCode::NOT_FOUND,
            "no_such_version",
        ),
        (
            format!("{base}?as_of=2001-01-01T00:00:00Z"),
            StatusCode::NOT_FOUND,
            "not_yet",
        ),
        (
            format!("/v1/aggregates/post/{}/state", Uuid::now_v7()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // A user id is not a post: aggregates are looked up in the domain asked for.
        (
            format!("/v1/aggregates/post/{carl}/state"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let res = state(&app, &ana, &path).await;
        expect_error(res, status, code).await;
    }
    let err = expect_error(
        state(&app, &ana, &format!("{base}?version=999")).await,
        StatusCode::NOT_FOUND,
        "no_such_version",
    )
    .await;
    let post_events = exported(&app, &ana, &format!("domain=post&aggregate_id={post_id}")).await;
    assert_eq!(err["details"]["last_version"], post_events.len() as i64);
    assert_eq!(now["version"], post_events.len() as i64);
    // Domains whose aggregates are not built answer so, whatever the id.
    for domain in Domain::ALL {
        if !nova::timetravel::AGGREGATES
            .iter()
            .any(|(d, _, _)| *d == domain)
        {
            let res = state(
                &app,
                &ana,
                &format!("/v1/aggregates/{domain}/{}/state", Uuid::now_v7()),
            )
            .await;
            expect_error(res, StatusCode::NOT_FOUND, "no_aggregates").await;
        }
    }

    // Authorization: a token is needed, and the analyst or admin role.
    let res = app.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = state(&app, &carl_token, &base).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    // The command line answers the same.
    let at = between_edits.to_rfc3339();
    let cli = app.cli_json(&["aggregates", "state", "post", &post_id.to_string()]);
    assert_eq!(cli["state"], now["state"]);
    let cli = app.cli_json(&[
        "aggregates",
        "state",
        "post",
        &post_id.to_string(),
        "--as-of",
        &at,
    ]);
    assert_eq!(cli["version"], 2);
    assert_eq!(cli["state"], mid["state"]);
    app.stop().await;
}

/// Every table of every SQL view, with its rows.
async fn views(pool: &AnyPool, suffix: impl Fn(&str) -> String) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for p in nova_projections::all() {
        for t in p.tables() {
            let name = format!("{t}{}", suffix(p.name()));
            out.push((t.clone(), table_rows(pool, &name).await));
        }
    }
    out
}

/// Waits until every SQL view has applied its domains' heads.
async fn caught_up(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows =
            nova_projections::status::status(&app.db.store, &app.db.any, nova_policies::CATALOG)
                .await
                .unwrap();
        if rows
            .iter()
            .filter(|r| r.projection != nova_projections::search::NAME)
            .all(|r| r.lag_events == 0)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "views lag: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn as_of_copy_equals_the_view_at_that_instant(engine: Engine) {
    let app = spawn(engine).await;
    let ana = analyst(&app, "ana", nova_event_schemas::user::Role::Analyst).await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat"] {
        users.push(app.user(name).await);
    }
    // Before the instant: follows, posts with a mention, likes, a comment, a bookmark.
    let (ann, ann_t, _) = users[0].clone();
    let (ben, ben_t, _) = users[1].clone();
    let (_, cat_t, _) = users[2].clone();
    // Follows and mentions check their targets in the user directory: let it catch up.
    caught_up(&app).await;
    let p1 = new_post(&app, &ann_t, "hello @ben").await;
    let p2 = new_post(&app, &ben_t, "ben's first").await;
    for (path, token) in [
        (format!("/v1/users/{ann}/follow"), &ben_t),
        (format!("/v1/users/{ann}/follow"), &cat_t),
        (format!("/v1/users/{ben}/follow"), &ann_t),
        (format!("/v1/posts/{p1}/like"), &ben_t),
        (format!("/v1/posts/{p1}/bookmark"), &cat_t),
    ] {
        ok(&app, Method::PUT, path, token, json!({})).await;
    }
    let comment = json!({"content": "welcome"});
    ok(
        &app,
        Method::POST,
        format!("/v1/posts/{p2}/comments"),
        &ann_t,
        comment,
    )
    .await;
    caught_up(&app).await;
    let then = views(&app.db.any, |_| String::new()).await;
    assert!(then.iter().any(|(_, rows)| !rows.is_empty()));
    let t = between().await;

    // After it: edits, an unfollow, a deletion, new posts and users, a profile change.
    let edit = json!({"content": "hello again"});
    ok(&app, Method::PATCH, format!("/v1/posts/{p1}"), &ann_t, edit).await;
    ok(
        &app,
        Method::DELETE,
        format!("/v1/users/{ann}/follow"),
        &cat_t,
        json!({}),
    )
    .await;
    ok(
        &app,
        Method::DELETE,
        format!("/v1/posts/{p2}"),
        &ben_t,
        json!({}),
    )
    .await;
    new_post(&app, &ann_t, "later @cat").await;
    app.user("dan").await;
    let profile = json!({"display_name": "Ann B."});
    ok(
        &app,
        Method::PATCH,
        "/v1/users/me".to_owned(),
        &ann_t,
        profile,
    )
    .await;
    caught_up(&app).await;
    let live = views(&app.db.any, |_| String::new()).await;
    assert_ne!(live, then, "the second phase changed nothing");

    // An as-of copy of every view equals that view as it stood at the instant.
    let mut ids = Vec::new();
    for p in nova_projections::all() {
        let report = as_of::build(p.clone(), &app.db.store, &app.db.any, t, |_| {})
            .await
            .unwrap();
        assert!(!report.resumed);
        assert_eq!(report.copy.state, "ready");
        assert_eq!(report.copy.as_of, as_of::normalize(t));
        ids.push((p.name().to_owned(), report.copy.id));
        // Built again: found, not built twice.
        let again = as_of::build(p.clone(), &app.db.store, &app.db.any, t, |_| {})
            .await
            .unwrap();
        assert!(again.resumed);
        assert_eq!(again.copy.id, report.copy.id);
        // An interrupted build (still `building`, its checkpoint part-way) resumes from its
        // checkpoint and applies nothing twice (compared below).
        sqlx::query("UPDATE projection_as_of SET state = 'building' WHERE id = $1")
            .bind(report.copy.id)
            .execute(&app.db.any)
            .await
            .unwrap();
        let resumed = as_of::build(p.clone(), &app.db.store, &app.db.any, t, |_| {})
            .await
            .unwrap();
        assert!(resumed.resumed);
        assert_eq!(resumed.copy.state, "ready");
        assert_eq!(resumed.copy.positions, report.copy.positions);
    }
    let copies = views(&app.db.any, |name| {
        let id = ids.iter().find(|(n, _)| n == name).unwrap().1;
        as_of::suffix(id)
    })
    .await;
    for ((table, want), (_, got)) in then.iter().zip(&copies) {
        assert_eq!(got, want, "{table} as of the instant");
    }
    // The live views are untouched, also by a full rebuild beside the copies.
    assert_eq!(views(&app.db.any, |_| String::new()).await, live);
    nova_projections::rebuild::rebuild(
        nova_projections::rebuild::find("feed").unwrap(),
        &app.db.store,
        &app.db.any,
        &nova_projections::Checkpoints::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(views(&app.db.any, |_| String::new()).await, live);

    // Listed by the API (and status), with their instant and tables.
    let list: Value = app
        .get("/v1/projections")
        .bearer_auth(&ana)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["as_of_copies"].as_array().unwrap();
    assert_eq!(listed.len(), ids.len());
    assert!(listed.iter().all(|c| c["state"] == "ready"));
    // Bad instants and names are refused.
    let future = Utc::now() + chrono::Duration::hours(1);
    let live_feed = nova_projections::rebuild::find("feed").unwrap();
    assert!(matches!(
        as_of::build(live_feed, &app.db.store, &app.db.any, future, |_| {}).await,
        Err(nova_projections::rebuild::RebuildError::InFuture(_))
    ));
    assert!(matches!(
        as_of::drop_copy(&app.db.any, Which::Id(9999)).await,
        Err(nova_projections::rebuild::RebuildError::NoSuchCopy(_))
    ));

    // The command line: build, list, drop, with JSON answers.
    let nova = |args: &[&str]| app.cli_json(args);
    let t2 = t - chrono::Duration::milliseconds(1);
    let report = nova(&[
        "projections",
        "rebuild",
        "user_directory",
        "--as-of",
        &t2.to_rfc3339(),
    ]);
    assert_eq!(report["projection"], "user_directory");
    assert_eq!(report["state"], "ready");
    let cli_id = report["id"].as_i64().unwrap();
    let table = report["tables"][0].as_str().unwrap().to_owned();
    assert_eq!(table, format!("user_directory{}", as_of::suffix(cli_id)));
    let want = then.iter().find(|(t, _)| t == "user_directory").unwrap();
    assert_eq!(table_rows(&app.db.any, &table).await, want.1);
    let status = nova(&["projections", "status"]);
    assert!(status["items"].as_array().unwrap().len() >= 6);
    assert_eq!(
        status["as_of_copies"].as_array().unwrap().len(),
        ids.len() + 1
    );
    let dropped = nova(&["projections", "drop", "--id", &cli_id.to_string()]);
    assert_eq!(dropped["id"], cli_id);
    assert!(sqlx::query(&format!("SELECT 1 FROM {table} WHERE 1 = 0"))
        .fetch_optional(&app.db.any)
        .await
        .is_err());

    // Dropped by name and instant: tables, checkpoints and registrations gone.
    for (name, id) in &ids {
        let copy = as_of::drop_copy(&app.db.any, Which::At(name.clone(), t))
            .await
            .unwrap();
        assert_eq!(copy.id, *id);
        for table in &copy.tables {
            assert!(sqlx::query(&format!("SELECT 1 FROM {table} WHERE 1 = 0"))
                .fetch_optional(&app.db.any)
                .await
                .is_err());
        }
    }
    assert!(as_of::list(&app.db.any).await.unwrap().is_empty());
    let (left,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM projection_checkpoints WHERE projection LIKE '%\\_\\_asof%' ESCAPE '\\'",
    )
    .fetch_one(&app.db.any)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_eq!(views(&app.db.any, |_| String::new()).await, live);
    app.stop().await;
}
