//! Analysts and privacy (ADR 0016): no secret in any event, in the history as JetStream carries
//! it, or in what the store keeps of events written before the credentials table existed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_infra::store::{AppendRequest, NewEvent, ReadFilter, StoreError, StreamAppend};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    no_secret_in_any_event_or_jetstream_message,
    old_secrets_are_moved_out_by_the_upgrade
);

/// Every secret the credentials table holds.
async fn secrets_of(app: &TestApp) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT secret FROM user_credentials")
        .fetch_all(&app.db.any)
        .await
        .unwrap();
    rows.into_iter().map(|(s,)| s).collect()
}

/// Every stored event of every domain, serialized as the store returns it.
async fn all_events(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    for domain in Domain::ALL {
        let mut after = 0;
        loop {
            let page = app
                .db
                .store
                .read(
                    domain,
                    &ReadFilter {
                        after_position: after,
                        limit: 500,
                        ..ReadFilter::default()
                    },
                )
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            out.extend(page.iter().map(|e| serde_json::to_string(e).unwrap()));
        }
    }
    out
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    assert!(
        !text.contains("$argon2"),
        "{what} carries an argon2 hash: {text}"
    );
    assert!(!text.contains("password_hash"), "{what}: {text}");
    assert!(!text.contains("refresh_token_hash"), "{what}: {text}");
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} carries a secret: {text}"
        );
    }
}

async fn no_secret_in_any_event_or_jetstream_message(engine: Engine) {
    use sha2::Digest;
    let nats = nova_infra::testing::PrivateNats::start();
    let names = nova_infra::nats::Names::unique();
    let stream_names = names.clone();
    let app = spawn_configured(engine, |s| {
        s.nats_url = Some(nats.url());
        s.nats_names = names;
    })
    .await;

    // Registration, login, refresh, password change, another login.
    let (_, access, refresh) = app.user("alice").await;
    let res = app
        .post("/v1/sessions/refresh")
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post("/v1/users/me/password")
        .bearer_auth(&access)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        app.login("alice", "a brand new password").await.status(),
        StatusCode::OK
    );
    // A legacy import and its first login, which rehashes.
    let legacy = hex::encode(sha2::Sha256::digest(b"old legacy pass"));
    let ctx = nova_commands::CommandContext::new(None, None);
    app.user_commands()
        .import_legacy(&ctx, "lena", &legacy, None)
        .await
        .unwrap();
    assert_eq!(
        app.login("lena", "old legacy pass").await.status(),
        StatusCode::OK
    );

    let secrets = secrets_of(&app).await;
    assert!(secrets.contains(&legacy));
    assert!(secrets.iter().any(|s| s.starts_with("$argon2id$")));
    // password: alice ×2, lena ×2; refresh tokens: 4 logins/refreshes.
    assert!(secrets.len() >= 8, "{} secrets", secrets.len());
    let events = all_events(&app).await;
    assert!(!events.is_empty());
    for e in &events {
        assert_clean("event", e, &secrets);
    }

    // Every user event as JetStream carries it, once the relay has published them all.
    let head = app.db.store.head(Domain::User).await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(mut s) = js.get_stream(stream_names.stream(Domain::User)).await {
            if s.info().await.map(|i| i.state.messages).unwrap_or(0) >= head as u64 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "relay did not publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_clean(
            "JetStream message",
            &String::from_utf8_lossy(&m.payload),
            &secrets,
        );
    }
    stream_names.delete_streams(&js).await;
    app.stop().await;
    drop(nats);
}

/// A store written before ADR 0016: credential events of version 1 carry their hashes. The
/// upgrade (run at every start and by `nova admin upgrade-credentials`) moves them into the
/// credentials table and rewrites the events to version 2; the account still logs in with the
/// same password and refreshes with the same token.
async fn old_secrets_are_moved_out_by_the_upgrade(engine: Engine) {
    let app = spawn(engine).await;
    let passwords = nova_commands::user::credentials::Passwords::new(cheap_argon2()).unwrap();
    let hash = passwords
        .hash(secrecy::SecretString::from(PASSWORD))
        .await
        .unwrap();
    let user_id = Uuid::now_v7();
    let now = chrono::Utc::now();
    let claim_id = nova_event_schemas::user::username_claim_id("olga");
    let ev = |t: &str, v: i32, payload: Value| NewEvent {
        event_id: Uuid::now_v7(),
        event_type: t.into(),
        schema_version: v,
        payload,
    };
    let request = AppendRequest {
        streams: vec![
            StreamAppend {
                aggregate_id: claim_id,
                aggregate_type: "username_claim".into(),
                expected_version: 0,
                events: vec![ev(
                    "username_claimed",
                    1,
                    json!({"username": "olga", "user_id": user_id}),
                )],
            },
            StreamAppend {
                aggregate_id: user_id,
                aggregate_type: "user".into(),
                expected_version: 0,
                events: vec![ev(
                    "registered",
                    1,
                    json!({"user_id": user_id, "username": "olga", "display_name": null,
                        "password_hash": hash, "registered_at": now}),
                )],
            },
        ],
        metadata: nova_event_schemas::EventMetadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor_id: None,
            request_id: None,
        },
        recorded_at: now,
        command_key: None,
    };
    let results: Vec<Result<_, StoreError>> = app
        .db
        .store
        .backend()
        .append_batch(Domain::User, &[request])
        .await
        .unwrap();
    assert!(results[0].is_ok());

    let users = app.user_commands();
    let upgraded = users.upgrade_credentials().await.unwrap();
    assert_eq!(upgraded.rewritten, 1);
    // Idempotent.
    assert_eq!(users.upgrade_credentials().await.unwrap().rewritten, 0);
    let stored = app.db.store.load(Domain::User, user_id, 0).await.unwrap();
    assert_eq!(stored[0].schema_version, 2);
    assert!(stored[0].payload.get("password_hash").is_none());
    assert!(!stored[0].payload.to_string().contains(&hash));
    assert!(secrets_of(&app).await.contains(&hash));

    // The same password still logs in; the new session's token refreshes.
    let res = app.login("olga", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let res = app
        .post("/v1/sessions/refresh")
        .json(&json!({"refresh_token": body["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let all_secrets = secrets_of(&app).await;
    for e in all_events(&app).await {
        assert_clean("event", &e, &all_secrets);
    }
    app.stop().await;
}
