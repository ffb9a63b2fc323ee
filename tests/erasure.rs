//! Erasure by crypto-shredding (issue 13 part 4, ADR 0025) end to end on both engines, with
//! JetStream delivery: a user with a profile, posts (one mentioning another user), a comment,
//! followers, a like and a stream is deactivated and erased. Afterwards nothing they wrote or
//! that identifies them is found — byte for byte — in the database files (SQLite: the file and
//! its write-ahead log; PostgreSQL: every row of every table), the export, the JetStream
//! messages, the read models or the search index directory; other people's posts are intact;
//! every view rebuilds to exactly what it holds live. Erasing an active user is refused, a
//! second erasure is fine, and only admins may erase.

mod common;

use std::time::Duration;

use common::*;
use nova_event_schemas::user::Role;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    an_erased_user_leaves_no_trace,
    plaintext_history_still_loads_and_is_sealed_by_the_upgrade,
);

// Distinctive values, so that a byte search cannot match anything else by chance.
const USERNAME: &str = "quokka_erasable";
const DISPLAY_NAME: &str = "Zanzibar Quokkaface";
const STATUS: &str = "plumcake-status-unique";
const POST_1: &str = "marmalade xylophone manifesto, hello @bob_keeps";
const POST_2: &str = "pumpernickel aurora diary entry";
const COMMENT: &str = "gooseberry lantern remark for @carol_keeps";
const STREAM_TITLE: &str = "tangerine zeppelin broadcast";
const BOB_POST: &str = "bob keeps this walnut harmonica note";

fn traces() -> [&'static str; 7] {
    [
        USERNAME,
        DISPLAY_NAME,
        STATUS,
        POST_1,
        POST_2,
        COMMENT,
        STREAM_TITLE,
    ]
}

/// Every file under `dir`, concatenated.
fn dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(dir_bytes(&path));
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
    }
    out
}

/// The whole history of every domain as the export streams it (NDJSON).
async fn export(app: &TestApp, admin: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for domain in Domain::ALL {
        let res = app
            .get(&format!("/v1/events?domain={domain}"))
            .bearer_auth(admin)
            .header("Accept", "application/x-ndjson")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        out.extend(res.bytes().await.unwrap());
    }
    out
}

/// Waits until every view and policy has applied every domain up to its head.
async fn settle(app: &TestApp, admin: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = app
            .get("/v1/projections")
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        let behind: Vec<&Value> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["lag_events"] != 0)
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn erase(app: &TestApp, token: &str, id: impl std::fmt::Display) -> reqwest::Response {
    app.post(&format!("/v1/admin/users/{id}/erase"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Rebuilds `name` through the API and waits until the rebuild is done.
async fn rebuild(app: &TestApp, admin: &str, name: &str) {
    let res = app
        .post(&format!("/v1/projections/{name}/rebuild"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED, "rebuild {name}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = app
            .get("/v1/projections")
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["projection"] == name && r.get("rebuild").is_some())
            .map(|r| {
                r["rebuild"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            });
        match state.as_deref() {
            Some("done") => return,
            Some("failed") => panic!("rebuild of {name} failed: {body}"),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rebuild of {name} not done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn search(app: &TestApp, token: &str, q: &str, kind: &str) -> Vec<Value> {
    let res = app
        .get("/v1/search")
        .query(&[("q", q), ("type", kind)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn created_id(res: reqwest::Response, field: &str) -> Uuid {
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    body[field].as_str().unwrap().parse().unwrap()
}

async fn an_erased_user_leaves_no_trace(engine: Engine) {
    let names = nova_infra::nats::Names::unique();
    let app = spawn_configured(engine, |s| {
        s.nats_url = Some(nova_infra::testing::nats_url());
        s.nats_names = names.clone();
    })
    .await;
    let (eve_id, eve, _) = app.user(USERNAME).await;
    let (bob_id, bob, _) = app.user("bob_keeps").await;
    let (carol_id, carol, _) = app.user("carol_keeps").await;
    let (_, admin, _) = app.user("erasure_admin").await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            "erasure_admin",
            Role::Admin,
        )
        .await
        .unwrap();

    // Commands check the users they name against the directory: let it catch up first.
    settle(&app, &admin).await;

    // Eve's life: a profile, two posts (one mentions bob), a comment on bob's post (mentions
    // carol), followers both ways, a like, a stream.
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&eve)
        .json(&json!({"display_name": DISPLAY_NAME, "status": STATUS}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let new_post = |token: &str, content: &str| {
        app.post("/v1/posts")
            .bearer_auth(token)
            .json(&json!({"content": content}))
            .send()
    };
    let eve_post = created_id(new_post(&eve, POST_1).await.unwrap(), "post_id").await;
    created_id(new_post(&eve, POST_2).await.unwrap(), "post_id").await;
    let bob_post = created_id(new_post(&bob, BOB_POST).await.unwrap(), "post_id").await;
    settle(&app, &admin).await;
    let res = app
        .post(&format!("/v1/posts/{bob_post}/comments"))
        .bearer_auth(&eve)
        .json(&json!({"content": COMMENT}))
        .send()
        .await
        .unwrap();
    created_id(res, "comment_id").await;
    let res = app
        .post(&format!("/v1/posts/{eve_post}/comments"))
        .bearer_auth(&bob)
        .json(&json!({"content": "bob's own reply stays"}))
        .send()
        .await
        .unwrap();
    created_id(res, "comment_id").await;
    for (token, whom) in [(&bob, eve_id), (&carol, eve_id), (&eve, bob_id)] {
        let res = app
            .put(&format!("/v1/users/{whom}/follow"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .put(&format!("/v1/posts/{eve_post}/like"))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post("/v1/streams")
        .bearer_auth(&eve)
        .json(&json!({"title": STREAM_TITLE}))
        .send()
        .await
        .unwrap();
    let stream_id = created_id(res, "stream_id").await;
    settle(&app, &admin).await;

    // Before: the views hold Eve's data (so the searches below can find it when it is there),
    // the events hold it only sealed, and JetStream too.
    let dump = database_bytes(&app).await;
    assert!(
        contains_bytes(&dump, POST_2),
        "the post view holds the post"
    );
    let events_before = export(&app, &admin).await;
    assert!(contains_bytes(&events_before, POST_1), "the export opens");
    assert!(!search(&app, &bob, USERNAME, "users").await.is_empty());
    assert!(!search(&app, &bob, "pumpernickel", "posts").await.is_empty());
    assert!(
        contains_bytes(&dir_bytes(app.search_dir()), "pumpernickel"),
        "the index files hold the terms"
    );
    for domain in [Domain::User, Domain::Post, Domain::Stream] {
        let events = app
            .command_store()
            .read_raw(
                domain,
                &nova_infra::store::ReadFilter {
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for e in events {
            let text = e.payload.to_string();
            for t in traces() {
                assert!(
                    !text.contains(t),
                    "stored {domain}.{} holds {t:?}",
                    e.event_type
                );
            }
        }
    }

    // Refusals: an active user; a non-admin; an unknown id; not an id.
    let res = erase(&app, &admin, eve_id).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "account_active").await;
    let res = erase(&app, &bob, eve_id).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = erase(&app, &admin, Uuid::now_v7()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = erase(&app, &admin, "not-a-uuid").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Deactivate, then erase (twice: the second is a no-op that answers the same).
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&eve)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    settle(&app, &admin).await;
    let res = erase(&app, &admin, eve_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["erased"], true);
    assert_eq!(first["erased_now"], true);
    assert_eq!(first["views_purged"], true, "{first}");
    settle(&app, &admin).await;
    let res = erase(&app, &admin, eve_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    assert_eq!(second["erased_now"], false);
    assert_eq!(second["views_purged"], true);

    // Nothing left: database files, export, JetStream, read models, search index.
    let dump = database_bytes(&app).await;
    let exported = export(&app, &admin).await;
    let index = dir_bytes(app.search_dir());
    assert!(!index.is_empty());
    let client = async_nats::connect(nova_infra::testing::nats_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut jetstream = Vec::new();
    for domain in Domain::ALL {
        let head = app.db.store.head(domain).await.unwrap();
        if head == 0 {
            continue;
        }
        let mut stream = relayed_stream(&js, &names, domain, head).await;
        let last = stream.info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            jetstream.extend_from_slice(&m.payload);
        }
    }
    assert!(!jetstream.is_empty());
    for t in traces() {
        assert!(!contains_bytes(&dump, t), "the database holds {t:?}");
        assert!(!contains_bytes(&exported, t), "the export holds {t:?}");
        assert!(!contains_bytes(&jetstream, t), "JetStream holds {t:?}");
    }
    for word in [
        "quokka",
        "zanzibar",
        "plumcake",
        "marmalade",
        "pumpernickel",
        "gooseberry",
    ] {
        assert!(!contains_bytes(&index, word), "the index holds {word:?}");
    }
    assert!(contains_bytes(&exported, "[erased]"));
    let res = app
        .get(&format!("/v1/users/{eve_id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(search(&app, &bob, USERNAME, "users").await.is_empty());
    assert!(search(&app, &bob, "pumpernickel", "posts").await.is_empty());
    let comments: Value = app
        .get(&format!("/v1/posts/{bob_post}/comments"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(comments["items"], json!([]), "Eve's comment is gone");
    let stream: Value = app
        .get(&format!("/v1/streams/{stream_id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stream["title"], "[erased]");

    // Other people's data is untouched.
    let post: Value = app
        .get(&format!("/v1/posts/{bob_post}"))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(post["content"], BOB_POST);
    assert_eq!(post["comment_count"], 0);
    assert_eq!(
        search(&app, &carol, "walnut harmonica", "posts")
            .await
            .len(),
        1
    );
    let res = app
        .get(&format!("/v1/users/{carol_id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // History is whole (every event exported before is still there, erased fields and all)
    // and every view rebuilds to what it holds live.
    let ids = |ndjson: &[u8]| -> std::collections::HashSet<String> {
        ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Value>(l).unwrap()["event_id"].to_string())
            .collect()
    };
    let (before, after) = (ids(&events_before), ids(&exported));
    assert!(before.is_subset(&after) && after.len() > before.len());
    for view in nova_projections::all() {
        let mut live = Vec::new();
        for t in view.tables() {
            live.push((t.clone(), table_rows(&app.db.any, &t).await));
        }
        rebuild(&app, &admin, view.name()).await;
        for (t, rows) in live {
            assert_eq!(
                table_rows(&app.db.any, &t).await,
                rows,
                "{t} rebuilt differs from live"
            );
        }
    }
    rebuild(&app, &admin, nova_projections::search::NAME).await;
    assert!(search(&app, &bob, USERNAME, "users").await.is_empty());
    assert_eq!(
        search(&app, &carol, "walnut harmonica", "posts")
            .await
            .len(),
        1
    );
    let index = dir_bytes(app.search_dir());
    for word in ["quokka", "zanzibar", "pumpernickel", "gooseberry"] {
        assert!(
            !contains_bytes(&index, word),
            "the rebuilt index holds {word:?}"
        );
    }

    names.delete_streams(&js).await;
    app.stop().await;
}

/// A store written before ADR 0025: a post stored as `post.created` v1 (plaintext). It still
/// loads (the view shows it); the upgrade (run at every start) seals it in place, once; and an
/// erasure then reaches it.
async fn plaintext_history_still_loads_and_is_sealed_by_the_upgrade(engine: Engine) {
    use nova_infra::store::{AppendRequest, NewEvent, ReadFilter, StreamAppend};
    const OLD_TEXT: &str = "legacy walrus plaintext from before sealing";
    let app = spawn(engine).await;
    let (old_id, old, _) = app.user("legacy_author").await;
    let (_, admin, _) = app.user("upgrade_admin").await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            "upgrade_admin",
            Role::Admin,
        )
        .await
        .unwrap();
    let post_id = Uuid::now_v7();
    let at = chrono::Utc::now();
    let appended = app
        .db
        .store
        .backend()
        .append_batch(
            Domain::Post,
            &[AppendRequest {
                streams: vec![StreamAppend {
                    aggregate_id: post_id,
                    aggregate_type: "post".into(),
                    expected_version: 0,
                    events: vec![NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: "created".into(),
                        schema_version: 1,
                        payload: json!({"post_id": post_id, "author_id": old_id,
                            "content": OLD_TEXT, "media_urls": [], "mentions": [],
                            "created_at": at}),
                    }],
                }],
                metadata: nova_event_schemas::EventMetadata {
                    actor_id: Some(old_id),
                    ..Default::default()
                },
                recorded_at: at,
                command_key: None,
            }],
        )
        .await
        .unwrap();
    let position = appended[0].as_ref().unwrap().last_position;
    // Version 1 loads: in the view and through the aggregate (an edit by its author).
    let res = app
        .get(&format!("/v1/posts/{post_id}"))
        .header("X-Nova-Min-Position", format!("post:{position}"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["content"], OLD_TEXT);
    let raw = |app: &TestApp| {
        let store = app.command_store();
        async move {
            store
                .read_raw(Domain::Post, &ReadFilter::default())
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.aggregate_id == post_id)
                .unwrap()
        }
    };
    assert_eq!(raw(&app).await.schema_version, 1);

    // The upgrade seals it (once), and it reads the same.
    let keys = nova_commands::user::data_keys::DataKeyVault::new(app.db.any.clone());
    assert_eq!(
        nova::app::seal_history(&app.command_store(), &keys)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        nova::app::seal_history(&app.command_store(), &keys)
            .await
            .unwrap(),
        0
    );
    let sealed = raw(&app).await;
    assert_eq!(sealed.schema_version, 2);
    assert!(!sealed.payload.to_string().contains("walrus"));
    let opened = app
        .db
        .store
        .load(Domain::Post, post_id, 0)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(opened.payload["content"], OLD_TEXT);
    let res = app
        .patch(&format!("/v1/posts/{post_id}"))
        .bearer_auth(&old)
        .json(&json!({"content": "edited after the upgrade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Erasure now reaches what was plaintext.
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Through the CLI this time (human summary aside, the same report).
    let cli = app.cli_json(&["admin", "erase-user", &old_id.to_string()]);
    assert_eq!(
        (&cli["erased"], &cli["erased_now"]),
        (&json!(true), &json!(true)),
        "{cli}"
    );
    let res = erase(&app, &admin, old_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["erased_now"], false);
    let exported = export(&app, &admin).await;
    assert!(!contains_bytes(&exported, "walrus"));
    assert!(!contains_bytes(&exported, "edited after the upgrade"));
    app.stop().await;
}
