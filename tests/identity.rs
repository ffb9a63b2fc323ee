//! End-to-end tests of the Identity routes (API.md), over real HTTP, on both engines.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    register_login_me_walkthrough,
    registration_rejects_bad_input,
    concurrent_registrations_of_one_name,
    login_failures_and_lockout,
    access_token_checks,
    refresh_rotation_and_reuse,
    logout_revokes_the_session,
    profile_update,
    password_change,
    deactivation,
    legacy_hash_is_upgraded_on_login,
    idempotency_key,
    consistency_header,
    request_id_becomes_correlation_id,
    system_routes,
    bodies_must_be_json_objects,
    password_route_rejects_bad_fields,
    expired_refresh_token,
    unknown_usernames_lock_like_real_ones,
    idempotency_stores_only_meaningful_answers,
    request_ids_are_sanitized,
    idempotency_fingerprint_is_keyed,
    revoked_token_gets_no_replay,
    anonymous_callers_do_not_share_keys,
    retry_after_lost_answer_registers_once,
    wrong_current_passwords_lock_the_account,
    active_deactivated_and_unknown_names_fail_alike,
    invisible_formatting_characters_are_refused,
    many_refreshes_keep_the_user_state_bounded,
    overlong_login_input_is_refused_before_hashing,
);

async fn register_login_me_walkthrough(engine: Engine) {
    let app = spawn(engine).await;
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "Alice_1", "password": PASSWORD, "display_name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let pos = position(&res);
    assert!(pos.starts_with("user:"), "{pos}");
    let id: Value = res.json().await.unwrap();
    let id = id["user_id"].as_str().unwrap().to_owned();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    // Read-your-writes on demand.
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["user_id"], id);
    assert_eq!(p["username"], "alice_1");
    assert_eq!(p["display_name"], "Alice");
    assert_eq!(p["status"], Value::Null);
    assert_eq!(p["profile_picture_url"], Value::Null);
    assert_eq!(p["followers"], 0);
    assert_eq!(p["following"], 0);
    assert!(p["created_at"].as_str().is_some());

    // Login is case-insensitive on the username.
    let res = app.login("ALICE_1", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["user_id"], id);
    assert_eq!(t["expires_in"], 900);
    let access = t["access_token"].as_str().unwrap();
    assert!(t["refresh_token"].as_str().unwrap().starts_with("nrt_"));

    let res = app
        .get("/v1/users/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me, p);

    let res = app
        .get(&format!("/v1/users/{}", Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.get("/v1/users/not-a-uuid").send().await.unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_path").await;
    app.stop().await;
}

async fn registration_rejects_bad_input(engine: Engine) {
    let app = spawn_with(engine, cheap_argon2(), 4096).await;
    let post = |body: String| {
        app.post("/v1/users")
            .header("content-type", "application/json")
            .body(body)
    };
    let res = post(r#"{"username": "bob", "password": "#.into())
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_json").await;

    let res = post(r#"{"username": "bob"}"#.into()).send().await.unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "password");

    let res = post(r#"{"username": 42, "password": "long enough"}"#.into())
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "username");

    let res = post(r#"{"username": "bob", "password": "long enough", "admin": true}"#.into())
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "admin");

    for (username, password, field) in [
        ("ab", PASSWORD, "username"),
        (&*"a".repeat(33), PASSWORD, "username"),
        ("bob smith", PASSWORD, "username"),
        ("bób", PASSWORD, "username"),
        ("bob-1", PASSWORD, "username"),
        ("bob", "short", "password"),
        ("bob", &*"p".repeat(129), "password"),
    ] {
        let res = app
            .post("/v1/users")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(e["details"]["field"], field, "{username} / {password}");
    }
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "bob", "password": PASSWORD, "display_name": "x".repeat(65)}))
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "display_name");

    let res = app
        .post("/v1/users")
        .body(r#"{"username": "bob", "password": "long enough"}"#)
        .send()
        .await
        .unwrap();
    expect_error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let res = post(format!(
        r#"{{"username": "bob", "password": "{}"}}"#,
        "x".repeat(5000)
    ))
    .send()
    .await
    .unwrap();
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    app.register("bob").await;
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "BOB", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::CONFLICT, "username_taken").await;
    app.stop().await;
}

async fn concurrent_registrations_of_one_name(engine: Engine) {
    let app = spawn(engine).await;
    let names = [
        "carol", "CAROL", "Carol", "cArol", "caRol", "carOl", "caroL", "CaRoL",
    ];
    let requests = names.iter().map(|name| {
        app.post("/v1/users")
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
    });
    let results = futures::future::join_all(requests).await;
    let mut created = 0;
    for r in results {
        let r = r.unwrap();
        match r.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                expect_error(r, StatusCode::CONFLICT, "username_taken").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    // Exactly one user stream exists in the store.
    let registered = app
        .db
        .store
        .read(
            Domain::User,
            &nova_infra::store::ReadFilter {
                after_position: 0,
                limit: 100,
                aggregate_id: None,
                event_type: Some("registered".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(registered.len(), 1);
    app.stop().await;
}

async fn login_failures_and_lockout(engine: Engine) {
    let app = spawn(engine).await;
    app.register("dave").await;
    app.register("erin").await;

    let unknown = app.login("nobody", PASSWORD).await;
    let unknown = expect_error(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let wrong = app.login("dave", "wrong password").await;
    let wrong = expect_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        unknown, wrong,
        "unknown user and wrong password must look the same"
    );

    let res = app
        .post("/v1/sessions")
        .json(&json!({"username": "dave"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;

    // Three more failures; the fifth within 15 minutes locks the account, and says so.
    for _ in 0..3 {
        let res = app.login("dave", "wrong password").await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let res = app.login("dave", "wrong password").await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // Even the right password is refused while locked.
    let res = app.login("dave", PASSWORD).await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((800..=900).contains(&retry_after), "{retry_after}");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // Another account is unaffected.
    assert_eq!(app.login("erin", PASSWORD).await.status(), StatusCode::OK);
    app.stop().await;
}

async fn access_token_checks(engine: Engine) {
    let app = spawn(engine).await;
    let (id, access, _) = app.user("frank").await;
    let me = |auth: Option<String>| {
        let r = app.get("/v1/users/me");
        match auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    };
    expect_error(
        me(None).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    for bad in [
        "Bearer garbage".to_owned(),
        format!("Basic {access}"),
        "Bearer ".to_owned(),
        format!("Bearer {}x", access),
    ] {
        let res = me(Some(bad)).send().await.unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    // Tampered payload: claim another subject, keep the signature.
    let parts: Vec<&str> = access.split('.').collect();
    let forged_claims = base64_url(
        &json!({"sub": Uuid::now_v7(), "sid": Uuid::now_v7(), "iat": 0, "exp": 4_000_000_000i64})
            .to_string(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    let res = me(Some(format!("Bearer {tampered}"))).send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Validly signed but expired, and validly shaped but signed with another key.
    let sid: Value = decode_claims(&access);
    let now = chrono::Utc::now().timestamp();
    let expired = sign(
        SECRET,
        json!({"sub": id, "sid": sid["sid"], "iat": now - 1000, "exp": now - 60}),
    );
    let res = me(Some(format!("Bearer {expired}"))).send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let foreign = sign(
        "another-secret-another-secret-another",
        json!({"sub": id, "sid": sid["sid"], "iat": now, "exp": now + 600}),
    );
    let res = me(Some(format!("Bearer {foreign}"))).send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    // The genuine token works.
    assert_eq!(
        me(Some(format!("Bearer {access}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn sign(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/sessions/refresh")
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

async fn refresh_rotation_and_reuse(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access1, refresh1) = app.user("grace").await;
    let res = refresh(&app, &refresh1).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.unwrap();
    let refresh2 = pair["refresh_token"].as_str().unwrap().to_owned();
    let access2 = pair["access_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh1);
    assert_eq!(
        app.get("/v1/users/me")
            .bearer_auth(&access2)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The rotated token comes back: the whole session family is revoked.
    let res = refresh(&app, &refresh1).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    let res = refresh(&app, &refresh2).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    for access in [&access1, &access2] {
        let res = app
            .get("/v1/users/me")
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    // Garbage and forged tokens.
    let res = refresh(&app, "nope").await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let forged = format!("{}{}", &refresh2[..refresh2.len() - 4], "0000");
    let res = refresh(&app, &forged).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app
        .post("/v1/sessions/refresh")
        .json(&json!({"refresh_token": 7}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    // A new login still works.
    assert_eq!(app.login("grace", PASSWORD).await.status(), StatusCode::OK);
    app.stop().await;
}

async fn logout_revokes_the_session(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, refresh_token) = app.user("heidi").await;
    let other = app
        .login("heidi", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let res = app
        .delete("/v1/sessions/current")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .get("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = refresh(&app, &refresh_token).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app
        .delete("/v1/sessions/current")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = app.delete("/v1/sessions/current").send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // The other session is untouched.
    let res = app
        .get("/v1/users/me")
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;
}

async fn profile_update(engine: Engine) {
    let app = spawn(engine).await;
    let (id, access, _) = app.user("ivan").await;
    let patch = |body: Value| {
        app.patch("/v1/users/me")
            .bearer_auth(&access)
            .json(&body)
            .send()
    };
    let res = patch(json!({"display_name": "Ivan", "status": "hi", "profile_picture_url": "https://img.example/i.png"}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["display_name"], "Ivan");
    assert_eq!(body["version"], 3);

    // Absent keeps, null clears.
    let res = patch(json!({"status": null})).await.unwrap();
    let pos2 = position(&res);
    assert_ne!(pos, pos2);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["display_name"], "Ivan");
    assert_eq!(body["status"], Value::Null);
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos2)
        .send()
        .await
        .unwrap();
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["display_name"], "Ivan");
    assert_eq!(p["status"], Value::Null);
    assert_eq!(p["profile_picture_url"], "https://img.example/i.png");

    for (body, field) in [
        (
            json!({"profile_picture_url": "ftp://x/y"}),
            "profile_picture_url",
        ),
        (
            json!({"profile_picture_url": "not a url"}),
            "profile_picture_url",
        ),
        (json!({"status": "s".repeat(281)}), "status"),
        (json!({"display_name": "d".repeat(65)}), "display_name"),
        (json!({"display_name": 5}), "display_name"),
        (json!({"nickname": "x"}), "nickname"),
    ] {
        let e = expect_error(
            patch(body).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        )
        .await;
        assert_eq!(e["details"]["field"], field);
    }
    let res = app
        .patch("/v1/users/me")
        .json(&json!({"status": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

async fn password_change(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("judy").await;
    let other: Value = app.login("judy", PASSWORD).await.json().await.unwrap();
    let change = |current: &str, new: &str| {
        app.post("/v1/users/me/password")
            .bearer_auth(&access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let res = change("not it at all", "a brand new one").await.unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "wrong_password").await;
    let res = change(PASSWORD, "short").await.unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "new_password");
    let res = change(PASSWORD, "a brand new one").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let old = app.login("judy", PASSWORD).await;
    expect_error(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        app.login("judy", "a brand new one").await.status(),
        StatusCode::OK
    );
    // The session that changed the password survives; the other one is revoked.
    assert_eq!(
        app.get("/v1/users/me")
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let res = app
        .get("/v1/users/me")
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = refresh(&app, other["refresh_token"].as_str().unwrap()).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    app.stop().await;
}

async fn deactivation(engine: Engine) {
    let app = spawn(engine).await;
    let (id, access, refresh_token) = app.user("kim").await;
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let pos = position(&res);
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .get("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = app.login("kim", PASSWORD).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let res = refresh(&app, &refresh_token).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // The name stays reserved.
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "kim", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::CONFLICT, "username_taken").await;
    // The event other domains react to is in the store.
    let events = app.db.store.load(Domain::User, id, 0).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, "deactivated");
    app.stop().await;
}

async fn legacy_hash_is_upgraded_on_login(engine: Engine) {
    use sha2::Digest;
    let app = spawn(engine).await;
    let users = app.user_commands();
    let legacy = hex::encode(sha2::Sha256::digest(b"old legacy pass"));
    let ctx = nova_commands::CommandContext::new(None, None);
    let (id, _) = users
        .import_legacy(&ctx, "lena", &legacy, None)
        .await
        .unwrap();

    let res = app.login("lena", "wrong legacy pass").await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        app.login("lena", "old legacy pass").await.status(),
        StatusCode::OK
    );
    let events = app.db.store.load(Domain::User, id, 0).await.unwrap();
    let rehashed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "password_rehashed")
        .collect();
    assert_eq!(rehashed.len(), 1);
    // The event names the new credential; the credentials table holds its argon2id hash.
    assert!(rehashed[0].payload.get("password_hash").is_none());
    let credential = rehashed[0].payload["credential_id"].as_str().unwrap();
    let (hash,): (String,) =
        sqlx::query_as("SELECT secret FROM user_credentials WHERE credential_id = $1")
            .bind(credential)
            .fetch_one(&app.db.any)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    // Still works, now against argon2id, and is not upgraded twice.
    assert_eq!(
        app.login("lena", "old legacy pass").await.status(),
        StatusCode::OK
    );
    let events = app.db.store.load(Domain::User, id, 0).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "password_rehashed")
            .count(),
        1
    );
    app.stop().await;
}

async fn idempotency_key(engine: Engine) {
    let app = spawn(engine).await;
    let send = |key: &str, username: &str| {
        app.post("/v1/users")
            .header("Idempotency-Key", key)
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
    };
    let first = send("k-1", "mallory").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_pos = position(&first);
    let first: Value = first.json().await.unwrap();
    let again = send("k-1", "mallory").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(position(&again), first_pos);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    let head = app.db.store.head(Domain::User).await.unwrap();
    assert_eq!(
        format!("user:{head}"),
        first_pos,
        "the retry appended nothing"
    );

    // The same key with a different request is refused within a caller's key space
    // (anonymous callers are scoped by the request itself, ADR 0012, so this is shown with
    // an authenticated caller).
    let (_, access, _) = app.user("keyed_caller").await;
    let patch = |name: &str| {
        app.patch("/v1/users/me")
            .bearer_auth(&access)
            .header("Idempotency-Key", "k-1")
            .json(&json!({ "display_name": name }))
            .send()
    };
    assert_eq!(patch("Kay").await.unwrap().status(), StatusCode::OK);
    let res = patch("Someone Else").await.unwrap();
    expect_error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    // Without a key, the same request is a new command (and here a duplicate).
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "mallory", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::CONFLICT, "username_taken").await;
    let res = send(&"k".repeat(300), "nina").await.unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;
    app.stop().await;
}

async fn consistency_header(engine: Engine) {
    let app = spawn(engine).await;
    let (id, _) = app.register("oscar").await;
    for bad in ["user", "user:x", "nodomain:3", "user:-1"] {
        let res = app
            .get(&format!("/v1/users/{id}"))
            .header("X-Nova-Min-Position", bad)
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;
    }
    // A position that has not been written will never be reached: refused before any wait
    // (the bounded wait and its 503 are tested in tests/consistency.rs).
    let started = Instant::now();
    let res = app
        .get(&format!("/v1/users/{id}"))
        .header("X-Nova-Min-Position", "user:999999")
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;
    app.stop().await;
}

async fn request_id_becomes_correlation_id(engine: Engine) {
    let app = spawn(engine).await;
    let rid = Uuid::new_v4();
    let res = app
        .post("/v1/users")
        .header("X-Request-Id", rid.to_string())
        .json(&json!({"username": "peggy", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], rid.to_string().as_str());
    let id: Value = res.json().await.unwrap();
    let id: Uuid = id["user_id"].as_str().unwrap().parse().unwrap();
    let events = app.db.store.load(Domain::User, id, 0).await.unwrap();
    assert_eq!(events[0].metadata.correlation_id, rid);
    assert_eq!(
        events[0].metadata.request_id.as_deref(),
        Some(rid.to_string().as_str())
    );

    // An authenticated command records its actor.
    let res = app.login("peggy", PASSWORD).await;
    let t: Value = res.json().await.unwrap();
    app.patch("/v1/users/me")
        .bearer_auth(t["access_token"].as_str().unwrap())
        .header("X-Request-Id", "custom-request-id")
        .json(&json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    let events = app.db.store.load(Domain::User, id, 0).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "profile_updated");
    assert_eq!(last.metadata.actor_id, Some(id));
    assert_eq!(
        last.metadata.request_id.as_deref(),
        Some("custom-request-id")
    );
    app.stop().await;
}

async fn system_routes(engine: Engine) {
    let app = spawn(engine).await;
    assert_eq!(
        app.get("/healthz").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/readyz").send().await.unwrap().status(),
        StatusCode::OK
    );
    let doc: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/users", "post"),
        ("/v1/sessions", "post"),
        ("/v1/sessions/refresh", "post"),
        ("/v1/sessions/current", "delete"),
        ("/v1/users/me", "get"),
        ("/v1/users/me", "patch"),
        ("/v1/users/me", "delete"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/me/password", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    let res = app.get("/v1/nope").send().await.unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.client.put(app.url("/v1/users")).send().await.unwrap();
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    app.stop().await;
}

/// Unknown user and wrong password must cost the same time (production argon2 cost), so a
/// login probe cannot tell which usernames exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    let app = spawn_with(
        Engine::Sqlite,
        nova_commands::user::credentials::Argon2Config::default(),
        64 * 1024,
    )
    .await;
    let mut names = Vec::new();
    for i in 0..6 {
        let name = format!("timing_{i}");
        app.register(&name).await;
        names.push(name);
    }
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for name in &names {
        let t = Instant::now();
        let r = app.login(&format!("ghost_{name}"), "whatever pass").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        unknown.push(t.elapsed());
        let t = Instant::now();
        let r = app.login(name, "whatever pass").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        wrong.push(t.elapsed());
    }
    unknown.sort();
    wrong.sort();
    let (u, w) = (unknown[3].as_secs_f64(), wrong[3].as_secs_f64());
    let ratio = w / u;
    assert!(
        (0.5..2.0).contains(&ratio),
        "median unknown-user login {u:.4}s vs wrong-password login {w:.4}s"
    );
    app.stop().await;
}

async fn bodies_must_be_json_objects(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("olga").await;
    let send = |method: reqwest::Method, path: &str, body: &str, auth: bool| {
        let r = app
            .client
            .request(method, app.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if auth {
            r.bearer_auth(&access)
        } else {
            r
        }
    };
    use reqwest::Method;
    for (method, path, auth) in [
        (Method::POST, "/v1/users", false),
        (Method::POST, "/v1/sessions", false),
        (Method::POST, "/v1/sessions/refresh", false),
        (Method::PATCH, "/v1/users/me", true),
        (Method::POST, "/v1/users/me/password", true),
    ] {
        for body in [
            r#"["olga", "correct horse battery"]"#,
            "",
            "  ",
            "{ ,}",
            "null",
            "42",
        ] {
            let res = send(method.clone(), path, body, auth).send().await.unwrap();
            expect_error(res, StatusCode::BAD_REQUEST, "invalid_json").await;
        }
    }
    // `application/merge-patch+json` style suffixes are JSON too.
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&access)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"status": "ok"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&access)
        .header("content-type", "text/plain")
        .body(r#"{"status": "ok"}"#)
        .send()
        .await
        .unwrap();
    expect_error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    app.stop().await;
}

async fn password_route_rejects_bad_fields(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("pat").await;
    for (body, field) in [
        (json!({"current_password": PASSWORD}), "new_password"),
        (
            json!({"new_password": "another good one"}),
            "current_password",
        ),
        (
            json!({"current_password": 1, "new_password": "another good one"}),
            "current_password",
        ),
        (
            json!({"current_password": "x".repeat(129), "new_password": "another good one"}),
            "current_password",
        ),
        (
            json!({"current_password": PASSWORD, "new_password": "n".repeat(129)}),
            "new_password",
        ),
    ] {
        let res = app
            .post("/v1/users/me/password")
            .bearer_auth(&access)
            .json(&body)
            .send()
            .await
            .unwrap();
        let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(e["details"]["field"], field, "{body}");
    }
    let res = app
        .post("/v1/users/me/password")
        .json(&json!({"current_password": PASSWORD, "new_password": "another good one"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&access)
        .json(&json!({"profile_picture_url": "https://user:secret@img.example/p.png"}))
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "profile_picture_url");
    app.stop().await;
}

async fn expired_refresh_token(engine: Engine) {
    let app = spawn_ttl(
        engine,
        cheap_argon2(),
        64 * 1024,
        None,
        chrono::Duration::seconds(1),
    )
    .await;
    let (_, _, refresh_token) = app.user("quinn").await;
    // Wait out the refresh token's lifetime (time itself is the condition here).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let res = refresh(&app, &refresh_token).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    app.stop().await;
}

async fn unknown_usernames_lock_like_real_ones(engine: Engine) {
    let app = spawn(engine).await;
    app.register("rita").await;
    let mut real = Vec::new();
    let mut ghost = Vec::new();
    for _ in 0..6 {
        real.push(app.login("rita", "wrong password").await.status());
        ghost.push(app.login("no_such_rita", "wrong password").await.status());
    }
    let expected = [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::TOO_MANY_REQUESTS,
    ];
    assert_eq!(real, expected);
    assert_eq!(ghost, expected);
    app.stop().await;
}

async fn idempotency_stores_only_meaningful_answers(engine: Engine) {
    let app = spawn(engine).await;
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&app.db.any)
            .await
            .unwrap();
        n
    };
    // Unknown route and missing token: nothing stored, so nothing replayed later.
    let res = app
        .post("/v1/nothing")
        .header("Idempotency-Key", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app
        .post("/v1/users/me/password")
        .header("Idempotency-Key", "b")
        .json(&json!({"current_password": "x", "new_password": "yyyyyyyyy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Login answers carry tokens: never stored.
    app.register("sam").await;
    let res = app
        .post("/v1/sessions")
        .header("Idempotency-Key", "c")
        .json(&json!({"username": "sam", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(count().await, 0);
    // A validation error is an answer worth replaying.
    let res = app
        .post("/v1/users")
        .header("Idempotency-Key", "d")
        .json(&json!({"username": "x", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count().await, 1);
    app.stop().await;
}

async fn request_ids_are_sanitized(engine: Engine) {
    let app = spawn(engine).await;
    let long = "r".repeat(500);
    let res = app
        .get("/healthz")
        .header("X-Request-Id", &long)
        .send()
        .await
        .unwrap();
    let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(echoed, long);
    assert!(Uuid::parse_str(&echoed).is_ok());
    app.stop().await;
}

/// The stored request fingerprint of a registration is keyed: not the SHA-256 of the request,
/// and a word list run over unkeyed hashes does not find the password.
async fn idempotency_fingerprint_is_keyed(engine: Engine) {
    use sha2::{Digest, Sha256};
    let app = spawn(engine).await;
    let password = "tr0ub4dor&3 horse";
    let body = format!(r#"{{"username":"keyed_fp","password":"{password}"}}"#);
    let res = app
        .post("/v1/users")
        .header("Idempotency-Key", "fp-1")
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, request_hash FROM idempotency_keys")
            .fetch_all(&app.db.any)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    let unkeyed = |body: &str| {
        let mut h = Sha256::new();
        h.update("POST");
        h.update([0]);
        h.update("/v1/users");
        h.update([0]);
        h.update(body.as_bytes());
        hex::encode(h.finalize())
    };
    let words = [
        "password",
        "123456",
        "correct horse battery",
        password,
        "letmein",
    ];
    for word in words {
        let guess = unkeyed(&format!(r#"{{"username":"keyed_fp","password":"{word}"}}"#));
        for (actor, hash) in &stored {
            assert_ne!(
                hash, &guess,
                "the fingerprint is an unkeyed hash of the request"
            );
            assert!(
                !actor.contains(&guess),
                "the scope is an unkeyed hash of the request"
            );
        }
    }
    // Neither is the password itself anywhere in the table.
    for (actor, hash) in &stored {
        assert!(!actor.contains(password) && !hash.contains(password));
    }
    app.stop().await;
}

/// After logout, a retry with the revoked token gets no stored answer.
async fn revoked_token_gets_no_replay(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("revoked_replay").await;
    let send = || {
        app.patch("/v1/users/me")
            .bearer_auth(&access)
            .header("Idempotency-Key", "after-logout")
            .json(&json!({"display_name": "Before"}))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let res = app
        .delete("/v1/sessions/current")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = send().await.unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    app.stop().await;
}

/// One anonymous client's stored answer is not another's: a 400 stored under a key does not
/// make a different registration with the same key answer 422.
async fn anonymous_callers_do_not_share_keys(engine: Engine) {
    let app = spawn(engine).await;
    let register = |username: &str| {
        app.post("/v1/users")
            .header("Idempotency-Key", "shared-key")
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
    };
    let res = register("x").await.unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = register("second_client").await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.headers().get("idempotent-replayed").is_none());
    let first: Value = res.json().await.unwrap();
    // Each still gets its own answer replayed.
    let res = register("second_client").await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(res.json::<Value>().await.unwrap(), first);
    let res = register("x").await.unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    app.stop().await;
}

/// The registration committed but its answer was never stored (the process died in
/// between): the retry, once it may take the claim over, registers nothing new and answers
/// the account the first run created.
async fn retry_after_lost_answer_registers_once(engine: Engine) {
    let app = spawn_configured(engine, |s| {
        s.idempotency_takeover = Duration::from_millis(200);
    })
    .await;
    let send = || {
        app.post("/v1/users")
            .header("Idempotency-Key", "lost-answer")
            .json(&json!({"username": "lost_answer", "password": PASSWORD}))
            .send()
    };
    let res = send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let first: Value = res.json().await.unwrap();
    // What a crash between the append and the storing of the answer leaves behind.
    sqlx::query("UPDATE idempotency_keys SET status = NULL, headers = NULL, body = NULL")
        .execute(&app.db.any)
        .await
        .unwrap();
    let res = send().await.unwrap();
    expect_error(res, StatusCode::CONFLICT, "idempotency_in_progress").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = app.db.store.head(Domain::User).await.unwrap();
    let res = send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["user_id"],
        first["user_id"]
    );
    assert_eq!(app.db.store.head(Domain::User).await.unwrap(), head);
    app.stop().await;
}

/// A stolen access token must not allow unlimited guesses at the current password: wrong
/// guesses count toward the login lockout (5 in 15 minutes), then even the right one is
/// refused, and so is a login.
async fn wrong_current_passwords_lock_the_account(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("mallory_target").await;
    let change = |current: &str| {
        app.post("/v1/users/me/password")
            .bearer_auth(&access)
            .json(&json!({"current_password": current, "new_password": "a brand new one"}))
            .send()
    };
    for _ in 0..4 {
        let res = change("a wrong guess").await.unwrap();
        expect_error(res, StatusCode::FORBIDDEN, "wrong_password").await;
    }
    let res = change("a wrong guess").await.unwrap();
    let retry: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = change(PASSWORD).await.unwrap();
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = app.login("mallory_target", PASSWORD).await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // The password did not change.
    let res = app.login("mallory_target", "a brand new one").await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;

    // Failed logins and failed changes share one count.
    let (_, access, _) = app.user("shared_count").await;
    for _ in 0..3 {
        let res = app.login("shared_count", "a wrong guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let change = |current: &str| {
        app.post("/v1/users/me/password")
            .bearer_auth(&access)
            .json(&json!({"current_password": current, "new_password": "a brand new one"}))
            .send()
    };
    let res = change("a wrong guess").await.unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "wrong_password").await;
    let res = app.login("shared_count", "a wrong guess").await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    app.stop().await;
}

/// Login cannot tell an active account from a deactivated or unknown one: the same answers in
/// the same order (including the lock on the fifth failure), and the same work per attempt
/// (one argon2 verification each).
async fn active_deactivated_and_unknown_names_fail_alike(engine: Engine) {
    let app = spawn(engine).await;
    app.register("olga_active").await;
    let (_, access, _) = app.user("olga_gone").await;
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut sequences = Vec::new();
    for name in ["olga_active", "olga_gone", "olga_never"] {
        let mut seq = Vec::new();
        for _ in 0..6 {
            let res = app.login(name, "wrong password").await;
            let status = res.status();
            let retry = res.headers().contains_key("retry-after");
            let body: Value = res.json().await.unwrap();
            seq.push((status, retry, body["error"]["code"].clone()));
        }
        sequences.push((name, seq));
    }
    let expected: Vec<_> = [401, 401, 401, 401, 429, 429]
        .into_iter()
        .map(|s| {
            let locked = s == 429;
            (
                StatusCode::from_u16(s).unwrap(),
                locked,
                json!(if locked {
                    "account_locked"
                } else {
                    "invalid_credentials"
                }),
            )
        })
        .collect();
    for (name, seq) in &sequences {
        assert_eq!(seq, &expected, "{name}");
    }
    // A deactivated account with its right password is still just "invalid".
    let res = app.login("olga_gone", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Counted work, through the command layer on the same store: exactly one argon2
    // verification per failed attempt, whatever kind of name.
    let users = app.user_commands();
    app.register("pete_active").await;
    let (_, access, _) = app.user("pete_gone").await;
    let res = app
        .delete("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ctx = nova_commands::CommandContext::new(None, None);
    for name in ["pete_active", "pete_gone", "pete_never"] {
        for attempt in 1..=6u64 {
            let before = users.argon2_runs();
            let r = users
                .login(&ctx, name, secrecy::SecretString::from("wrong password"))
                .await;
            assert!(r.is_err(), "{name}");
            assert_eq!(users.argon2_runs() - before, 1, "{name} attempt {attempt}");
        }
    }
    app.stop().await;
}

/// Zero-width and bidirectional-control characters make one name look like another.
async fn invisible_formatting_characters_are_refused(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("una").await;
    for bad in [
        "Ali\u{200b}ce\u{202e}gnp.exe",
        "\u{202e}evil",
        "zero\u{200d}joiner",
        "\u{feff}bom",
        "iso\u{2066}late\u{2069}",
        "tag\u{e0041}",
        "line\u{2028}sep",
        "bell\u{7}",
    ] {
        for field in ["display_name", "status"] {
            let res = app
                .patch("/v1/users/me")
                .bearer_auth(&access)
                .json(&json!({ field: bad }))
                .send()
                .await
                .unwrap();
            let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
            assert_eq!(e["details"]["field"], field, "{bad:?}");
        }
        let res = app
            .post("/v1/users")
            .json(&json!({"username": "una_two", "password": PASSWORD, "display_name": bad}))
            .send()
            .await
            .unwrap();
        let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(e["details"]["field"], "display_name");
        let res = app
            .post("/v1/users")
            .json(&json!({"username": format!("una{bad}"), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
        assert_eq!(e["details"]["field"], "username");
    }
    // Visible non-ASCII text is fine.
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&access)
        .json(&json!({"display_name": "Zoë 🌱 Ünal", "status": "שלום, мир"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;
}

/// Thousands of refreshes leave a bounded user state, and a recently rotated token that comes
/// back still revokes its session.
async fn many_refreshes_keep_the_user_state_bounded(engine: Engine) {
    let app = spawn(engine).await;
    let (id, _, mut refresh) = app.user("rotating_rob").await;
    let mut previous = Vec::new();
    for _ in 0..300 {
        let res = app
            .post("/v1/sessions/refresh")
            .json(&json!({ "refresh_token": refresh }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        previous.push(std::mem::replace(
            &mut refresh,
            body["refresh_token"].as_str().unwrap().to_owned(),
        ));
    }
    let state = app.user_commands().state(id).await.unwrap();
    assert_eq!(state.sessions.len(), 1);
    let retained: usize = state
        .sessions
        .values()
        .map(|s| s.retired_tokens.len())
        .sum();
    assert_eq!(retained, nova_aggregates::user::RETIRED_TOKENS_KEPT);
    // Reuse of a recently retired token still kills the family.
    let res = app
        .post("/v1/sessions/refresh")
        .json(&json!({ "refresh_token": previous.last().unwrap() }))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    let res = app
        .post("/v1/sessions/refresh")
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // The revoked session keeps no token hashes.
    let state = app.user_commands().state(id).await.unwrap();
    assert!(state
        .sessions
        .values()
        .all(|s| s.revoked && s.current_token.is_none() && s.retired_tokens.is_empty()));
    app.stop().await;
}

/// Names and passwords no account can have are refused before any hashing.
async fn overlong_login_input_is_refused_before_hashing(engine: Engine) {
    let app = spawn(engine).await;
    let users = app.user_commands();
    let ctx = nova_commands::CommandContext::new(None, None);
    let before = users.argon2_runs();
    let long_name = "u".repeat(33);
    let r = users
        .login(&ctx, &long_name, secrecy::SecretString::from("whatever pw"))
        .await;
    assert!(matches!(
        r,
        Err(nova_commands::user::UserCommandError::Invalid {
            field: "username",
            ..
        })
    ));
    let r = users
        .login(
            &ctx,
            "someone",
            secrecy::SecretString::from("p".repeat(129)),
        )
        .await;
    assert!(matches!(
        r,
        Err(nova_commands::user::UserCommandError::Invalid {
            field: "password",
            ..
        })
    ));
    assert_eq!(users.argon2_runs(), before);
    let res = app.login(&"x".repeat(1000), "whatever pw").await;
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "username");
    app.stop().await;
}
