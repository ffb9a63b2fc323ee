//! Ops surface: roles, projection status (HTTP and CLI), metrics.

mod common;

use std::process::Command;

use common::*;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::Value;

on_both_backends!(
    projection_status_needs_a_role,
    metrics_are_exposed,
    metrics_need_the_token,
    metrics_on_their_own_listener,
);

async fn projection_status_needs_a_role(engine: Engine) {
    let app = spawn(engine).await;
    let (_, plain, _) = app.user("plain_user").await;
    let (_, ops, _) = app.user("ops_user").await;
    let res = app.get("/v1/projections").send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .get("/v1/projections")
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let ctx = nova_commands::CommandContext::new(None, None);
    let users = app.user_commands();
    let done = users
        .grant_role(&ctx, "ops_user", nova_event_schemas::user::Role::Admin)
        .await
        .unwrap();
    assert!(done.position.is_some());
    // Granting twice changes nothing.
    let again = users
        .grant_role(&ctx, "ops_user", nova_event_schemas::user::Role::Admin)
        .await
        .unwrap();
    assert_eq!(again.position, None);

    let res = app
        .get("/v1/projections")
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let row = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["projection"] == "user_directory")
        .expect("user_directory listed")
        .clone();
    assert_eq!(row["domain"], "user");
    assert!(row["head"].as_i64().unwrap() >= 4);
    assert!(row["lag_events"].as_i64().unwrap() >= 0);
    assert!(row["status"] == "caught_up" || row["status"] == "behind");
    app.stop().await;
}

async fn metrics_are_exposed(engine: Engine) {
    let app = spawn(engine).await;
    let (_, access, _) = app.user("metered").await;
    app.get("/v1/users/me")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let text = app
        .get("/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("nova_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/v1/users/me""#), "{text}");
    assert!(
        text.contains("nova_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("nova_projection_applied_events_total"),
        "{text}"
    );
    app.stop().await;
}

/// On the API listener `/metrics` answers only the configured token; without a token (and
/// without a metrics listener) it is not served at all.
async fn metrics_need_the_token(engine: Engine) {
    let app = spawn(engine).await;
    let res = app.get("/metrics").send().await.unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .get("/metrics")
        .bearer_auth("not-the-metrics-token")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let (_, access, _) = app.user("not_ops").await;
    let res = app
        .get("/metrics")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .get("/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.stop().await;

    let app = spawn_configured(engine, |s| s.metrics = Default::default()).await;
    let res = app.get("/metrics").send().await.unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .get("/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    app.stop().await;
}

/// With `NOVA_METRICS_ADDR`, `/metrics` is served there (no token) and not on the API.
async fn metrics_on_their_own_listener(engine: Engine) {
    let app = spawn_configured(engine, |s| {
        s.metrics = nova::app::MetricsAccess {
            listen: Some("127.0.0.1:0".into()),
            token: None,
        };
    })
    .await;
    app.user("metered_apart").await;
    let res = app.get("/metrics").send().await.unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let addr = app.metrics_addr.expect("metrics listener bound");
    assert_ne!(addr, app.addr);
    let res = app
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(text.contains("nova_http_requests_total"), "{text}");
    app.stop().await;
}

#[test]
fn cli_grant_role_and_projection_status() {
    let dir = std::env::temp_dir().join(format!("nova-ops-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let nova = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(args)
            .current_dir(&dir)
            .env_remove("NOVA_DATABASE_URL")
            .env_remove("NOVA_DATA_DIR")
            .env_remove("NOVA_NATS_URL")
            .output()
            .unwrap()
    };
    let legacy = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
    let out = nova(&[
        "admin",
        "import-user",
        "root_op",
        "--sha256",
        legacy,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nova(&["admin", "grant-role", "root_op", "admin", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changed"], true);
    let out = nova(&["admin", "grant-role", "root_op", "admin"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already has"));
    let out = nova(&["admin", "grant-role", "nobody_here", "admin"]);
    assert!(!out.status.success());
    let out = nova(&["admin", "grant-role", "root_op", "superuser"]);
    assert!(!out.status.success());

    let out = nova(&["projections", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `{items, as_of_copies}`, the shape of `GET /v1/projections` (ADR 0024).
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["as_of_copies"], serde_json::json!([]));
    let row = &status["items"].as_array().unwrap()[0];
    assert_eq!(row["projection"], "user_directory");
    assert_eq!(row["checkpoint"], 0);
    assert_eq!(row["head"], 3);
    assert_eq!(row["lag_events"], 3);
    assert_eq!(row["state"], "behind");
    let out = nova(&["projections", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("user_directory") && text.contains("behind"),
        "{text}"
    );
    // Policies are listed too (nothing handled yet: this process runs none).
    let policy = status["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["projection"] == "policy_follow_on_user_deactivated")
        .expect("policies in the status");
    assert_eq!(policy["kind"], "policy");
    assert_eq!(
        (
            policy["lag_events"].as_i64(),
            policy["dead_letters"].as_i64()
        ),
        (Some(3), Some(0))
    );
    assert!(text.contains("policy_post_on_user_deactivated"), "{text}");
    // Parked events are retried by name; there are none here.
    let out = nova(&[
        "projections",
        "retry",
        "policy_follow_on_user_deactivated",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["handled"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(!nova(&["projections", "retry", "no_such_policy"])
        .status
        .success());
    let _ = std::fs::remove_dir_all(dir);
}
