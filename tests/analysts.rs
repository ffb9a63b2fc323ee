//! Analysts and privacy (ADR 0016): no secret in any event, in the history as JetStream carries
//! it, or in what the store keeps of events written before the credentials table existed.

mod common;

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_infra::store::{AppendRequest, NewEvent, ReadFilter, StoreError, StreamAppend};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    no_secret_in_any_event_or_jetstream_message,
    old_secrets_are_moved_out_by_the_upgrade,
    export_equals_the_store,
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
    let mut stream = relayed_stream(&js, &stream_names, Domain::User, head).await;
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

/// Which stored events a filter keeps.
type Keep = Box<dyn Fn(&nova_infra::store::RecordedEvent) -> bool>;

/// The comparable part of an exported (or stored and upcast) event.
fn key(v: &Value) -> Value {
    json!({
        "domain": v["domain"], "position": v["position"], "event_id": v["event_id"],
        "aggregate_id": v["aggregate_id"], "aggregate_type": v["aggregate_type"],
        "version": v["version"], "event_type": v["event_type"],
        "schema_version": v["schema_version"], "payload": v["payload"],
        "metadata": v["metadata"],
    })
}

/// The store's history of `domain`, upcast, filtered like the export filters.
async fn expected(
    app: &TestApp,
    domain: Domain,
    keep: impl Fn(&nova_infra::store::RecordedEvent) -> bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .db
            .store
            .read(
                domain,
                &ReadFilter {
                    after_position: after,
                    limit: 7,
                    ..ReadFilter::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in page.into_iter().filter(|e| keep(e)) {
            let e = nova::export::latest(e).unwrap();
            out.push(key(&serde_json::to_value(&e).unwrap()));
        }
    }
    out
}

/// Every page of `GET /v1/events?{query}`, following `next_cursor`.
async fn paged(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::from("0");
    loop {
        let res = app
            .get(&format!("/v1/events?{query}&limit=2&after={after}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        out.extend(items.iter().map(key));
        match body["next_cursor"].as_str() {
            Some(c) => after = c.to_owned(),
            None => break,
        }
    }
    out
}

async fn ndjson(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/v1/events?{query}"))
        .header("accept", "application/x-ndjson")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = res.text().await.unwrap();
    text.lines()
        .map(|l| key(&serde_json::from_str::<Value>(l).unwrap()))
        .collect()
}

/// Runs `python3 -c <code>`; `None` when `module` is not installed (a failure under CI=true
/// for DuckDB, which `.ci/run` installs).
fn python(module: &str, code: &str, required_in_ci: bool) -> Option<String> {
    let present = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            !(required_in_ci && std::env::var("CI").is_ok_and(|v| v == "true")),
            "python module {module} missing under CI"
        );
        eprintln!("skipping the {module} check: python3 -c 'import {module}' failed");
        return None;
    }
    let out = std::process::Command::new("python3")
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn export_equals_the_store(engine: Engine) {
    let app = spawn(engine).await;
    let (bob, bob_token, _) = app.user("bob").await;
    let (_, carl_token, _) = app.user("carl").await;
    for (token, text) in [
        (&bob_token, "hello, \"world\"\nline two"),
        (&carl_token, "second"),
    ] {
        let res = app
            .post("/v1/posts")
            .bearer_auth(token)
            .json(&json!({"content": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let (_, ana, _) = app.user("ana").await;
    // Before the role: refused.
    let res = app
        .get("/v1/events?domain=user")
        .bearer_auth(&ana)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let ctx = nova_commands::CommandContext::new(None, None);
    app.user_commands()
        .grant_role(&ctx, "ana", nova_event_schemas::user::Role::Analyst)
        .await
        .unwrap();
    let res = app
        .get("/v1/events?domain=nope")
        .bearer_auth(&ana)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;

    for domain in [Domain::User, Domain::Post] {
        let q = format!("domain={}", domain.as_str());
        let all = expected(&app, domain, |_| true).await;
        assert!(all.len() >= 2);
        assert_eq!(paged(&app, &ana, &q).await, all, "{q}");
        assert_eq!(ndjson(&app, &ana, &q).await, all, "{q}");
        assert_eq!(ndjson(&app, &ana, &format!("{q}&limit=2")).await, all[..2]);
    }
    // Each filter, alone and combined, paged and streamed.
    let users = app
        .db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                limit: 1000,
                ..ReadFilter::default()
            },
        )
        .await
        .unwrap();
    let mid = &users[users.len() / 2];
    let until = mid.recorded_at;
    let until_q = until
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        .replace('+', "%2B");
    let cases: Vec<(String, Keep)> = vec![
        (
            "type=registered".into(),
            Box::new(|e| e.event_type == "registered"),
        ),
        (
            format!("aggregate_id={bob}"),
            Box::new(move |e| e.aggregate_id == bob),
        ),
        ("after=3".into(), Box::new(|e| e.position > 3)),
        (
            format!("until={until_q}"),
            Box::new(move |e| e.recorded_at <= until),
        ),
        (
            format!("type=session_started&aggregate_id={bob}&until={until_q}"),
            Box::new(move |e| {
                e.event_type == "session_started" && e.aggregate_id == bob && e.recorded_at <= until
            }),
        ),
    ];
    for (filter, keep) in cases {
        let q = format!("domain=user&{filter}");
        let want = expected(&app, Domain::User, keep).await;
        if filter == "after=3" {
            let streamed = ndjson(&app, &ana, &q).await;
            assert_eq!(streamed, want, "{q}");
            continue;
        }
        assert_eq!(paged(&app, &ana, &q).await, want, "{q}");
        assert_eq!(ndjson(&app, &ana, &q).await, want, "{q}");
    }

    // The command line: NDJSON and CSV files, a JSON summary, resumable with --after.
    let dir = std::env::temp_dir().join(format!("nova-export-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let all = expected(&app, Domain::User, |_| true).await;
    let run =
        |args: &[&str]| app.cli_json(&[&["events", "export", "--domain", "user"], args].concat());
    let nd = dir.join("user.ndjson");
    let summary = run(&["--output", nd.to_str().unwrap()]);
    assert_eq!(summary["events"], all.len());
    let lines: Vec<Value> = std::fs::read_to_string(&nd)
        .unwrap()
        .lines()
        .map(|l| key(&serde_json::from_str::<Value>(l).unwrap()))
        .collect();
    assert_eq!(lines, all);
    let last = summary["last_position"].as_i64().unwrap();
    let resumed = run(&[
        "--after",
        &(last - 2).to_string(),
        "--output",
        dir.join("rest.ndjson").to_str().unwrap(),
    ]);
    assert_eq!(resumed["events"], 2);
    let csv = dir.join("user.csv");
    let summary = run(&["--format", "csv", "--output", csv.to_str().unwrap()]);
    assert_eq!(summary["events"], all.len());

    // Loaded unchanged by DuckDB and pandas.
    let (nd, csv) = (nd.display().to_string(), csv.display().to_string());
    if let Some(n) = python(
        "duckdb",
        &format!(
            "import duckdb\n\
             print(duckdb.sql(\"select count(*) from read_json_auto('{nd}')\").fetchall()[0][0],\n\
                   duckdb.sql(\"select count(*) from read_csv_auto('{csv}')\").fetchall()[0][0],\n\
                   duckdb.sql(\"select max(position) from read_json_auto('{nd}')\").fetchall()[0][0])"
        ),
        true,
    ) {
        assert_eq!(n, format!("{0} {0} {1}", all.len(), last));
    }
    if let Some(n) = python(
        "pandas",
        &format!("import pandas\nprint(len(pandas.read_json('{nd}', lines=True)), len(pandas.read_csv('{csv}')))"),
        false,
    ) {
        assert_eq!(n, format!("{0} {0}", all.len()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    app.stop().await;
}
