//! The key server and the to-device queue (API.md "Messaging … and keys", ADR 0020) over real
//! HTTP on both engines: every route, bad input, authorization; Olm interoperability with
//! clients built on vodozemac that keep their private keys to themselves; concurrent claims
//! within one server and across two server processes on one database.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{expect_error, on_both_backends, spawn, TestApp, SECRET};
use nova_infra::db::Engine;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionKey};
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};
use vodozemac::Curve25519PublicKey;

on_both_backends!(
    devices_are_registered_listed_and_removed,
    device_uploads_are_checked,
    one_time_keys_are_claimed_once_in_upload_order,
    key_uploads_are_checked,
    to_device_messages_queue_per_device,
    to_device_input_is_checked,
    olm_session_through_the_server,
    megolm_group_messages_through_the_server,
    deactivation_drops_devices_and_leaves_conversations,
    no_plaintext_or_private_key_reaches_the_database_or_jetstream,
    concurrent_claims_hand_out_each_key_once,
    claims_from_two_server_processes_hand_out_each_key_once,
);

/// The canonical JSON clients sign: sorted keys, no spaces.
fn canonical(fields: &[(&str, &str)]) -> String {
    let map: BTreeMap<&str, &str> = fields.iter().copied().collect();
    serde_json::to_string(&map).unwrap()
}

/// A user of the test with an access token, talking to one server.
#[derive(Clone)]
struct User {
    id: Uuid,
    token: String,
    base: String,
    http: Client,
}

impl User {
    async fn new(app: &TestApp, name: &str) -> User {
        let (id, token, _) = app.user(name).await;
        User {
            id,
            token,
            base: format!("http://{}", app.addr),
            http: app.client.clone(),
        }
    }

    /// The same user talking to another server process.
    fn at(&self, base: &str) -> User {
        User {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    async fn put(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn delete(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    async fn ok(&self, res: reqwest::Response) -> Value {
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// Registers `account` as device `device_id`.
    async fn register(&self, device_id: &str, account: &Account) {
        let res = self
            .put(
                &format!("/v1/keys/devices/{device_id}"),
                device_body(account),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }

    /// Generates and uploads `n` one-time keys (and a fallback key when asked), each in its
    /// own request so the upload order is known; returns (key id, key) in that order.
    async fn upload(
        &self,
        device_id: &str,
        account: &mut Account,
        n: usize,
    ) -> Vec<(String, String)> {
        account.generate_one_time_keys(n);
        let mut keys: Vec<(String, String)> = account
            .one_time_keys()
            .into_iter()
            .map(|(id, k)| (id.to_base64(), k.to_base64()))
            .collect();
        keys.sort();
        account.mark_keys_as_published();
        let mut order = Vec::new();
        for (id, key) in keys {
            let body = json!({"device_id": device_id, "keys": {&id: signed(account, &key)}});
            self.ok(self.post("/v1/keys/one-time", body).await).await;
            order.push((id, key));
        }
        order
    }

    async fn claim(&self, user: Uuid, device_id: &str) -> reqwest::Response {
        self.post(
            "/v1/keys/claim",
            json!({"user_id": user, "device_id": device_id}),
        )
        .await
    }

    async fn pending(&self, device_id: &str) -> Vec<Value> {
        let body = self
            .ok(self
                .get(&format!("/v1/to-device?device_id={device_id}"))
                .await)
            .await;
        body["items"].as_array().unwrap().clone()
    }
}

fn device_body(account: &Account) -> Value {
    let keys = account.identity_keys();
    let (curve, ed) = (keys.curve25519.to_base64(), keys.ed25519.to_base64());
    let signature = account
        .sign(canonical(&[("curve25519", &curve), ("ed25519", &ed)]))
        .to_base64();
    json!({"curve25519": curve, "ed25519": ed, "signature": signature})
}

fn signed(account: &Account, key: &str) -> Value {
    json!({"key": key, "signature": account.sign(canonical(&[("key", key)])).to_base64()})
}

async fn devices_are_registered_listed_and_removed(engine: Engine) {
    let app = spawn(engine).await;
    let alice = User::new(&app, "alice").await;
    let bob = User::new(&app, "bob").await;
    let account = Account::new();
    let body = device_body(&account);

    let res = alice.put("/v1/keys/devices/PHONE", body.clone()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The same keys again (a retried upload): 200, still one device.
    let res = alice.put("/v1/keys/devices/PHONE", body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Other keys under the same id: a device's identity never changes.
    let res = alice
        .put("/v1/keys/devices/PHONE", device_body(&Account::new()))
        .await;
    expect_error(res, StatusCode::CONFLICT, "device_exists").await;
    // Device ids are per user: bob may use the same id.
    bob.register("PHONE", &Account::new()).await;

    // Anyone signed in can list alice's devices and verify them.
    let list = bob
        .ok(bob.get(&format!("/v1/users/{}/devices", alice.id)).await)
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let d = &items[0];
    assert_eq!(d["device_id"], "PHONE");
    assert_eq!(d["curve25519"], body["curve25519"]);
    assert_eq!(d["ed25519"], body["ed25519"]);
    assert!(d["created_at"].is_string());
    let ed = vodozemac::Ed25519PublicKey::from_base64(d["ed25519"].as_str().unwrap()).unwrap();
    let sig = vodozemac::Ed25519Signature::from_base64(d["signature"].as_str().unwrap()).unwrap();
    let message = canonical(&[
        ("curve25519", d["curve25519"].as_str().unwrap()),
        ("ed25519", d["ed25519"].as_str().unwrap()),
    ]);
    ed.verify(message.as_bytes(), &sig)
        .expect("the listed signature verifies");
    let res = app
        .get(&format!("/v1/users/{}/devices", alice.id))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Removing: only the caller's own device; then it is gone.
    let res = alice.delete("/v1/keys/devices/LAPTOP").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    alice.ok(alice.delete("/v1/keys/devices/PHONE").await).await;
    let list = bob
        .ok(bob.get(&format!("/v1/users/{}/devices", alice.id)).await)
        .await;
    assert_eq!(list["items"], json!([]));
    let list = bob
        .ok(bob.get(&format!("/v1/users/{}/devices", bob.id)).await)
        .await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "bob's PHONE stays"
    );
    let res = alice.delete("/v1/keys/devices/PHONE").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    // Re-registering after removal is a new device (new keys allowed).
    alice.register("PHONE", &Account::new()).await;
    app.stop().await;
}

async fn device_uploads_are_checked(engine: Engine) {
    let app = spawn(engine).await;
    let alice = User::new(&app, "alice").await;
    let account = Account::new();
    let good = device_body(&account);
    let with = |field: &str, value: &str| {
        let mut b = good.clone();
        b[field] = json!(value);
        b
    };
    let curve = good["curve25519"].as_str().unwrap();
    let cases = [
        // Padded base64, not base64, the wrong length.
        (with("curve25519", &format!("{curve}=")), "invalid_field"),
        (with("ed25519", "not*base64"), "invalid_field"),
        (with("curve25519", "AAAA"), "invalid_field"),
        (with("signature", "AAAA"), "invalid_field"),
        // A signature by another device's key, or over other keys.
        (
            device_body(&Account::new()).tap_keys(&good),
            "invalid_signature",
        ),
        (
            with("curve25519", &Account::new().curve25519_key().to_base64()),
            "invalid_signature",
        ),
    ];
    for (body, code) in cases {
        let res = alice.put("/v1/keys/devices/PHONE", body.clone()).await;
        expect_error(res, StatusCode::BAD_REQUEST, code).await;
    }
    let res = alice
        .put(
            "/v1/keys/devices/PHONE",
            json!({"curve25519": curve, "ed25519": good["ed25519"]}),
        )
        .await;
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert_eq!(e["details"]["field"], "signature");
    let mut extra = good.clone();
    extra["private_key"] = json!("x");
    let res = alice.put("/v1/keys/devices/PHONE", extra).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = alice.put("/v1/keys/devices/bad%20id", good.clone()).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = alice
        .put(
            &format!("/v1/keys/devices/{}", "D".repeat(65)),
            good.clone(),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = app
        .client
        .put(app.url("/v1/keys/devices/PHONE"))
        .json(&good)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Nothing of the above was stored.
    let list = alice
        .ok(alice.get(&format!("/v1/users/{}/devices", alice.id)).await)
        .await;
    assert_eq!(list["items"], json!([]));
    app.stop().await;
}

/// Takes the identity keys of `other` but keeps this body's signature.
trait TapKeys {
    fn tap_keys(self, other: &Value) -> Value;
}

impl TapKeys for Value {
    fn tap_keys(mut self, other: &Value) -> Value {
        self["curve25519"] = other["curve25519"].clone();
        self["ed25519"] = other["ed25519"].clone();
        self
    }
}

async fn one_time_keys_are_claimed_once_in_upload_order(engine: Engine) {
    let app = spawn(engine).await;
    let alice = User::new(&app, "alice").await;
    let bob = User::new(&app, "bob").await;
    let mut account = Account::new();
    bob.register("PHONE", &account).await;

    // No keys yet, no fallback: 404 no_one_time_key; an unknown device: unknown_device.
    let res = alice.claim(bob.id, "PHONE").await;
    expect_error(res, StatusCode::NOT_FOUND, "no_one_time_key").await;
    let res = alice.claim(bob.id, "TABLET").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;

    let uploaded = bob.upload("PHONE", &mut account, 5).await;
    let order: Vec<String> = uploaded.iter().map(|(id, _)| id.clone()).collect();
    account.generate_fallback_key();
    let (fid, fkey) = account.fallback_key().into_iter().next().unwrap();
    let (fid, fkey) = (fid.to_base64(), fkey.to_base64());
    let body = json!({"device_id": "PHONE", "fallback": {&fid: signed(&account, &fkey)}});
    let counts = bob.ok(bob.post("/v1/keys/one-time", body).await).await;
    assert_eq!(counts["one_time_key_counts"], 5);

    let mut handed = Vec::new();
    for _ in 0..5 {
        let c = alice.ok(alice.claim(bob.id, "PHONE").await).await;
        assert_eq!(c["fallback"], false);
        assert_eq!(c["device_id"], "PHONE");
        let key = c["key"].as_str().unwrap();
        let ed = account.identity_keys().ed25519;
        let sig =
            vodozemac::Ed25519Signature::from_base64(c["signature"].as_str().unwrap()).unwrap();
        ed.verify(canonical(&[("key", key)]).as_bytes(), &sig)
            .unwrap();
        handed.push(c["key_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(handed, order, "handed out in upload order");
    // Then the fallback key, as often as asked.
    for _ in 0..2 {
        let c = alice.ok(alice.claim(bob.id, "PHONE").await).await;
        assert_eq!(c["fallback"], true);
        assert_eq!(c["key_id"], fid.as_str());
        assert_eq!(c["key"], fkey.as_str());
    }
    // A claimed key uploaded again (a retried upload) is never handed out again.
    let (first, key) = &uploaded[0];
    let body = json!({"device_id": "PHONE", "keys": {first: signed(&account, key)}});
    let counts = bob.ok(bob.post("/v1/keys/one-time", body).await).await;
    assert_eq!(counts["one_time_key_counts"], 0);
    let c = alice.ok(alice.claim(bob.id, "PHONE").await).await;
    assert_eq!(
        c["fallback"], true,
        "a claimed key is never handed out again"
    );
    // A new fallback key replaces the old one.
    account.generate_fallback_key();
    let (nid, nkey) = account.fallback_key().into_iter().next().unwrap();
    let body = json!({"device_id": "PHONE", "fallback": {nid.to_base64(): signed(&account, &nkey.to_base64())}});
    bob.ok(bob.post("/v1/keys/one-time", body).await).await;
    let c = alice.ok(alice.claim(bob.id, "PHONE").await).await;
    assert_eq!(c["key"], nkey.to_base64());
    assert_eq!(c["fallback"], true);

    // Removing the device removes its keys.
    bob.ok(bob.delete("/v1/keys/devices/PHONE").await).await;
    let res = alice.claim(bob.id, "PHONE").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    app.stop().await;
}

async fn key_uploads_are_checked(engine: Engine) {
    let app = spawn(engine).await;
    let bob = User::new(&app, "bob").await;
    let mallory = User::new(&app, "mallory").await;
    let mut account = Account::new();
    bob.register("PHONE", &account).await;
    account.generate_one_time_keys(2);
    let keys: Vec<(String, String)> = account
        .one_time_keys()
        .into_iter()
        .map(|(id, k)| (id.to_base64(), k.to_base64()))
        .collect();
    let (id, key) = keys[0].clone();
    let other = Account::new();

    let bad = |keys: Value| json!({"device_id": "PHONE", "keys": keys});
    let cases = [
        // Signed by another account, or over another key.
        (
            bad(json!({&id: signed(&other, &key)})),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            bad(json!({&id: {"key": key, "signature": signed(&account, &keys[1].1)["signature"]}})),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        // Malformed base64 of the key or signature, a wrong length, a bad id.
        (
            bad(json!({&id: signed(&account, &format!("{key}="))})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            bad(json!({&id: {"key": key, "signature": "%%%"}})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            bad(json!({&id: signed(&account, "AAAA")})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            bad(json!({"bad id": signed(&account, &key)})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            bad(json!({&id: {"key": key}})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (bad(json!([1, 2])), StatusCode::BAD_REQUEST, "invalid_field"),
        (
            json!({"keys": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        // Two fallback keys.
        (
            json!({"device_id": "PHONE", "fallback": {"a": signed(&account, &key), "b": signed(&account, &keys[1].1)}}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"device_id": "TABLET", "keys": {}}),
            StatusCode::NOT_FOUND,
            "unknown_device",
        ),
    ];
    for (body, status, code) in cases {
        let res = bob.post("/v1/keys/one-time", body.clone()).await;
        expect_error(res, status, code).await;
    }
    // A good key beside a bad one: nothing is stored.
    let body = bad(json!({&id: signed(&account, &key), &keys[1].0: signed(&other, &keys[1].1)}));
    let res = bob.post("/v1/keys/one-time", body).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_signature").await;
    let counts = bob
        .ok(bob.post("/v1/keys/one-time", bad(json!({}))).await)
        .await;
    assert_eq!(counts["one_time_key_counts"], 0);
    // Someone else cannot upload to bob's device (device ids are per user).
    let res = mallory
        .post("/v1/keys/one-time", bad(json!({&id: signed(&other, &key)})))
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    // An id uploaded again: the same key is a no-op, another key a conflict.
    let counts = bob
        .ok(bob
            .post(
                "/v1/keys/one-time",
                bad(json!({&id: signed(&account, &key)})),
            )
            .await)
        .await;
    assert_eq!(counts["one_time_key_counts"], 1);
    let counts = bob
        .ok(bob
            .post(
                "/v1/keys/one-time",
                bad(json!({&id: signed(&account, &key)})),
            )
            .await)
        .await;
    assert_eq!(counts["one_time_key_counts"], 1);
    let res = bob
        .post(
            "/v1/keys/one-time",
            bad(json!({&id: signed(&account, &keys[1].1)})),
        )
        .await;
    expect_error(res, StatusCode::CONFLICT, "key_exists").await;
    // More than 100 keys in one upload.
    let many: serde_json::Map<String, Value> = (0..101)
        .map(|i| (format!("K{i}"), signed(&account, &key)))
        .collect();
    let res = bob
        .post("/v1/keys/one-time", bad(Value::Object(many)))
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = app
        .client
        .post(app.url("/v1/keys/claim"))
        .json(&json!({"user_id": bob.id, "device_id": "PHONE"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = mallory
        .post(
            "/v1/keys/claim",
            json!({"user_id": "nope", "device_id": "PHONE"}),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    app.stop().await;
}

async fn to_device_messages_queue_per_device(engine: Engine) {
    let app = spawn(engine).await;
    let alice = User::new(&app, "alice").await;
    let bob = User::new(&app, "bob").await;
    alice.register("PHONE", &Account::new()).await;
    bob.register("PHONE", &Account::new()).await;
    bob.register("LAPTOP", &Account::new()).await;

    // 150 messages for bob's phone in two requests, interleaved with some for his laptop.
    for batch in 0..2 {
        let messages: Vec<Value> = (0..75)
            .flat_map(|i| {
                let n = batch * 75 + i;
                let mut m =
                    vec![json!({"user_id": bob.id, "device_id": "PHONE", "content": {"n": n}})];
                if i % 25 == 0 {
                    m.push(json!({"user_id": bob.id, "device_id": "LAPTOP", "content": {"n": n}}));
                }
                m
            })
            .collect();
        let sent = alice
            .ok(alice
                .post(
                    "/v1/to-device",
                    json!({"messages": messages, "sender_device_id": "PHONE"}),
                )
                .await)
            .await;
        assert_eq!(sent["sent"], 78);
    }
    // Fetched in arrival order, 100 at a time; nothing disappears until acknowledged.
    let page = bob.pending("PHONE").await;
    assert_eq!(page.len(), 100);
    assert_eq!(bob.pending("PHONE").await, page, "a fetch does not consume");
    for (i, m) in page.iter().enumerate() {
        assert_eq!(m["content"], json!({"n": i}));
        assert_eq!(m["sender_user_id"], alice.id.to_string());
        assert_eq!(m["sender_device_id"], "PHONE");
    }
    let positions: Vec<i64> = page
        .iter()
        .map(|m| m["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] + 1 == w[1]),
        "gap-free, ascending"
    );
    let up_to = positions[99];
    let acked = bob
        .ok(bob
            .post(
                "/v1/to-device/ack",
                json!({"device_id": "PHONE", "up_to": up_to}),
            )
            .await)
        .await;
    assert_eq!(acked["deleted"], 100);
    let rest = bob.pending("PHONE").await;
    assert_eq!(rest.len(), 50);
    assert_eq!(rest[0]["content"], json!({"n": 100}));
    assert_eq!(rest[49]["content"], json!({"n": 149}));
    // A smaller page.
    let two = bob
        .ok(bob.get("/v1/to-device?device_id=PHONE&limit=2").await)
        .await;
    assert_eq!(two["items"].as_array().unwrap().len(), 2);
    // The laptop's queue is its own.
    let laptop = bob.pending("LAPTOP").await;
    assert_eq!(laptop.len(), 6);
    assert_eq!(laptop[0]["content"], json!({"n": 0}));
    // Alice reading "PHONE" reads her own (empty) phone's queue, never bob's.
    assert_eq!(alice.pending("PHONE").await, Vec::<Value>::new());
    let res = alice.get("/v1/to-device?device_id=LAPTOP").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    let res = alice
        .post(
            "/v1/to-device/ack",
            json!({"device_id": "LAPTOP", "up_to": 1}),
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    // Acknowledging a position never sent is refused.
    let res = bob
        .post(
            "/v1/to-device/ack",
            json!({"device_id": "PHONE", "up_to": 10_000}),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let last = rest[49]["position"].as_i64().unwrap();
    bob.ok(bob
        .post(
            "/v1/to-device/ack",
            json!({"device_id": "PHONE", "up_to": last}),
        )
        .await)
        .await;
    assert!(bob.pending("PHONE").await.is_empty());
    // Removing a device drops its pending messages.
    bob.ok(bob.delete("/v1/keys/devices/LAPTOP").await).await;
    bob.register("LAPTOP", &Account::new()).await;
    assert!(bob.pending("LAPTOP").await.is_empty());
    let res = app
        .get("/v1/to-device?device_id=PHONE")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

async fn to_device_input_is_checked(engine: Engine) {
    let app = spawn(engine).await;
    let alice = User::new(&app, "alice").await;
    let bob = User::new(&app, "bob").await;
    bob.register("PHONE", &Account::new()).await;
    let to_bob =
        |content: Value| json!({"user_id": bob.id, "device_id": "PHONE", "content": content});

    // One unknown device: nothing is queued (all or none).
    let body = json!({"messages": [to_bob(json!({"a": 1})), {"user_id": bob.id, "device_id": "TABLET", "content": {}}]});
    let res = alice.post("/v1/to-device", body).await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    assert!(bob.pending("PHONE").await.is_empty());
    // The sender's device must be the sender's own.
    let body = json!({"messages": [to_bob(json!({}))], "sender_device_id": "PHONE"});
    let res = alice.post("/v1/to-device", body).await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    // Empty, too many, missing fields, a bad id.
    let res = alice.post("/v1/to-device", json!({"messages": []})).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let many: Vec<Value> = (0..101).map(|_| to_bob(json!(1))).collect();
    let res = alice.post("/v1/to-device", json!({"messages": many})).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = alice
        .post(
            "/v1/to-device",
            json!({"messages": [{"user_id": bob.id, "device_id": "PHONE"}]}),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = alice
        .post(
            "/v1/to-device",
            json!({"messages": [{"user_id": bob.id, "device_id": "a b", "content": {}}]}),
        )
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    // A content past its bound, and a body past the server's limit.
    let res = alice
        .post(
            "/v1/to-device",
            json!({"messages": [to_bob(json!("x".repeat(20_000)))]}),
        )
        .await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let big: Vec<Value> = (0..5).map(|_| to_bob(json!("x".repeat(15_000)))).collect();
    let res = alice.post("/v1/to-device", json!({"messages": big})).await;
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Fetch parameters.
    for q in [
        "",
        "?device_id=PHONE&limit=0",
        "?device_id=PHONE&limit=101",
        "?device_id=PHONE&x=1",
    ] {
        let res = bob.get(&format!("/v1/to-device{q}")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{q}");
    }
    let res = bob
        .post("/v1/to-device/ack", json!({"device_id": "PHONE"}))
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = app
        .client
        .post(app.url("/v1/to-device"))
        .json(&json!({"messages": [to_bob(json!({}))]}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(bob.pending("PHONE").await.is_empty());
    app.stop().await;
}

/// A device of the interop test: the client's account (private keys stay here) and its user.
struct Device {
    user: User,
    device: &'static str,
    account: Account,
}

impl Device {
    async fn new(app: &TestApp, name: &str, device: &'static str) -> Device {
        let user = User::new(app, name).await;
        let mut account = Account::new();
        user.register(device, &account).await;
        user.upload(device, &mut account, 3).await;
        Device {
            user,
            device,
            account,
        }
    }

    fn curve(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    /// Sends an Olm envelope to `to`'s device.
    async fn send_olm(&self, to: &Device, message: &OlmMessage) {
        let content = json!({
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": self.curve(),
            "ciphertext": {to.curve(): message},
        });
        let body = json!({
            "messages": [{"user_id": to.user.id, "device_id": to.device, "content": content}],
            "sender_device_id": self.device,
        });
        self.user
            .ok(self.user.post("/v1/to-device", body).await)
            .await;
    }

    /// Fetches and acknowledges this device's pending Olm messages: (sender key, message).
    async fn receive_olm(&self) -> Vec<(Curve25519PublicKey, OlmMessage)> {
        let items = self.user.pending(self.device).await;
        let mut out = Vec::new();
        for item in &items {
            let c = &item["content"];
            assert_eq!(c["algorithm"], "m.olm.v1.curve25519-aes-sha2");
            let sender =
                Curve25519PublicKey::from_base64(c["sender_key"].as_str().unwrap()).unwrap();
            let msg: OlmMessage =
                serde_json::from_value(c["ciphertext"][self.curve()].clone()).unwrap();
            out.push((sender, msg));
        }
        if let Some(last) = items.last() {
            let body = json!({"device_id": self.device, "up_to": last["position"]});
            self.user
                .ok(self.user.post("/v1/to-device/ack", body).await)
                .await;
        }
        out
    }
}

async fn olm_session_through_the_server(engine: Engine) {
    let app = spawn(engine).await;
    let alice = Device::new(&app, "alice", "ALICEPHONE").await;
    let mut bob = Device::new(&app, "bob", "BOBPHONE").await;

    // Alice finds bob's device, checks its signature, claims a one-time key and checks that.
    let list = alice
        .user
        .ok(alice
            .user
            .get(&format!("/v1/users/{}/devices", bob.user.id))
            .await)
        .await;
    let d = &list["items"][0];
    let ed = vodozemac::Ed25519PublicKey::from_base64(d["ed25519"].as_str().unwrap()).unwrap();
    let sig = vodozemac::Ed25519Signature::from_base64(d["signature"].as_str().unwrap()).unwrap();
    ed.verify(
        canonical(&[
            ("curve25519", d["curve25519"].as_str().unwrap()),
            ("ed25519", d["ed25519"].as_str().unwrap()),
        ])
        .as_bytes(),
        &sig,
    )
    .unwrap();
    let bob_identity = Curve25519PublicKey::from_base64(d["curve25519"].as_str().unwrap()).unwrap();
    let claimed = alice
        .user
        .ok(alice.user.claim(bob.user.id, "BOBPHONE").await)
        .await;
    let otk = claimed["key"].as_str().unwrap();
    let sig =
        vodozemac::Ed25519Signature::from_base64(claimed["signature"].as_str().unwrap()).unwrap();
    ed.verify(canonical(&[("key", otk)]).as_bytes(), &sig)
        .unwrap();
    let otk = Curve25519PublicKey::from_base64(otk).unwrap();

    // Alice opens an Olm session and sends a pre-key message.
    let mut outbound = alice
        .account
        .create_outbound_session(SessionConfig::version_1(), bob_identity, otk)
        .unwrap();
    let hello = "hello bob, this is a secret";
    let pre_key = outbound.encrypt(hello).unwrap();
    assert!(matches!(pre_key, OlmMessage::PreKey(_)));
    alice.send_olm(&bob, &pre_key).await;

    // Bob fetches it, creates the inbound session and decrypts.
    let got = bob.receive_olm().await;
    assert_eq!(got.len(), 1);
    let (sender, OlmMessage::PreKey(m)) = &got[0] else {
        panic!("expected a pre-key message");
    };
    assert_eq!(sender.to_base64(), alice.curve());
    let created = bob
        .account
        .create_inbound_session(SessionConfig::version_1(), *sender, m)
        .unwrap();
    assert_eq!(created.plaintext, hello.as_bytes());
    let mut inbound = created.session;
    assert!(bob.receive_olm().await.is_empty(), "acknowledged");

    // Bob replies; alice decrypts.
    let reply = "hi alice, secret received";
    let msg = inbound.encrypt(reply).unwrap();
    bob.send_olm(&alice, &msg).await;
    let got = alice.receive_olm().await;
    assert_eq!(got.len(), 1);
    assert_eq!(outbound.decrypt(&got[0].1).unwrap(), reply.as_bytes());
    // The one-time key is used up server-side too: the next claim hands out another one.
    let next = alice
        .user
        .ok(alice.user.claim(bob.user.id, "BOBPHONE").await)
        .await;
    assert_ne!(next["key_id"], claimed["key_id"]);
    app.stop().await;
}

/// Uploads `n` one-time keys and a fallback key for a fresh device of `owner`; returns the key
/// ids in upload order and the fallback key id.
async fn stocked_device(owner: &User, device: &str, n: usize) -> (Vec<String>, String) {
    let mut account = Account::new();
    owner.register(device, &account).await;
    let order = owner
        .upload(device, &mut account, n)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    account.generate_fallback_key();
    let (fid, fkey) = account.fallback_key().into_iter().next().unwrap();
    let body = json!({"device_id": device, "fallback": {fid.to_base64(): signed(&account, &fkey.to_base64())}});
    owner.ok(owner.post("/v1/keys/one-time", body).await).await;
    (order, fid.to_base64())
}

/// Fires `claimers.len()` claims at once (each claimer may talk to another server) and checks
/// that the one-time keys handed out are exactly `expect` (each once) and the rest fallbacks.
async fn claim_all_at_once(
    claimers: Vec<User>,
    owner: Uuid,
    device: &str,
    expect: &[String],
    fallback: &str,
) {
    let n = claimers.len();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = claimers
        .into_iter()
        .map(|c| {
            let (barrier, device) = (barrier.clone(), device.to_owned());
            tokio::spawn(async move {
                barrier.wait().await;
                let res = c.claim(owner, &device).await;
                c.ok(res).await
            })
        })
        .collect();
    let mut keys = Vec::new();
    let mut fallbacks = 0;
    for t in tasks {
        let c = t.await.unwrap();
        if c["fallback"] == true {
            assert_eq!(c["key_id"], fallback);
            fallbacks += 1;
        } else {
            keys.push(c["key_id"].as_str().unwrap().to_owned());
        }
    }
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "a one-time key was handed out twice: {keys:?}"
    );
    let mut sorted = keys.clone();
    sorted.sort();
    let mut wanted = expect.to_vec();
    wanted.sort();
    assert_eq!(sorted, wanted, "the oldest keys, each once");
    assert_eq!(fallbacks, n - expect.len());
}

async fn concurrent_claims_hand_out_each_key_once(engine: Engine) {
    let app = spawn(engine).await;
    let bob = User::new(&app, "bob").await;
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(User::new(&app, &format!("claimer{i}")).await);
    }
    let (order, fallback) = stocked_device(&bob, "PHONE", 5).await;
    let twenty: Vec<User> = (0..20).map(|i| claimers[i % 4].clone()).collect();
    claim_all_at_once(twenty, bob.id, "PHONE", &order, &fallback).await;
    let res = claimers[0].claim(bob.id, "PHONE").await;
    assert_eq!(claimers[0].ok(res).await["fallback"], true);

    // With more keys than claims, the ones handed out are the oldest: upload order holds
    // under contention too.
    let (order, fallback) = stocked_device(&bob, "LAPTOP", 12).await;
    let eight: Vec<User> = (0..8).map(|i| claimers[i % 4].clone()).collect();
    claim_all_at_once(eight, bob.id, "LAPTOP", &order[..8], &fallback).await;
    app.stop().await;
}

/// The real `nova serve` binary on `db_url`, with the tests' JWT secret (so a token from one
/// server works on the other) and its logs in `log`.
fn second_server(db_url: &str, port: u16, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_nova"))
        .arg("serve")
        .env("NOVA_DATABASE_URL", db_url)
        .env("NOVA_JWT_SECRET", SECRET)
        .env("NOVA_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "NOVA_SEARCH_DIR",
            std::env::temp_dir().join(format!("nova-keys-search-{}", Uuid::new_v4())),
        )
        .env("NOVA_ARGON2_MEMORY_KIB", "1024")
        .env("NOVA_ARGON2_ITERATIONS", "1")
        // Everything the server logs, at its most verbose, to check that no key or payload is
        // among it.
        .env("NOVA_LOG", "debug")
        .env("NOVA_LOG_FORMAT", "json")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("nova starts")
}

async fn claims_from_two_server_processes_hand_out_each_key_once(engine: Engine) {
    let app = spawn(engine).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let log = std::env::temp_dir().join(format!("nova-keys-{}.log", Uuid::new_v4()));
    let mut child = second_server(&app.db_url, port, &log);
    let other = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..400 {
        if let Ok(r) = app.client.get(format!("{other}/healthz")).send().await {
            if r.status().is_success() {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the second server did not come up");

    let bob = User::new(&app, "bob").await;
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(User::new(&app, &format!("claimer{i}")).await);
    }
    // Bob's device is registered and stocked through the second process.
    let (order, fallback) = stocked_device(&bob.at(&other), "PHONE", 5).await;
    let twenty: Vec<User> = (0..20)
        .map(|i| {
            let c = claimers[i % 4].clone();
            if i % 2 == 0 {
                c
            } else {
                c.at(&other)
            }
        })
        .collect();
    claim_all_at_once(twenty, bob.id, "PHONE", &order, &fallback).await;

    // A to-device payload through the second process; then nothing secret is in its logs.
    let secret = format!("to-device-secret-{}", Uuid::new_v4());
    let body = json!({"messages": [{"user_id": bob.id, "device_id": "PHONE", "content": {"ciphertext": secret}}]});
    claimers[0]
        .at(&other)
        .ok(claimers[0].at(&other).post("/v1/to-device", body).await)
        .await;
    let items = bob.at(&other).pending("PHONE").await;
    assert_eq!(items[0]["content"]["ciphertext"], secret.as_str());
    let listed = bob
        .ok(bob.get(&format!("/v1/users/{}/devices", bob.id)).await)
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        logs.contains("\"route\""),
        "the second server logged its requests"
    );
    assert!(
        !logs.contains(&secret),
        "a to-device payload reached the logs"
    );
    for field in ["curve25519", "ed25519", "signature"] {
        let value = listed["items"][0][field].as_str().unwrap();
        assert!(!logs.contains(value), "a {field} reached the logs");
    }
    app.stop().await;
}

impl Device {
    /// Opens an Olm session to `to`'s device with keys found on the server: its identity key
    /// from the device list (signature checked), a claimed one-time key (signature checked).
    async fn open_olm(&self, to: &Device) -> Session {
        let list = self
            .user
            .ok(self
                .user
                .get(&format!("/v1/users/{}/devices", to.user.id))
                .await)
            .await;
        let d = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == to.device)
            .unwrap()
            .clone();
        let ed = vodozemac::Ed25519PublicKey::from_base64(d["ed25519"].as_str().unwrap()).unwrap();
        let claimed = self
            .user
            .ok(self.user.claim(to.user.id, to.device).await)
            .await;
        let otk = claimed["key"].as_str().unwrap();
        let sig = vodozemac::Ed25519Signature::from_base64(claimed["signature"].as_str().unwrap())
            .unwrap();
        ed.verify(canonical(&[("key", otk)]).as_bytes(), &sig)
            .unwrap();
        let identity = Curve25519PublicKey::from_base64(d["curve25519"].as_str().unwrap()).unwrap();
        self.account
            .create_outbound_session(
                SessionConfig::version_1(),
                identity,
                Curve25519PublicKey::from_base64(otk).unwrap(),
            )
            .unwrap()
    }
}

/// A room key as Matrix clients share it over Olm.
fn room_key(conversation: &str, group: &GroupSession) -> String {
    json!({
        "type": "m.room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": conversation,
            "session_id": group.session_id(),
            "session_key": group.session_key().to_base64(),
        }
    })
    .to_string()
}

/// The Megolm session a room key carries.
fn inbound_from(plaintext: &[u8]) -> InboundGroupSession {
    let v: Value = serde_json::from_slice(plaintext).unwrap();
    let key = SessionKey::from_base64(v["content"]["session_key"].as_str().unwrap()).unwrap();
    InboundGroupSession::new(&key, vodozemac::megolm::SessionConfig::version_1())
}

async fn post_megolm(
    sender: &Device,
    conversation: &str,
    group: &mut GroupSession,
    text: &str,
    client: &str,
) {
    let body = json!({
        "ciphertext": group.encrypt(text).to_base64(),
        "sender_device_id": sender.device,
        "session_id": group.session_id(),
        "client_message_id": client,
    });
    sender
        .user
        .ok(sender
            .user
            .post(&format!("/v1/conversations/{conversation}/messages"), body)
            .await)
        .await;
}

/// The conversation's ciphertexts after `after_seq`, as a member fetches them (waiting for the
/// view to reach the conversation domain's head).
async fn fetch_megolm(
    app: &TestApp,
    reader: &Device,
    conversation: &str,
    after_seq: i64,
) -> reqwest::Response {
    let head = app
        .db
        .store
        .head(nova_event_schemas::Domain::Conversation)
        .await
        .unwrap();
    reader
        .user
        .http
        .get(format!(
            "{}/v1/conversations/{conversation}/messages?after_seq={after_seq}",
            reader.user.base
        ))
        .bearer_auth(&reader.user.token)
        .header("x-nova-min-position", format!("conversation:{head}"))
        .send()
        .await
        .unwrap()
}

async fn decrypt_all(
    app: &TestApp,
    reader: &Device,
    conversation: &str,
    session: &mut InboundGroupSession,
    after_seq: i64,
) -> Vec<String> {
    let res = fetch_megolm(app, reader, conversation, after_seq).await;
    let page = reader.user.ok(res).await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let msg = MegolmMessage::from_base64(m["ciphertext"].as_str().unwrap()).unwrap();
            String::from_utf8(session.decrypt(&msg).unwrap().plaintext).unwrap()
        })
        .collect()
}

async fn megolm_group_messages_through_the_server(engine: Engine) {
    let app = spawn(engine).await;
    let alice = Device::new(&app, "alice", "ALICEPHONE").await;
    let mut bob = Device::new(&app, "bob", "BOBPHONE").await;
    let mut carol = Device::new(&app, "carol", "CAROLPHONE").await;
    // Conversations check members against the user directory.
    settle(&app, "user_directory", nova_event_schemas::Domain::User).await;
    let body =
        json!({"kind": "group", "member_ids": [bob.user.id, carol.user.id], "name": "secret club"});
    let created = alice
        .user
        .ok(alice.user.post("/v1/conversations", body).await)
        .await;
    let g = created["conversation_id"].as_str().unwrap().to_owned();

    // Alice shares a Megolm session key with each member over Olm to-device messages.
    let mut group = GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let mut to_bob = alice.open_olm(&bob).await;
    for (to, session) in [
        (&bob, &mut to_bob),
        (&carol, &mut alice.open_olm(&carol).await),
    ] {
        let m = session.encrypt(room_key(&g, &group)).unwrap();
        alice.send_olm(to, &m).await;
    }
    let mut inbound = Vec::new();
    let mut bob_olm = None;
    for member in [&mut bob, &mut carol] {
        let got = member.receive_olm().await;
        let (sender, OlmMessage::PreKey(m)) = &got[0] else {
            panic!("expected a pre-key message");
        };
        let created = member
            .account
            .create_inbound_session(SessionConfig::version_1(), *sender, m)
            .unwrap();
        inbound.push(inbound_from(&created.plaintext));
        if bob_olm.is_none() {
            bob_olm = Some(created.session);
        }
    }
    let (mut bob_group, mut carol_group) = (inbound.remove(0), inbound.remove(0));
    let mut bob_olm = bob_olm.unwrap();

    let texts = [
        "first secret line",
        "second secret line",
        "third secret line",
    ];
    for (i, t) in texts.iter().enumerate() {
        post_megolm(&alice, &g, &mut group, t, &format!("m{i}")).await;
    }
    assert_eq!(decrypt_all(&app, &bob, &g, &mut bob_group, 0).await, texts);
    assert_eq!(
        decrypt_all(&app, &carol, &g, &mut carol_group, 0).await,
        texts
    );

    // Carol is removed; alice rotates the session and shares it with bob only.
    let path = format!("/v1/conversations/{g}/members/{}", carol.user.id);
    alice.user.ok(alice.user.delete(&path).await).await;
    let mut rotated = GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let m = to_bob.encrypt(room_key(&g, &rotated)).unwrap();
    alice.send_olm(&bob, &m).await;
    let got = bob.receive_olm().await;
    let mut bob_rotated = inbound_from(&bob_olm.decrypt(&got[0].1).unwrap());
    post_megolm(&alice, &g, &mut rotated, "after carol left", "m3").await;
    assert_eq!(
        decrypt_all(&app, &bob, &g, &mut bob_rotated, 3).await,
        vec!["after carol left".to_owned()]
    );
    // Carol can no longer fetch the conversation, and the ciphertext bob sees is not
    // readable with the session she holds.
    let res = fetch_megolm(&app, &carol, &g, 3).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = bob.user.ok(fetch_megolm(&app, &bob, &g, 3).await).await;
    let leaked =
        MegolmMessage::from_base64(page["items"][0]["ciphertext"].as_str().unwrap()).unwrap();
    assert!(carol_group.decrypt(&leaked).is_err());
    // The server holds ciphertext only.
    let stored: Vec<(String,)> =
        sqlx::query_as("SELECT ciphertext FROM conversation_messages WHERE ciphertext IS NOT NULL")
            .fetch_all(&app.db.any)
            .await
            .unwrap();
    assert_eq!(stored.len(), 4);
    for (c,) in &stored {
        assert!(!c.contains("secret") && !c.contains("carol"));
    }
    app.stop().await;
}

async fn deactivation_drops_devices_and_leaves_conversations(engine: Engine) {
    let app = spawn(engine).await;
    let alice = Device::new(&app, "alice", "ALICEPHONE").await;
    let bob = Device::new(&app, "bob", "BOBPHONE").await;
    settle(&app, "user_directory", nova_event_schemas::Domain::User).await;
    let direct = json!({"kind": "direct", "member_ids": [bob.user.id]});
    alice
        .user
        .ok(alice.user.post("/v1/conversations", direct).await)
        .await;
    let group = json!({"kind": "group", "member_ids": [bob.user.id], "name": "g"});
    let g = alice
        .user
        .ok(alice.user.post("/v1/conversations", group).await)
        .await;
    let m = alice.open_olm(&bob).await.encrypt("for bob").unwrap();
    alice.send_olm(&bob, &m).await;
    settle(
        &app,
        "conversation_view",
        nova_event_schemas::Domain::Conversation,
    )
    .await;

    bob.user.ok(bob.user.delete("/v1/users/me").await).await;
    let bob_id = bob.user.id.to_string();
    let mut gone = false;
    for _ in 0..200 {
        let devices = alice
            .user
            .ok(alice.user.get(&format!("/v1/users/{bob_id}/devices")).await)
            .await;
        let (member_of,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM conversation_list WHERE user_id = $1 AND state <> 'left'",
        )
        .bind(&bob_id)
        .fetch_one(&app.db.any)
        .await
        .unwrap();
        if devices["items"] == json!([]) && member_of == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "bob's devices and memberships outlived his deactivation"
    );
    for table in [
        "conversation_one_time_keys",
        "conversation_fallback_keys",
        "conversation_to_device",
    ] {
        let (n,): (i64,) =
            sqlx::query_as(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1"))
                .bind(&bob_id)
                .fetch_one(&app.db.any)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let res = alice.user.claim(bob.user.id, "BOBPHONE").await;
    expect_error(res, StatusCode::NOT_FOUND, "unknown_device").await;
    // The group goes on without him.
    let g = g["conversation_id"].as_str().unwrap();
    let body = json!({"ciphertext": "c", "sender_device_id": "ALICEPHONE", "session_id": "s", "client_message_id": "after"});
    alice
        .user
        .ok(alice
            .user
            .post(&format!("/v1/conversations/{g}/messages"), body)
            .await)
        .await;
    app.stop().await;
}

/// Waits until `projection` has applied `domain`'s head.
async fn settle(app: &TestApp, projection: &str, domain: nova_event_schemas::Domain) {
    let head = app.db.store.head(domain).await.unwrap();
    let caught = nova_projections::Checkpoints::default()
        .wait_for(
            &app.db.any,
            projection,
            domain,
            head,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(caught, nova_projections::checkpoint::Caught::Up);
}

/// Every 32-byte value in an account's pickle that is not one of its public keys — its private
/// keys — in the encodings a leak would most likely take (unpadded and padded base64, hex).
fn private_keys(account: &Account) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine as _;
    fn walk(v: &Value, out: &mut Vec<Vec<u8>>) {
        match v {
            Value::Array(items) if items.len() == 32 && items.iter().all(Value::is_u64) => {
                out.push(items.iter().map(|i| i.as_u64().unwrap() as u8).collect());
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(m) => m.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut bytes = Vec::new();
    walk(&serde_json::to_value(account.pickle()).unwrap(), &mut bytes);
    let keys = account.identity_keys();
    let public = [keys.curve25519.to_base64(), keys.ed25519.to_base64()];
    let secrets: Vec<String> = bytes
        .iter()
        .filter(|b| !public.contains(&STANDARD_NO_PAD.encode(b)))
        .flat_map(|b| {
            [
                STANDARD_NO_PAD.encode(b),
                STANDARD.encode(b),
                hex::encode(b),
            ]
        })
        .collect();
    assert!(!secrets.is_empty(), "the pickle holds private keys");
    secrets
}

/// Everything the database holds, as text: the SQLite files, or every PostgreSQL table.
async fn database_text(app: &TestApp) -> String {
    String::from_utf8_lossy(&common::database_bytes(app).await).into_owned()
}

async fn no_plaintext_or_private_key_reaches_the_database_or_jetstream(engine: Engine) {
    use nova_event_schemas::Domain;
    let names = nova_infra::nats::Names::unique();
    let app = common::spawn_configured(engine, |s| {
        s.nats_url = Some(nova_infra::testing::nats_url());
        s.nats_names = names.clone();
    })
    .await;
    let alice = Device::new(&app, "alice", "ALICEPHONE").await;
    let mut bob = Device::new(&app, "bob", "BOBPHONE").await;
    settle(&app, "user_directory", Domain::User).await;
    let body = json!({"kind": "group", "member_ids": [bob.user.id], "name": "audit"});
    let created = alice
        .user
        .ok(alice.user.post("/v1/conversations", body).await)
        .await;
    let g = created["conversation_id"].as_str().unwrap().to_owned();
    let mut group = GroupSession::new(vodozemac::megolm::SessionConfig::version_1());
    let room = room_key(&g, &group);
    let session_key = group.session_key().to_base64();
    let m = alice.open_olm(&bob).await.encrypt(&room).unwrap();
    alice.send_olm(&bob, &m).await;
    let got = bob.receive_olm().await;
    let (sender, OlmMessage::PreKey(pre)) = &got[0] else {
        panic!("expected a pre-key message");
    };
    let created = bob
        .account
        .create_inbound_session(SessionConfig::version_1(), *sender, pre)
        .unwrap();
    let mut bob_group = inbound_from(&created.plaintext);
    let texts = ["audit plaintext number one", "audit plaintext number two"];
    for (i, t) in texts.iter().enumerate() {
        post_megolm(&alice, &g, &mut group, t, &format!("a{i}")).await;
    }
    assert_eq!(decrypt_all(&app, &bob, &g, &mut bob_group, 0).await, texts);

    let mut secrets: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    secrets.push(session_key);
    secrets.extend(private_keys(&alice.account));
    secrets.extend(private_keys(&bob.account));

    // The relay has published every conversation event.
    let head = app.db.store.head(Domain::Conversation).await.unwrap();
    let client = async_nats::connect(nova_infra::testing::nats_url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut published = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(mut s) = js.get_stream(names.stream(Domain::Conversation)).await {
            if s.info().await.map(|i| i.state.messages).unwrap_or(0) >= head as u64 {
                break s;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relay did not publish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        published.push_str(&String::from_utf8_lossy(&m.payload));
    }
    let stored = database_text(&app).await;
    // The scans see what passed through: the Megolm ciphertexts are in both.
    let page = bob.user.ok(fetch_megolm(&app, &bob, &g, 0).await).await;
    let ciphertext = page["items"][0]["ciphertext"].as_str().unwrap();
    assert!(published.contains(ciphertext) && stored.contains(ciphertext));
    for secret in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "a secret is in the database"
        );
        assert!(
            !published.contains(secret.as_str()),
            "a secret is in JetStream"
        );
    }
    for d in Domain::ALL {
        let _ = js.delete_stream(names.stream(d)).await;
    }
    app.stop().await;
}
