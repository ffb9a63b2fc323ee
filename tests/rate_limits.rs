//! Rate limits (ADR 0022) over real HTTP, on both engines, with the quotas kept in process and
//! in Redis (`NOVA_TEST_REDIS_URL`, each test under its own key prefix): 429 after the burst
//! with `Retry-After` and the draft's `RateLimit`/`RateLimit-Policy` headers, a manual clock
//! instead of sleeps, per-address quotas for calls without a token, one quota for two API
//! processes sharing a Redis, and failed logins of unknown names that survive a restart.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use nova::app::{RateLimitSettings, Settings};
use nova::http::ratelimit::Clock;
use nova_infra::db::Engine;
use nova_infra::limits::{test_redis_url, Quota};
use reqwest::{Response, StatusCode};
use serde_json::json;

const START: i64 = 1_900_000_000_000;

/// Where the quotas are kept.
#[derive(Clone)]
enum Store {
    InProcess,
    Redis(String),
}

impl Store {
    fn redis() -> Store {
        Store::Redis(format!("nova-test-{}:", uuid::Uuid::new_v4()))
    }
}

fn limits(
    user: Option<Quota>,
    anonymous: Option<Quota>,
    store: &Store,
    clock: &Clock,
) -> impl FnOnce(&mut Settings) {
    let store = store.clone();
    let clock = clock.clone();
    move |s| {
        s.rate_limits = RateLimitSettings {
            user,
            anonymous,
            redis_url: matches!(store, Store::Redis(_)).then(test_redis_url),
            redis_prefix: match store {
                Store::Redis(p) => p,
                Store::InProcess => String::new(),
            },
            clock,
        }
    }
}

/// Fails (rather than quietly deciding in process) when the test's Redis is not there.
async fn redis_reachable() {
    nova_infra::limits::Limits::redis(&test_redis_url(), "ping:")
        .unwrap()
        .ping()
        .await
        .expect("Redis reachable at NOVA_TEST_REDIS_URL");
}

fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn high() -> Option<Quota> {
    Some(Quota::per_minute(1_000_000, 100_000))
}

async fn burst_then_429(engine: Engine, store: Store) {
    if matches!(store, Store::Redis(_)) {
        redis_reachable().await;
    }
    let clock = Clock::manual(START);
    // 60 a minute = one a second; 3 at once.
    let app = spawn_configured(
        engine,
        limits(Some(Quota::per_minute(60, 3)), high(), &store, &clock),
    )
    .await;
    let (_, token, _) = app.user("alice").await;
    let me = || app.get("/v1/users/me").bearer_auth(&token).send();
    for remaining in [2, 1, 0] {
        let res = me().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-policy"), "\"user\";q=60;w=60");
        assert_eq!(
            header(&res, "ratelimit"),
            format!("\"user\";r={remaining};t={}", 3 - remaining)
        );
    }
    let res = me().await.unwrap();
    assert_eq!(header(&res, "retry-after"), "1");
    assert_eq!(header(&res, "ratelimit"), "\"user\";r=0;t=3");
    assert_eq!(header(&res, "ratelimit-policy"), "\"user\";q=60;w=60");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Commands are limited alike (the layer is on every /v1 route), and refused before they
    // run: nothing is appended.
    let res = app
        .patch("/v1/users/me")
        .bearer_auth(&token)
        .json(&json!({"display_name": "A"}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // Waiting what Retry-After said is enough, and not a millisecond less.
    clock.advance(Duration::from_millis(999));
    assert_eq!(me().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_millis(1));
    let res = me().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["display_name"],
        json!(null)
    );
    // Another user has a quota of their own.
    let (_, other, _) = app.user("bob").await;
    let res = app
        .get("/v1/users/me")
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit"), "\"user\";r=2;t=1");
    // System routes are not limited.
    for _ in 0..5 {
        assert_eq!(
            app.get("/healthz").send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    app.stop().await;
}

async fn in_process_burst(engine: Engine) {
    burst_then_429(engine, Store::InProcess).await
}

async fn redis_burst(engine: Engine) {
    burst_then_429(engine, Store::redis()).await
}

/// Registration, login and refresh take the quota of the client's address; another address,
/// or a user with a token, is not held back by it.
async fn per_address_without_a_token(engine: Engine) {
    let clock = Clock::manual(START);
    let app = spawn_configured(
        engine,
        limits(
            high(),
            Some(Quota::per_minute(6, 3)),
            &Store::InProcess,
            &clock,
        ),
    )
    .await;
    let register = app
        .post("/v1/users")
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::CREATED);
    assert_eq!(
        header(&register, "ratelimit-policy"),
        "\"address\";q=6;w=60"
    );
    let login = app.login("carol", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let refresh = app
        .post("/v1/sessions/refresh")
        .json(&json!({"refresh_token": "nrt_not_a_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    // The fourth call from this address is one too many, whichever route it is.
    let res = app.login("carol", PASSWORD).await;
    assert_eq!(header(&res, "retry-after"), "10");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let res = app
        .post("/v1/users")
        .json(&json!({"username": "dave", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // A bad token does not escape the address's quota.
    let res = app
        .get("/v1/users/me")
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The user's token has its own quota.
    let res = app
        .get("/v1/users/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "ratelimit").starts_with("\"user\";"));
    // Another address (127.0.0.2 reaches the loopback listener too) has its own.
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let res = elsewhere
        .post(app.url("/v1/sessions"))
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // After Retry-After this address may call again.
    clock.advance(Duration::from_secs(10));
    assert_eq!(app.login("carol", PASSWORD).await.status(), StatusCode::OK);
    app.stop().await;
}

/// Two API processes on one database and one Redis take from one quota.
async fn two_processes_share_one_quota(engine: Engine) {
    redis_reachable().await;
    let store = Store::redis();
    let clock = Clock::manual(START);
    let quota = Some(Quota::per_minute(60, 4));
    let a = spawn_configured(engine, limits(quota, high(), &store, &clock)).await;
    let b = spawn_beside(&a, limits(quota, high(), &store, &clock)).await;
    let (_, token, _) = a.user("erin").await;
    for app in [&a, &b, &a, &b] {
        let res = app
            .get("/v1/feed")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    for app in [&a, &b] {
        let res = app
            .get("/v1/feed")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&res, "ratelimit"), "\"user\";r=0;t=4");
        expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }
    // Without Redis each process keeps its own quota: the same calls would all pass.
    let c = spawn_beside(&a, limits(quota, high(), &Store::InProcess, &clock)).await;
    let res = c.get("/v1/feed").bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

/// Failed logins of a name without an account lock it like an account's would; kept in Redis,
/// the count survives a restart (and would be seen by any other API process).
async fn unknown_name_lockout_survives_a_restart(engine: Engine) {
    redis_reachable().await;
    let store = Store::redis();
    let clock = Clock::manual(START);
    let mut a = spawn_configured(engine, limits(high(), high(), &store, &clock)).await;
    for _ in 0..4 {
        let res = a.login("nobody", "wrong password").await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    a.stop_server().await;
    let b = spawn_beside(&a, limits(high(), high(), &store, &clock)).await;
    let res = b.login("Nobody", "wrong password").await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = b.login("nobody", "wrong password").await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // Kept in process, a restart forgets them.
    let c = spawn_beside(&a, limits(high(), high(), &Store::InProcess, &clock)).await;
    let res = c.login("nobody", "wrong password").await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

on_both_backends!(
    in_process_burst,
    redis_burst,
    per_address_without_a_token,
    two_processes_share_one_quota,
    unknown_name_lockout_survives_a_restart,
);
