//! Delivery through a real nats-server (a private one, so it can be stopped): the API keeps
//! accepting commands while NATS is down, `/readyz` says so, and once NATS is back the relay
//! drains its backlog and the read model equals a from-scratch rebuild.

mod common;

use std::time::Duration;

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use nova_infra::relay::Relay;
use nova_infra::testing::PrivateNats;
use reqwest::StatusCode;
use serde_json::Value;

on_both_backends!(nats_outage_loses_nothing);

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn nats_outage_loses_nothing(engine: Engine) {
    let mut nats = PrivateNats::start();
    let mut app = spawn_with_nats(engine, nats.url()).await;
    let ready = |app: &TestApp| {
        let r = app.get("/readyz").send();
        async move { r.await.map(|r| r.status()).ok() }
    };
    wait_until("readiness", || async {
        ready(&app).await == Some(StatusCode::OK)
    })
    .await;
    let (first, pos) = app.register("before_outage").await;
    let res = app
        .get(&format!("/v1/users/{first}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    wait_until("the relay to publish", || async {
        Relay::checkpoint(&app.db.any, Domain::User).await.unwrap()
            >= app.db.store.head(Domain::User).await.unwrap()
    })
    .await;

    nats.stop();
    wait_until("/readyz to report NATS down", || async {
        let Ok(r) = app.get("/readyz").send().await else {
            return false;
        };
        if r.status() != StatusCode::SERVICE_UNAVAILABLE {
            return false;
        }
        let body: Value = r.json().await.unwrap();
        body["error"]["details"]["nats"] == "down" && body["error"]["details"]["store"] == "up"
    })
    .await;
    // Commands keep succeeding under concurrent load: events are stored while NATS is away.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let app = &app;
            async move {
                let mut last = None;
                for i in 0..5 {
                    last = Some(app.register(&format!("during_outage_{w}_{i}")).await);
                }
                last
            }
        })
        .collect();
    let lasts = futures::future::join_all(writers).await;
    // ...and the read model keeps up meanwhile (the projector reads the store).
    for (id, pos) in lasts.into_iter().flatten() {
        let res = app
            .get(&format!("/v1/users/{id}"))
            .header("X-Nova-Min-Position", &pos)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let head = app.db.store.head(Domain::User).await.unwrap();
    assert!(Relay::checkpoint(&app.db.any, Domain::User).await.unwrap() < head);

    nats.restart();
    wait_until("readiness after NATS restart", || async {
        ready(&app).await == Some(StatusCode::OK)
    })
    .await;
    wait_until("the relay backlog to drain", || async {
        Relay::checkpoint(&app.db.any, Domain::User).await.unwrap() >= head
    })
    .await;
    let (last, pos) = app.register("after_outage").await;
    let res = app
        .get(&format!("/v1/users/{last}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let live = directory(&app.db).await;
    assert_eq!(live.len(), 17);

    // The live read model equals a from-scratch rebuild from the store.
    app.stop_server().await;
    assert_eq!(replayed_directory(&app.db).await, live);
    app.stop().await;
}
