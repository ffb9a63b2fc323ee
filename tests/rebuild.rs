//! Zero-downtime rebuild under live load, through the API: reads never fail or go backwards
//! during the swap, and the rebuilt copy equals the live one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nova_event_schemas::Domain;
use nova_infra::db::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

on_both_backends!(rebuild_under_live_load);

async fn rebuild_under_live_load(engine: Engine) {
    // Delivered through a real (private) nats-server: the live projector consumes JetStream
    // while the rebuild reads the store.
    let nats = nova_infra::testing::PrivateNats::start();
    let app = spawn_with_nats(engine, nats.url()).await;
    let (_, admin, _) = app.user("ops_admin").await;
    app.user_commands()
        .grant_role(
            &nova_commands::CommandContext::new(None, None),
            "ops_admin",
            nova_event_schemas::user::Role::Admin,
        )
        .await
        .unwrap();

    // Some users to read during the rebuild, each with a session to update its profile.
    let mut readers_targets = Vec::new();
    for i in 0..5 {
        let (id, token, _) = app.user(&format!("watched_{i}")).await;
        readers_targets.push((id, token));
    }
    // Readers start once the directory has every watched user.
    let head = app.db.store.head(Domain::User).await.unwrap();
    let res = app
        .get(&format!("/v1/users/{}", readers_targets[0].0))
        .header("X-Nova-Min-Position", format!("user:{head}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));

    // Writers: new accounts and profile updates, continuously.
    let mut writers = Vec::new();
    for w in 0..2 {
        let (app, stop, targets) = (app.clone(), stop.clone(), readers_targets.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                app.register(&format!("load_{w}_{n}")).await;
                let (_, token) = &targets[n % targets.len()];
                let res = app
                    .patch("/v1/users/me")
                    .bearer_auth(token)
                    .json(&json!({"status": format!("w{w} n{n}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(res.status() == StatusCode::OK || res.status() == StatusCode::CONFLICT);
                n += 1;
            }
            n
        }));
    }
    // Readers: every read succeeds and no profile goes back in time.
    let mut readers = Vec::new();
    for (id, _) in readers_targets.clone() {
        let (app, stop) = (app.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut last = String::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let res = app.get(&format!("/v1/users/{id}")).send().await.unwrap();
                assert_eq!(
                    res.status(),
                    StatusCode::OK,
                    "a read failed during the rebuild"
                );
                let p: Value = res.json().await.unwrap();
                let updated = p["updated_at"].as_str().unwrap().to_owned();
                assert!(updated >= last, "read went backwards: {updated} < {last}");
                last = updated;
                reads += 1;
            }
            reads
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = app
        .post("/v1/projections/user_directory/rebuild")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    // A second start while running is refused (it may already be done on a fast machine).
    let again = app
        .post("/v1/projections/user_directory/rebuild")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(matches!(
        again.status(),
        StatusCode::CONFLICT | StatusCode::ACCEPTED
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value = app
            .get("/v1/projections")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let row = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["projection"] == "user_directory")
            .unwrap()
            .clone();
        match row["rebuild"]["state"].as_str() {
            Some("done") => break,
            Some("failed") => panic!("rebuild failed: {row}"),
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild did not finish: {row}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keep the load going a little past the swap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(written > 0 && reads > 0);

    // Non-admins cannot start one; unknown names are 404.
    let (_, plain, _) = app.user("not_admin").await;
    let res = app
        .post("/v1/projections/user_directory/rebuild")
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .post("/v1/projections/nope/rebuild")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;

    // Caught up, the rebuilt live table equals a from-scratch replay.
    let head = app.db.store.head(Domain::User).await.unwrap();
    let (_, pos) = app.register("last_one").await;
    let res = app
        .get(&format!("/v1/users/{}", Uuid::now_v7()))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(head > 0);
    let mut app = Arc::try_unwrap(app).unwrap_or_else(|_| panic!("app still shared"));
    app.stop_server().await;
    let live = directory(&app.db).await;
    assert_eq!(replayed_directory(&app.db).await, live);
    app.stop().await;
    drop(nats);
}
