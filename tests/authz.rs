//! The authorization matrix: every route of the router — read from the OpenAPI document the
//! router is built from, the list `nova boundaries` reads too — called by six callers: no token,
//! a bad token, another user, the owner of the resource, an analyst and an admin. Each answers
//! the status its row says. A route without a row fails the test (a new domain adds its rows
//! here), and so does a row without a route.
//!
//! Each row runs in a world of its own (fresh users, post, comment and experiment), callers in
//! the column order, the owner last, so that an owner's destructive call (deactivation, logout,
//! delete) cannot change what the others see.

mod common;

use std::collections::BTreeSet;

use common::*;
use nova_event_schemas::user::Role;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// Columns: no token, bad token, another user, the owner, analyst, admin.
const CALLERS: [&str; 6] = ["none", "bad", "other", "owner", "analyst", "admin"];
/// The order the callers run in (indexes into [`CALLERS`]): the owner last.
const ORDER: [usize; 6] = [0, 1, 2, 4, 5, 3];

/// One row: method, path template, body (placeholders: `{owner}`, `{owner_name}`, `{post}`,
/// `{comment}`, `{key}`, `{n}` = a number unique to the call), and the six statuses.
type Row = (&'static str, &'static str, Option<&'static str>, [u16; 6]);

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    // method   path                                   body                                              none bad  other owner anal admin
    ("GET",    "/healthz",                             None,                                             [200, 200, 200, 200, 200, 200]),
    ("GET",    "/readyz",                              None,                                             [200, 200, 200, 200, 200, 200]),
    // identity: registration, sessions and public profiles need no token; "me" is the caller
    ("POST",   "/v1/users",                            Some(r#"{"username":"new_{n}","password":"correct horse battery"}"#), [201, 201, 201, 201, 201, 201]),
    ("POST",   "/v1/sessions",                         Some(r#"{"username":"{owner_name}","password":"correct horse battery"}"#), [200, 200, 200, 200, 200, 200]),
    ("POST",   "/v1/sessions/refresh",                 Some(r#"{"refresh_token":"nrt_forged"}"#),        [401, 401, 401, 401, 401, 401]),
    ("DELETE", "/v1/sessions/current",                 None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/users/me",                         None,                                             [401, 401, 200, 200, 200, 200]),
    ("PATCH",  "/v1/users/me",                         Some(r#"{"display_name":"Renamed"}"#),            [401, 401, 200, 200, 200, 200]),
    ("DELETE", "/v1/users/me",                         None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/users/me/password",                Some(r#"{"current_password":"correct horse battery","new_password":"another horse battery"}"#), [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/users/{owner}",                    None,                                             [200, 200, 200, 200, 200, 200]),
    // the social graph: following or blocking oneself is a domain refusal
    ("PUT",    "/v1/users/{owner}/follow",             None,                                             [401, 401, 200, 422, 200, 200]),
    ("DELETE", "/v1/users/{owner}/follow",             None,                                             [401, 401, 200, 422, 200, 200]),
    ("PUT",    "/v1/users/{owner}/block",              None,                                             [401, 401, 200, 422, 200, 200]),
    ("DELETE", "/v1/users/{owner}/block",              None,                                             [401, 401, 200, 422, 200, 200]),
    ("GET",    "/v1/users/{owner}/followers",          None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/users/{owner}/following",          None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/users/{owner}/posts",              None,                                             [401, 401, 200, 200, 200, 200]),
    // content: only the author edits or deletes; roles give no write access to others' posts
    ("POST",   "/v1/posts",                            Some(r#"{"content":"hello {n}"}"#),               [401, 401, 201, 201, 201, 201]),
    ("GET",    "/v1/posts/{post}",                     None,                                             [401, 401, 200, 200, 200, 200]),
    ("PATCH",  "/v1/posts/{post}",                     Some(r#"{"content":"edited {n}"}"#),              [401, 401, 403, 200, 403, 403]),
    ("DELETE", "/v1/posts/{post}",                     None,                                             [401, 401, 403, 200, 403, 403]),
    ("GET",    "/v1/posts/{post}/comments",            None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/posts/{post}/comments",            Some(r#"{"content":"a comment {n}"}"#),           [401, 401, 201, 201, 201, 201]),
    ("DELETE", "/v1/posts/{post}/comments/{comment}",  None,                                             [401, 401, 403, 200, 403, 403]),
    ("PUT",    "/v1/posts/{post}/like",                None,                                             [401, 401, 200, 200, 200, 200]),
    ("DELETE", "/v1/posts/{post}/like",                None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/posts/{post}/shares",              None,                                             [401, 401, 201, 201, 201, 201]),
    ("PUT",    "/v1/posts/{post}/bookmark",            None,                                             [401, 401, 200, 200, 200, 200]),
    ("DELETE", "/v1/posts/{post}/bookmark",            None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/bookmarks",                        None,                                             [401, 401, 200, 200, 200, 200]),
    // read views: always the caller's own
    ("GET",    "/v1/feed",                             None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/search?q=hello",                   None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/notifications",                    None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/notifications/read",               Some(r#"{"up_to":"00000000-0000-7000-8000-000000000000"}"#), [401, 401, 404, 404, 404, 404]),
    ("GET",    "/v1/notifications/preferences",        None,                                             [401, 401, 200, 200, 200, 200]),
    ("PUT",    "/v1/notifications/preferences",        Some(r#"{"like":false}"#),                        [401, 401, 200, 200, 200, 200]),
    // experiments: definitions are the admin's; anyone signed in is assigned, converts and
    // reads results (the world's experiment is running: starting it again changes nothing)
    ("POST",   "/v1/experiments",                      Some(r#"{"key":"exp_{n}","variants":[{"name":"a","weight":50},{"name":"b","weight":50}]}"#), [401, 401, 403, 403, 403, 201]),
    ("PATCH",  "/v1/experiments/{key}",                Some(r#"{"coverage":0.5}"#),                      [401, 401, 403, 403, 403, 200]),
    ("POST",   "/v1/experiments/{key}/start",          None,                                             [401, 401, 403, 403, 403, 200]),
    ("POST",   "/v1/experiments/{key}/stop",           None,                                             [401, 401, 403, 403, 403, 200]),
    ("GET",    "/v1/experiments/{key}/assignment",     None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/experiments/{key}/conversions",    Some(r#"{"metric":"clicked"}"#),                  [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/experiments/{key}/results",        None,                                             [401, 401, 200, 200, 200, 200]),
    // messaging: the world's group has the owner (its admin) and "other" as members, and the
    // owner's message {mid}; analyst and admin are not members. Direct with oneself is bad input.
    ("POST",   "/v1/conversations",                    Some(r#"{"kind":"direct","member_ids":["{owner}"]}"#), [401, 401, 201, 400, 201, 201]),
    ("GET",    "/v1/conversations",                    None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/conversations/{conv}/accept",      None,                                             [401, 401, 422, 422, 403, 403]),
    ("POST",   "/v1/conversations/{conv}/decline",     None,                                             [401, 401, 422, 422, 403, 403]),
    ("POST",   "/v1/conversations/{conv}/members",     Some(r#"{"user_id":"{admin_id}"}"#),              [401, 401, 403, 200, 403, 403]),
    ("DELETE", "/v1/conversations/{conv}/members/{owner}", None,                                         [401, 401, 403, 200, 403, 403]),
    ("POST",   "/v1/conversations/{conv}/messages",    Some(r#"{"ciphertext":"AwgA{n}","sender_device_id":"DEV","session_id":"s","client_message_id":"c{n}"}"#), [401, 401, 201, 201, 403, 403]),
    ("GET",    "/v1/conversations/{conv}/messages",    None,                                             [401, 401, 200, 200, 403, 403]),
    ("PATCH",  "/v1/conversations/{conv}/messages/{mid}", Some(r#"{"ciphertext":"AwgB{n}","session_id":"s"}"#), [401, 401, 403, 200, 403, 403]),
    ("DELETE", "/v1/conversations/{conv}/messages/{mid}", None,                                          [401, 401, 403, 200, 403, 403]),
    ("PUT",    "/v1/conversations/{conv}/messages/{mid}/reactions/ok", None,                             [401, 401, 200, 200, 403, 403]),
    ("DELETE", "/v1/conversations/{conv}/messages/{mid}/reactions/ok", None,                             [401, 401, 200, 200, 403, 403]),
    ("POST",   "/v1/conversations/{conv}/read",        Some(r#"{"up_to_seq":1}"#),                       [401, 401, 200, 200, 403, 403]),
    // keys: the owner's device OWNERDEV holds one one-time key and a fallback key; a device is
    // its owner's alone, while claims and to-device sends reach anyone's
    ("PUT",    "/v1/keys/devices/OWNERDEV",            Some("{device}"),                                 [401, 401, 201, 200, 201, 201]),
    ("DELETE", "/v1/keys/devices/OWNERDEV",            None,                                             [401, 401, 404, 200, 404, 404]),
    ("GET",    "/v1/users/{owner}/devices",            None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/keys/one-time",                    Some(r#"{"device_id":"OWNERDEV","keys":{"k{n}":{otk}}}"#), [401, 401, 404, 200, 404, 404]),
    ("POST",   "/v1/keys/claim",                       Some(r#"{"user_id":"{owner}","device_id":"OWNERDEV"}"#), [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/to-device",                        Some(r#"{"messages":[{"user_id":"{owner}","device_id":"OWNERDEV","content":{"n":{n}}}]}"#), [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/to-device?device_id=OWNERDEV",     None,                                             [401, 401, 404, 200, 404, 404]),
    ("POST",   "/v1/to-device/ack",                    Some(r#"{"device_id":"OWNERDEV","up_to":0}"#),    [401, 401, 404, 200, 404, 404]),
    // analysts and ops: history and status for analysts, rebuilds for admins
    // live streams: the broadcaster runs the stream; the publish hooks take the media server's
    // secret, not a token (none is configured here: every publish is refused)
    ("POST",   "/v1/streams",                          Some(r#"{"title":"stream {n}"}"#),                [401, 401, 201, 201, 201, 201]),
    ("GET",    "/v1/streams/live",                     None,                                             [401, 401, 200, 200, 200, 200]),
    ("GET",    "/v1/streams/{stream}",                 None,                                             [401, 401, 200, 200, 200, 200]),
    ("POST",   "/v1/streams/{stream}/start",           None,                                             [401, 401, 403, 200, 403, 403]),
    ("POST",   "/v1/streams/{stream}/end",             None,                                             [401, 401, 403, 422, 403, 403]),
    ("POST",   "/v1/streams/{stream}/key/rotate",      None,                                             [401, 401, 403, 200, 403, 403]),
    ("POST",   "/v1/streams/{stream}/viewers",         None,                                             [401, 401, 422, 422, 422, 422]),
    ("DELETE", "/v1/streams/{stream}/viewers",         None,                                             [401, 401, 204, 204, 204, 204]),
    ("POST",   "/v1/streams/hooks/on_publish?secret=x", Some("name=nsk_unknown"),                        [403, 403, 403, 403, 403, 403]),
    ("POST",   "/v1/streams/hooks/on_publish_done?secret=x", Some("name=nsk_unknown"),                   [403, 403, 403, 403, 403, 403]),
    ("GET",    "/v1/events?domain=user",               None,                                             [401, 401, 403, 403, 200, 200]),
    ("GET",    "/v1/aggregates/user/{owner}/state",    None,                                             [401, 401, 403, 403, 200, 200]),
    ("GET",    "/v1/projections",                      None,                                             [401, 401, 403, 403, 200, 200]),
    ("POST",   "/v1/projections/feed/rebuild",         None,                                             [401, 401, 403, 403, 403, 202]),
    // erasure: admins only; the owner is active, so the admin's call is refused (422)
    ("POST",   "/v1/admin/users/{owner}/erase",        None,                                             [401, 401, 403, 403, 403, 422]),
];

/// The routes of the router, `METHOD /path/{param}`, as its OpenAPI document lists them.
fn routes() -> BTreeSet<String> {
    let doc = nova::http::openapi();
    let mut out = BTreeSet::new();
    for (path, item) in doc.paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("PUT", item.put.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
            ("HEAD", item.head.is_some()),
            ("OPTIONS", item.options.is_some()),
        ];
        for (m, present) in methods {
            if present {
                out.insert(format!("{m} {path}"));
            }
        }
    }
    out
}

/// A row's route as the document names it: placeholders back to the router's `{…}` names,
/// the query string dropped.
fn route_of(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let path = path
        .replace("/members/{owner}", "/members/{user_id}")
        .replace("{owner}", "{id}")
        .replace("{post}", "{id}")
        .replace("{stream}", "{id}")
        .replace("{conv}", "{id}")
        .replace("/reactions/ok", "/reactions/{emoji}")
        .replace("/devices/OWNERDEV", "/devices/{device_id}")
        .replace("{comment}", "{comment_id}")
        .replace("/feed/rebuild", "/{name}/rebuild")
        .replace("/aggregates/user/", "/aggregates/{domain}/");
    format!("{method} {path}")
}

#[test]
fn every_route_has_a_row_and_every_row_a_route() {
    let routes = routes();
    let rows: BTreeSet<String> = MATRIX.iter().map(|(m, p, _, _)| route_of(m, p)).collect();
    assert_eq!(rows.len(), MATRIX.len(), "a route has two rows");
    let missing: Vec<_> = routes.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in tests/authz.rs (add one per route): {missing:?}"
    );
    let stale: Vec<_> = rows.difference(&routes).collect();
    assert!(stale.is_empty(), "rows without a route: {stale:?}");
}

/// Everything a row's calls refer to, made afresh for each row.
struct World {
    owner: Uuid,
    owner_name: String,
    post: Uuid,
    comment: Uuid,
    key: String,
    stream: Uuid,
    conv: Uuid,
    mid: Uuid,
    admin_id: Uuid,
    /// The owner's device upload (signed identity keys) and a signed one-time key.
    device: String,
    otk: String,
    /// Tokens by caller column (`None` for the first two).
    tokens: [Option<String>; 6],
}

/// Waits until `projection` has applied `domain` up to its head.
async fn settle(app: &TestApp, projection: &str, domain: Domain) {
    let head = app.db.store.head(domain).await.unwrap();
    let checkpoints = nova_projections::Checkpoints::default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while checkpoints
        .load(&app.db.any, projection, domain)
        .await
        .unwrap()
        < head
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{projection} is behind"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn world(app: &TestApp, n: usize) -> World {
    let name = |who: &str| format!("{who}_{n}");
    let (owner, owner_token, _) = app.user(&name("owner")).await;
    let (other, other_token, _) = app.user(&name("other")).await;
    let (_, analyst_token, _) = app.user(&name("analyst")).await;
    let (admin_id, admin_token, _) = app.user(&name("admin")).await;
    let users = app.user_commands();
    let ctx = nova_commands::CommandContext::new(None, None);
    users
        .grant_role(&ctx, &name("analyst"), Role::Analyst)
        .await
        .unwrap();
    users
        .grant_role(&ctx, &name("admin"), Role::Admin)
        .await
        .unwrap();
    let created = |res: reqwest::Response| async move {
        assert_eq!(res.status(), reqwest::StatusCode::CREATED);
        (position(&res), res.json::<Value>().await.unwrap())
    };
    let (_, body) = created(
        app.post("/v1/posts")
            .bearer_auth(&owner_token)
            .json(&json!({"content": "hello world"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let post: Uuid = body["post_id"].as_str().unwrap().parse().unwrap();
    let (_, body) = created(
        app.post(&format!("/v1/posts/{post}/comments"))
            .bearer_auth(&owner_token)
            .json(&json!({"content": "first"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let comment: Uuid = body["comment_id"].as_str().unwrap().parse().unwrap();
    let (_, body) = created(
        app.post("/v1/streams")
            .bearer_auth(&owner_token)
            .json(&json!({"title": "the world's stream"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stream: Uuid = body["stream_id"].as_str().unwrap().parse().unwrap();
    // Members are checked against the directory.
    settle(app, nova_projections::user_directory::NAME, Domain::User).await;
    let (_, body) = created(
        app.post("/v1/conversations")
            .bearer_auth(&owner_token)
            .json(&json!({"kind": "group", "member_ids": [other], "name": "world"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let conv: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    let (_, body) = created(
        app.post(&format!("/v1/conversations/{conv}/messages"))
            .bearer_auth(&owner_token)
            .json(
                &json!({"ciphertext": "AwgAEhAA", "sender_device_id": "OWNERDEV",
                          "session_id": "s", "client_message_id": "first"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mid: Uuid = body["message_id"].as_str().unwrap().parse().unwrap();
    // The owner's device, with one one-time key and a fallback key, signed as a client does.
    let account = vodozemac::olm::Account::new();
    let canonical = |fields: &[(&str, &str)]| {
        let map: std::collections::BTreeMap<&str, &str> = fields.iter().copied().collect();
        serde_json::to_string(&map).unwrap()
    };
    let ids = account.identity_keys();
    let (curve, ed) = (ids.curve25519.to_base64(), ids.ed25519.to_base64());
    let device = json!({"curve25519": curve, "ed25519": ed,
        "signature": account.sign(canonical(&[("curve25519", &curve), ("ed25519", &ed)])).to_base64()})
    .to_string();
    let signed = |key: &str| json!({"key": key, "signature": account.sign(canonical(&[("key", key)])).to_base64()});
    let res = app
        .put("/v1/keys/devices/OWNERDEV")
        .bearer_auth(&owner_token)
        .header("content-type", "application/json")
        .body(device.clone())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let key_of = |byte: u8| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode([byte; 32])
    };
    let res = app
        .post("/v1/keys/one-time")
        .bearer_auth(&owner_token)
        .json(
            &json!({"device_id": "OWNERDEV", "keys": {"first": signed(&key_of(1))},
                      "fallback": {"fb": signed(&key_of(2))}}),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let otk = signed(&key_of(3)).to_string();
    let key = format!("exp_world_{n}");
    let res = app
        .post("/v1/experiments")
        .bearer_auth(&admin_token)
        .json(&json!({"key": key, "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let res = app
        .post(&format!("/v1/experiments/{key}/start"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    // Every read model has the world before any row reads it.
    for (projection, domain) in [
        (nova_projections::user_directory::NAME, Domain::User),
        (nova_projections::post_view::NAME, Domain::Post),
        (
            nova_projections::experiment_results::NAME,
            Domain::Experiment,
        ),
        (nova_projections::stream_view::NAME, Domain::Stream),
        (
            nova_projections::conversation_view::NAME,
            Domain::Conversation,
        ),
    ] {
        settle(app, projection, domain).await;
    }
    World {
        owner,
        owner_name: name("owner"),
        post,
        comment,
        key,
        stream,
        conv,
        mid,
        admin_id,
        device,
        otk,
        tokens: [
            None,
            None,
            Some(other_token),
            Some(owner_token),
            Some(analyst_token),
            Some(admin_token),
        ],
    }
}

/// A token with a valid shape and a signature by another secret.
fn bad_token() -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims =
        json!({"sub": Uuid::now_v7(), "sid": Uuid::now_v7(), "iat": 0, "exp": 4_000_000_000i64});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"not-the-server-secret-not-the-server-secret"),
    )
    .unwrap()
}

fn fill(template: &str, w: &World, n: usize) -> String {
    template
        .replace("{owner_name}", &w.owner_name)
        .replace("{owner}", &w.owner.to_string())
        .replace("{post}", &w.post.to_string())
        .replace("{comment}", &w.comment.to_string())
        .replace("{stream}", &w.stream.to_string())
        .replace("{conv}", &w.conv.to_string())
        .replace("{mid}", &w.mid.to_string())
        .replace("{admin_id}", &w.admin_id.to_string())
        .replace("{device}", &w.device)
        .replace("{otk}", &w.otk)
        .replace("{key}", &w.key)
        .replace("{n}", &n.to_string())
}

async fn matrix(engine: Engine) {
    let app = spawn(engine).await;
    let bad = bad_token();
    let mut failures = Vec::new();
    let mut n = 0;
    for (i, (method, path, body, expected)) in MATRIX.iter().enumerate() {
        let w = world(&app, i).await;
        for caller in ORDER {
            n += 1;
            let url = app.url(&fill(path, &w, n));
            let mut req = app
                .client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
            match caller {
                0 => {}
                1 => req = req.bearer_auth(&bad),
                _ => req = req.bearer_auth(w.tokens[caller].as_deref().unwrap()),
            }
            if let Some(b) = body {
                req = req
                    .header(
                        "content-type",
                        if b.starts_with('{') {
                            "application/json"
                        } else {
                            "application/x-www-form-urlencoded"
                        },
                    )
                    .body(fill(b, &w, n));
            }
            let res = req.send().await.unwrap();
            let got = res.status().as_u16();
            if got != expected[caller] {
                let text = res.text().await.unwrap_or_default();
                failures.push(format!(
                    "{method} {path} as {}: expected {}, got {got}: {text}",
                    CALLERS[caller], expected[caller]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.stop().await;
}

on_both_backends!(matrix);
