//! Conversations (API.md "Messaging", issue 9 part 1) over real HTTP on both engines: direct
//! conversations and message requests, blocks, groups with admins and members, messages with
//! gap-free `seq` and idempotent `client_message_id`, edits, recalls, reactions, read
//! receipts and unread counts, authorization, and a rebuild of the view equal to the live one.

mod common;

use std::time::Duration;

use common::{expect_error, on_both_backends, position, spawn, TestApp};
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_projections::checkpoint::Caught;
use nova_projections::conversation_view::ConversationView;
use nova_projections::notification::NotificationView;
use nova_projections::{Checkpoints, Projection};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(
    direct_conversations_requests_and_blocks,
    groups_messages_and_authorization,
    messages_notify_the_other_members,
);

struct U {
    id: Uuid,
    token: String,
}

/// A registered, logged-in user whom the user directory (the facts conversations check
/// members against) already knows.
async fn user(app: &TestApp, name: &str) -> U {
    let (id, token, _) = app.user(name).await;
    let head = app.db.store.head(Domain::User).await.unwrap();
    wait(app, "user_directory", Domain::User, &format!("user:{head}")).await;
    U { id, token }
}

/// Sends a request; answers (status, body, X-Nova-Position if any).
async fn call(
    app: &TestApp,
    who: &U,
    method: Method,
    path: &str,
    body: Option<Value>,
    min: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&who.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(m) = min {
        req = req.header("x-nova-min-position", m);
    }
    let res = req.send().await.unwrap();
    let pos = res
        .headers()
        .contains_key("x-nova-position")
        .then(|| position(&res));
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, pos)
}

async fn ok(
    app: &TestApp,
    who: &U,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (Value, String) {
    let (status, body, pos) = call(app, who, method, path, body, None).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    (body, pos.unwrap_or_default())
}

async fn send(
    app: &TestApp,
    who: &U,
    conversation: Uuid,
    client: &str,
    ciphertext: &str,
) -> (Value, String) {
    let body = json!({"ciphertext": ciphertext, "sender_device_id": "D1", "session_id": "S1", "client_message_id": client});
    ok(
        app,
        who,
        Method::POST,
        &format!("/v1/conversations/{conversation}/messages"),
        Some(body),
    )
    .await
}

/// The `items` of a GET list answered 200, after the views have applied `min`.
async fn items(app: &TestApp, who: &U, path: &str, min: &str) -> Vec<Value> {
    let (status, body, _) = call(app, who, Method::GET, path, None, Some(min)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body["items"].as_array().unwrap().clone()
}

async fn list(app: &TestApp, who: &U, query: &str, min: &str) -> Vec<Value> {
    items(app, who, &format!("/v1/conversations{query}"), min).await
}

async fn messages(app: &TestApp, who: &U, conversation: Uuid, min: &str) -> Vec<Value> {
    let path = format!("/v1/conversations/{conversation}/messages?limit=100");
    items(app, who, &path, min).await
}

async fn direct_conversations_requests_and_blocks(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, bob, carol, dave) = (
        user(&app, "alice").await,
        user(&app, "bob").await,
        user(&app, "carol").await,
        user(&app, "dave").await,
    );
    let create = |to: Uuid| json!({"kind": "direct", "member_ids": [to]});

    // Bob does not follow alice: her direct conversation is a message request to him.
    let (status, body, _) = call(
        &app,
        &alice,
        Method::POST,
        "/v1/conversations",
        Some(create(bob.id)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    // Asking again, from either side, answers the same conversation.
    for (who, to) in [(&alice, bob.id), (&bob, alice.id)] {
        let (status, body, _) = call(
            &app,
            who,
            Method::POST,
            "/v1/conversations",
            Some(create(to)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["conversation_id"], id.to_string());
    }
    let (first, pos) = send(&app, &alice, id, "c1", "CIPHERTEXT-1").await;
    assert_eq!(first["seq"], 1);
    // The same client message id answers the first message and appends nothing.
    let (again, _) = send(&app, &alice, id, "c1", "CIPHERTEXT-1").await;
    assert_eq!(again, first);
    assert!(
        list(&app, &bob, "", &pos).await.is_empty(),
        "a request is not in the list"
    );
    let requests = list(&app, &bob, "?requests=true", &pos).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["conversation_id"], id.to_string());
    assert_eq!(requests[0]["unread_count"], 1);
    // Only the recipient answers it.
    let (status, _, _) = call(
        &app,
        &alice,
        Method::POST,
        &format!("/v1/conversations/{id}/accept"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, pos) = ok(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{id}/accept"),
        None,
    )
    .await;
    let listed = list(&app, &bob, "", &pos).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["unread_count"], 1);
    let (_, pos) = ok(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{id}/read"),
        Some(json!({"up_to_seq": 1})),
    )
    .await;
    assert_eq!(list(&app, &bob, "", &pos).await[0]["unread_count"], 0);
    let (status, body, _) = call(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{id}/read"),
        Some(json!({"up_to_seq": 9})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Declined: carol's messages to bob are refused from then on.
    let (body, _) = ok(
        &app,
        &carol,
        Method::POST,
        "/v1/conversations",
        Some(create(bob.id)),
    )
    .await;
    let cid: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    ok(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{cid}/decline"),
        None,
    )
    .await;
    let body = json!({"ciphertext": "x", "sender_device_id": "D", "session_id": "S", "client_message_id": "m"});
    let res = app
        .client
        .post(app.url(&format!("/v1/conversations/{cid}/messages")))
        .bearer_auth(&carol.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "request_declined").await;

    // A follow makes it a plain conversation; a block refuses both creation and messages.
    let (_, pos) = ok(
        &app,
        &dave,
        Method::PUT,
        &format!("/v1/users/{}/follow", alice.id),
        None,
    )
    .await;
    wait(&app, "follow_graph", Domain::Follow, &pos).await;
    let (body, pos) = ok(
        &app,
        &alice,
        Method::POST,
        "/v1/conversations",
        Some(create(dave.id)),
    )
    .await;
    let did: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    send(&app, &alice, did, "d1", "hello").await;
    assert_eq!(list(&app, &dave, "", &pos).await.len(), 1);
    let (_, pos) = ok(
        &app,
        &dave,
        Method::PUT,
        &format!("/v1/users/{}/block", alice.id),
        None,
    )
    .await;
    wait(&app, "notification", Domain::Follow, &pos).await;
    wait(&app, "follow_graph", Domain::Follow, &pos).await;
    let res = app
        .client
        .post(app.url(&format!("/v1/conversations/{did}/messages")))
        .bearer_auth(&alice.token)
        .json(&body_of("d2"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "blocked").await;
    let res = app
        .client
        .post(app.url("/v1/conversations"))
        .bearer_auth(&carol.token)
        .json(&json!({"kind": "direct", "member_ids": [Uuid::now_v7()]}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .client
        .post(app.url("/v1/conversations"))
        .bearer_auth(&carol.token)
        .json(&json!({"kind": "direct", "member_ids": [bob.id, dave.id]}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_field").await;
    let res = app
        .client
        .post(app.url("/v1/conversations"))
        .json(&create(bob.id))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    rebuild_equals_live(&app).await;
    app.stop().await;
}

fn body_of(client: &str) -> Value {
    json!({"ciphertext": "x", "sender_device_id": "D", "session_id": "S", "client_message_id": client})
}

/// Waits until `projection` has applied the position in `pos` (`<domain>:<n>`).
async fn wait(app: &TestApp, projection: &str, domain: Domain, pos: &str) {
    let n: i64 = pos.rsplit(':').next().unwrap().parse().unwrap();
    let caught = Checkpoints::default()
        .wait_for(&app.db.any, projection, domain, n, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(caught, Caught::Up);
}

/// Alice, bob, carol and dave, and the group "team" alice made with bob and carol.
async fn team(app: &TestApp) -> (U, U, U, U, Uuid) {
    let (alice, bob, carol, dave) = (
        user(app, "alice").await,
        user(app, "bob").await,
        user(app, "carol").await,
        user(app, "dave").await,
    );
    let (body, _) = ok(
        app,
        &alice,
        Method::POST,
        "/v1/conversations",
        Some(json!({"kind": "group", "member_ids": [bob.id, carol.id], "name": "team"})),
    )
    .await;
    let g: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    (alice, bob, carol, dave, g)
}

async fn groups_messages_and_authorization(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, bob, carol, dave, g) = team(&app).await;
    let mut seqs = Vec::new();
    let mut pos = String::new();
    for (i, who) in [&alice, &bob, &carol, &alice].into_iter().enumerate() {
        let (m, p) = send(&app, who, g, &format!("m{i}"), &format!("CT{i}")).await;
        seqs.push(m["seq"].as_i64().unwrap());
        pos = p;
    }
    assert_eq!(seqs, vec![1, 2, 3, 4], "gap-free seq");
    let (first, _) = send(&app, &alice, g, "m0", "CT0").await;
    assert_eq!(first["seq"], 1, "idempotent");

    // Non-members: 403 on reads and writes.
    let (status, _, _) = call(
        &app,
        &dave,
        Method::GET,
        &format!("/v1/conversations/{g}/messages"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &app,
        &dave,
        Method::POST,
        &format!("/v1/conversations/{g}/messages"),
        Some(body_of("x")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &app,
        &dave,
        Method::GET,
        &format!("/v1/conversations/{}/messages", Uuid::now_v7()),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let page = messages(&app, &bob, g, &pos).await;
    assert_eq!(page.len(), 4);
    assert_eq!(page[1]["ciphertext"], "CT1");
    let mid = page[0]["message_id"].as_str().unwrap().to_owned();
    // Edit and recall: the sender only.
    let edit = json!({"ciphertext": "CT0-EDITED", "session_id": "S2"});
    let (status, _, _) = call(
        &app,
        &bob,
        Method::PATCH,
        &format!("/v1/conversations/{g}/messages/{mid}"),
        Some(edit.clone()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    ok(
        &app,
        &alice,
        Method::PATCH,
        &format!("/v1/conversations/{g}/messages/{mid}"),
        Some(edit),
    )
    .await;
    let (_, pos) = ok(
        &app,
        &bob,
        Method::PUT,
        &format!("/v1/conversations/{g}/messages/{mid}/reactions/%F0%9F%91%8D"),
        None,
    )
    .await;
    let page = messages(&app, &carol, g, &pos).await;
    assert_eq!(page[0]["ciphertext"], "CT0-EDITED");
    assert_eq!(page[0]["history"][0]["ciphertext"], "CT0");
    assert_eq!(page[0]["reactions"]["👍"], json!([bob.id]));
    ok(
        &app,
        &bob,
        Method::DELETE,
        &format!("/v1/conversations/{g}/messages/{mid}/reactions/%F0%9F%91%8D"),
        None,
    )
    .await;
    let (status, _, _) = call(
        &app,
        &bob,
        Method::DELETE,
        &format!("/v1/conversations/{g}/messages/{mid}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, pos) = ok(
        &app,
        &alice,
        Method::DELETE,
        &format!("/v1/conversations/{g}/messages/{mid}"),
        None,
    )
    .await;
    let page = messages(&app, &carol, g, &pos).await;
    assert!(
        page[0]["ciphertext"].is_null(),
        "a recalled message's ciphertext is not served"
    );
    assert_eq!(page[0]["recalled"], true);
    assert_eq!(page[0]["history"], json!([]));
    assert!(page[0]["reactions"].as_object().unwrap().is_empty());

    // Members: only the admin adds and removes; a member may leave.
    let (status, _, _) = call(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{g}/members"),
        Some(json!({"user_id": dave.id})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    ok(
        &app,
        &alice,
        Method::POST,
        &format!("/v1/conversations/{g}/members"),
        Some(json!({"user_id": dave.id})),
    )
    .await;
    ok(
        &app,
        &alice,
        Method::DELETE,
        &format!("/v1/conversations/{g}/members/{}", carol.id),
        None,
    )
    .await;
    let (status, _, _) = call(
        &app,
        &carol,
        Method::GET,
        &format!("/v1/conversations/{g}/messages"),
        None,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a removed member is refused at once"
    );
    let (_, pos) = ok(
        &app,
        &bob,
        Method::DELETE,
        &format!("/v1/conversations/{g}/members/{}", bob.id),
        None,
    )
    .await;
    let (status, _, _) = call(
        &app,
        &bob,
        Method::POST,
        &format!("/v1/conversations/{g}/messages"),
        Some(body_of("late")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(list(&app, &bob, "", &pos).await.is_empty(), "left");
    // Dave, added later, has nothing unread; latest activity first in alice's list.
    let dl = list(&app, &dave, "", &pos).await;
    assert_eq!(dl[0]["unread_count"], 0);
    let (body, _) = ok(
        &app,
        &alice,
        Method::POST,
        "/v1/conversations",
        Some(json!({"kind": "group", "member_ids": [dave.id], "name": "newer"})),
    )
    .await;
    let (_, pos) = send(
        &app,
        &dave,
        body["conversation_id"].as_str().unwrap().parse().unwrap(),
        "n1",
        "CTN",
    )
    .await;
    let al = list(&app, &alice, "", &pos).await;
    assert_eq!(al.len(), 2);
    assert_eq!(al[0]["name"], "newer");
    assert_eq!(al[0]["unread_count"], 1);
    // Bad input.
    for body in [
        json!({"kind": "group", "member_ids": []}),
        json!({"kind": "chat", "member_ids": [bob.id]}),
        json!({"kind": "group", "member_ids": [bob.id], "name": ""}),
    ] {
        let (status, _, _) = call(
            &app,
            &alice,
            Method::POST,
            "/v1/conversations",
            Some(body),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let big = json!({"ciphertext": "x".repeat(40_000), "sender_device_id": "D", "session_id": "S", "client_message_id": "big"});
    let (status, _, _) = call(
        &app,
        &alice,
        Method::POST,
        &format!("/v1/conversations/{g}/messages"),
        Some(big),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = call(
        &app,
        &alice,
        Method::POST,
        &format!("/v1/conversations/{g}/messages"),
        Some(json!({"ciphertext": "x"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    rebuild_equals_live(&app).await;
    app.stop().await;
}

/// Every row of the view's tables, as text, ordered.
async fn view_tables(app: &TestApp, suffix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (table, cols) in [
        ("conversation_list", "user_id || '|' || conversation_id || '|' || kind || '|' || COALESCE(name, '') || '|' || state || '|' || last_activity_at || '|' || CAST(last_seq AS TEXT) || '|' || CAST(read_seq AS TEXT)"),
        ("conversation_messages", "conversation_id || '|' || CAST(seq AS TEXT) || '|' || message_id || '|' || COALESCE(ciphertext, '-') || '|' || COALESCE(edited_at, '') || '|' || CAST(recalled AS TEXT) || '|' || history"),
        ("conversation_reactions", "conversation_id || '|' || CAST(seq AS TEXT) || '|' || user_id || '|' || emoji"),
    ] {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT {cols} FROM {table}{suffix} ORDER BY 1"))
            .fetch_all(&app.db.any)
            .await
            .unwrap();
        out.push(rows.into_iter().map(|r| r.0).collect());
    }
    out
}

/// A from-scratch replay of the conversation history into a copy equals the live view.
async fn rebuild_equals_live(app: &TestApp) {
    let head = app.db.store.head(Domain::Conversation).await.unwrap();
    wait(
        app,
        "conversation_view",
        Domain::Conversation,
        &format!("conversation:{head}"),
    )
    .await;
    let live = view_tables(app, "").await;
    let copy = ConversationView::default().shadow("_replay").unwrap();
    nova_projections::schema::create_copies(
        &app.db.any,
        &ConversationView::default().tables(),
        "_replay",
    )
    .await
    .unwrap();
    nova_projections::catch_up(&*copy, &app.db.store, &app.db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(view_tables(app, "_replay").await, live);
    assert!(!live[0].is_empty() && !live[1].is_empty());
}

/// `who`'s `message` notifications, after the notification view has applied `min`
/// (`conversation:<n>` is a domain the view reads, so the header is honoured).
async fn message_notifications(app: &TestApp, who: &U, min: &str) -> Vec<Value> {
    let all = items(app, who, "/v1/notifications?limit=100", min).await;
    all.into_iter().filter(|n| n["kind"] == "message").collect()
}

/// (actor, conversation) of each notification, oldest first.
fn senders(items: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items
        .iter()
        .rev()
        .map(|n| {
            (
                n["actor_id"].as_str().unwrap().to_owned(),
                n["conversation_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.dedup();
    out
}

async fn messages_notify_the_other_members(engine: Engine) {
    let app = spawn(engine).await;
    let (alice, bob, carol, dave, g) = team(&app).await;
    let gs = g.to_string();
    let (a, b, d) = (
        alice.id.to_string(),
        bob.id.to_string(),
        dave.id.to_string(),
    );

    // Three messages from alice within the window: one notification each for bob and carol,
    // none for alice, and nothing of the message in it.
    let mut pos = String::new();
    for i in 0..3 {
        pos = send(&app, &alice, g, &format!("a{i}"), "SECRET-CIPHERTEXT")
            .await
            .1;
    }
    assert!(message_notifications(&app, &alice, &pos).await.is_empty());
    for who in [&bob, &carol] {
        let items = message_notifications(&app, who, &pos).await;
        assert_eq!(senders(&items), [(a.clone(), gs.clone())]);
        assert_eq!(items.len(), 1, "one notification for a burst");
        let n = &items[0];
        assert!(n["post_id"].is_null() && n["comment_id"].is_null());
        assert!(!n.to_string().contains("SECRET"), "no content: {n}");
        assert_eq!(n["read"], false);
    }

    // Carol leaves the group (removed by the admin), dave joins: dave's message notifies
    // alice and bob, not carol; bob's notifies alice and dave.
    ok(
        &app,
        &alice,
        Method::DELETE,
        &format!("/v1/conversations/{g}/members/{}", carol.id),
        None,
    )
    .await;
    ok(
        &app,
        &alice,
        Method::POST,
        &format!("/v1/conversations/{g}/members"),
        Some(json!({"user_id": dave.id})),
    )
    .await;
    send(&app, &dave, g, "d0", "x").await;
    let pos = send(&app, &bob, g, "b0", "x").await.1;
    assert_eq!(
        senders(&message_notifications(&app, &alice, &pos).await),
        [(d.clone(), gs.clone()), (b.clone(), gs.clone())]
    );
    assert_eq!(
        senders(&message_notifications(&app, &bob, &pos).await),
        [(a.clone(), gs.clone()), (d.clone(), gs.clone())]
    );
    assert_eq!(
        senders(&message_notifications(&app, &carol, &pos).await),
        [(a.clone(), gs.clone())],
        "a removed member is not notified"
    );
    assert_eq!(
        senders(&message_notifications(&app, &dave, &pos).await),
        [(b.clone(), gs.clone())],
        "a new member only of what came after joining"
    );

    // A message request does not notify until it is accepted. Dave does not follow carol.
    let (body, _) = ok(
        &app,
        &carol,
        Method::POST,
        "/v1/conversations",
        Some(json!({"kind": "direct", "member_ids": [dave.id]})),
    )
    .await;
    let r: Uuid = body["conversation_id"].as_str().unwrap().parse().unwrap();
    let pos = send(&app, &carol, r, "r0", "x").await.1;
    let before = message_notifications(&app, &dave, &pos).await;
    assert_eq!(
        senders(&before),
        [(b.clone(), gs.clone())],
        "a pending request notifies nobody"
    );
    ok(
        &app,
        &dave,
        Method::POST,
        &format!("/v1/conversations/{r}/accept"),
        None,
    )
    .await;
    let pos = send(&app, &carol, r, "r1", "x").await.1;
    assert_eq!(
        senders(&message_notifications(&app, &dave, &pos).await),
        [
            (b.clone(), gs.clone()),
            (carol.id.to_string(), r.to_string())
        ]
    );

    // Preferences: carol switches `message` off; dave's answer is not shown to her.
    let (prefs, _) = ok(
        &app,
        &carol,
        Method::PUT,
        "/v1/notifications/preferences",
        Some(json!({"message": false})),
    )
    .await;
    assert_eq!(prefs["message"], false);
    let pos = send(&app, &dave, r, "r2", "x").await.1;
    assert_eq!(
        senders(&message_notifications(&app, &carol, &pos).await),
        [(a.clone(), gs.clone())],
        "switched off"
    );

    // Blocks: bob blocks alice; her notifications to him are hidden (block in effect now).
    let (_, pos) = ok(
        &app,
        &bob,
        Method::PUT,
        &format!("/v1/users/{}/block", alice.id),
        None,
    )
    .await;
    wait(&app, "notification", Domain::Follow, &pos).await;
    let head = app.db.store.head(Domain::Conversation).await.unwrap();
    assert_eq!(
        senders(&message_notifications(&app, &bob, &format!("conversation:{head}")).await),
        [(d.clone(), gs.clone())]
    );

    // The view rebuilt from history holds the same notifications and memberships.
    notification_rebuild_equals_live(&app).await;
    app.stop().await;
}

/// A from-scratch replay of every domain the notification view reads equals the live view.
async fn notification_rebuild_equals_live(app: &TestApp) {
    for domain in NotificationView::default().domains() {
        let head = app.db.store.head(*domain).await.unwrap();
        wait(
            app,
            "notification",
            *domain,
            &format!("{}:{head}", domain.as_str()),
        )
        .await;
    }
    let rows = |suffix: &'static str| async move {
        let mut out = Vec::new();
        for sql in [
            format!(
                "SELECT notification_id || '|' || recipient_id || '|' || kind || '|' || actor_id \
                 || '|' || COALESCE(conversation_id, '') || '|' || created_at \
                 FROM notification{suffix} ORDER BY 1"
            ),
            format!(
                "SELECT conversation_id || '|' || user_id || '|' || CAST(pending AS TEXT) \
                 FROM notification_conversation{suffix} ORDER BY 1"
            ),
        ] {
            let r: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(&app.db.any).await.unwrap();
            out.push(r.into_iter().map(|r| r.0).collect::<Vec<_>>());
        }
        out
    };
    let live = rows("").await;
    nova_projections::schema::create_copies(
        &app.db.any,
        &NotificationView::default().tables(),
        "_replay",
    )
    .await
    .unwrap();
    let copy = NotificationView::default().shadow("_replay").unwrap();
    nova_projections::catch_up(&*copy, &app.db.store, &app.db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(rows("_replay").await, live);
    assert!(live[0].iter().any(|n| n.contains("|message|")));
}
