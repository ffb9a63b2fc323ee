//! Read-your-writes on demand (`X-Nova-Min-Position`, API.md "Conventions"), end to end on
//! both engines: what is checked before a read waits, and how many waits one client may hold.
//! The apps here run the API without projectors, so every position a test writes stays
//! unprojected and a read that waits for it really waits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nova::app::Components;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;

on_both_backends!(
    min_position_is_checked_before_waiting,
    waits_are_bounded_per_client,
);

const MIN: &str = "X-Nova-Min-Position";

async fn api_without_projectors(engine: Engine) -> TestApp {
    spawn_configured(engine, |s| {
        s.components = Components {
            api: true,
            relay: false,
            projections: Some(Vec::new()),
        }
    })
    .await
}

async fn min_position_is_checked_before_waiting(engine: Engine) {
    let app = api_without_projectors(engine).await;
    let (id, _) = app.register("waiter").await;
    let head = app.db.store.head(Domain::User).await.unwrap();
    let profile = format!("/v1/users/{id}");

    // A position that has not been written can never be reached: refused at once.
    let t = Instant::now();
    let res = app
        .get(&profile)
        .header(MIN, format!("user:{}", head + 1000))
        .send()
        .await
        .unwrap();
    let e = expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;
    assert!(e["message"].as_str().unwrap().contains("not been written"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A domain this read is not answered from is refused, not silently ignored.
    let res = app
        .get(&profile)
        .header(MIN, "post:1")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_header").await;

    // A protected route asks for the caller first: no token, no wait.
    let t = Instant::now();
    let res = app
        .get("/v1/feed")
        .header(MIN, format!("user:{head}"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // A written position the view has not reached is waited for, then answered 503.
    let t = Instant::now();
    let res = app
        .get(&profile)
        .header(MIN, format!("user:{head}"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("retry-after").is_some());
    expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "projection_lagging").await;
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    app.stop().await;
}

async fn waits_are_bounded_per_client(engine: Engine) {
    let app = api_without_projectors(engine).await;
    let (id, pos) = app.register("patient").await;
    let profile = format!("/v1/users/{id}");
    // All requests start well within one wait (5 s), so at most 16 can hold a slot at once.
    let sent = nova::http::extract::MAX_WAITS_PER_CLIENT + 8;
    let requests = (0..sent).map(|_| {
        let req = app.get(&profile).header(MIN, pos.clone());
        async move { req.send().await.unwrap() }
    });
    let answers = futures::future::join_all(requests).await;
    let mut lagging = 0;
    let mut refused = 0;
    for res in answers {
        match res.status() {
            StatusCode::SERVICE_UNAVAILABLE => lagging += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().get("retry-after").is_some());
                expect_error(res, StatusCode::TOO_MANY_REQUESTS, "too_many_waits").await;
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(lagging, nova::http::extract::MAX_WAITS_PER_CLIENT);
    assert_eq!(refused, 8);
    // Slots are released: the next wait is admitted again (and times out as before).
    let res = app.get(&profile).header(MIN, pos).send().await.unwrap();
    expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "projection_lagging").await;
    app.stop().await;
}
