//! Delivery over a real nats-server (JetStream): the relay publishes in order, once in effect,
//! across restarts; a projector on the JetStream source applies every event exactly once, in
//! order, across redeliveries and a crash between commit and ack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use nova_event_schemas::user::{LoginFailed, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::on_both_backends;
use nova_infra::relay::{Relay, Round};
use nova_infra::store::{RecordedEvent, StoreError};
use nova_infra::testing::{TestDb, TestNats};
use nova_projections::{
    project_once, Checkpoints, EventSource, JetStreamSource, Projection, ProjectionError,
};
use rand::{Rng, SeedableRng};
use sqlx::{Any, Transaction};
use uuid::Uuid;

on_both_backends!(
    relay_publishes_in_order_once_with_headers,
    two_hundred_events_arrive_in_version_order_despite_relay_restarts,
    crash_between_commit_and_ack_applies_nothing_twice,
    out_of_order_and_missing_messages_are_applied_in_order,
    changed_consumer_settings_are_applied,
);

/// A durable consumer made with one redelivery delay gets the new one when a projector starts
/// with another (`get_or_create_consumer` alone would keep the old settings).
async fn changed_consumer_settings_are_applied(engine: Engine) {
    let (_t, db, nats) = setup(engine).await;
    db.store
        .append(
            vec![(Uuid::now_v7(), "user", 0, vec![ev()])],
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let stream = nats
        .js
        .get_stream(nats.names.stream(Domain::User))
        .await
        .unwrap();
    for ack_wait in [Duration::from_secs(3), Duration::from_secs(7)] {
        let source = JetStreamSource::with_ack_wait(
            nats.js.clone(),
            nats.names.clone(),
            db.store.clone(),
            "test_recorder",
            ack_wait,
        );
        // The first read makes (or finds) the consumer.
        project_once(
            &Recorder,
            Domain::User,
            &source,
            &db.any,
            &Checkpoints::default(),
        )
        .await
        .unwrap();
        let info = stream
            .consumer_info(source.durable_name(Domain::User))
            .await
            .unwrap();
        assert_eq!(info.config.ack_wait, ack_wait);
        assert_eq!(
            info.config.max_ack_pending,
            nova_infra::delivery::MAX_ACK_PENDING
        );
    }
    nats.cleanup().await;
    db.close().await;
}

fn ev() -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        failed_at: Utc::now(),
    })
}

/// Records (aggregate, version, position) of every application, in application order.
struct Recorder;

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "test_recorder"
    }
    fn domains(&self) -> &'static [Domain] {
        &[Domain::User]
    }
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO test_log (seq, aggregate_id, version, position) \
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM test_log), $1, $2, $3)",
        )
        .bind(event.aggregate_id.to_string())
        .bind(event.version)
        .bind(event.position)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

async fn setup(engine: Engine) -> (TestDb, Database, TestNats) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    sqlx::query(
        "CREATE TABLE test_log (seq BIGINT NOT NULL, aggregate_id TEXT NOT NULL, \
         version BIGINT NOT NULL, position BIGINT NOT NULL)",
    )
    .execute(&db.any)
    .await
    .unwrap();
    (t, db, TestNats::connect().await)
}

async fn log(db: &Database) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT aggregate_id, version, position FROM test_log ORDER BY seq")
        .fetch_all(&db.any)
        .await
        .unwrap()
}

async fn relay_all(relay: &Relay) {
    loop {
        match relay.relay_once().await.unwrap() {
            Round::Published(_) => continue,
            Round::Idle => return,
            Round::NotLeader => panic!("test relay is not the leader"),
        }
    }
}

async fn stream_messages(nats: &TestNats, domain: Domain) -> Vec<async_nats::jetstream::Message> {
    let stream = nats.js.get_stream(nats.names.stream(domain)).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer
        .batch()
        .max_messages(10_000)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        out.push(m.unwrap());
    }
    out
}

async fn relay_publishes_in_order_once_with_headers(engine: Engine) {
    let (_t, db, nats) = setup(engine).await;
    let id = Uuid::now_v7();
    for v in 0..50 {
        db.store
            .append(vec![(id, "user", v, vec![ev()])], EventMetadata::default())
            .await
            .unwrap();
    }
    let relay = Relay::new(
        db.store.clone(),
        nats.js.clone(),
        nats.names.clone(),
        db.any.clone(),
        Domain::User,
    );
    relay_all(&relay).await;
    assert_eq!(Relay::checkpoint(&db.any, Domain::User).await.unwrap(), 50);

    // A relay that crashed before saving its checkpoint re-sends: JetStream drops duplicates.
    sqlx::query("UPDATE relay_checkpoints SET position = 10")
        .execute(&db.any)
        .await
        .unwrap();
    let restarted = Relay::new(
        db.store.clone(),
        nats.js.clone(),
        nats.names.clone(),
        db.any.clone(),
        Domain::User,
    );
    // Take over the lease of the first instance (as after its lease expired).
    sqlx::query("UPDATE relay_checkpoints SET owner = NULL")
        .execute(&db.any)
        .await
        .unwrap();
    relay_all(&restarted).await;

    let msgs = stream_messages(&nats, Domain::User).await;
    assert_eq!(msgs.len(), 50);
    let stored = db.store.load(Domain::User, id, 0).await.unwrap();
    for (m, e) in msgs.iter().zip(&stored) {
        let headers = m.headers.as_ref().unwrap();
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(
            headers.get("Nova-Position").unwrap().as_str(),
            e.position.to_string()
        );
        assert_eq!(
            m.subject.as_str(),
            nats.names.subject(Domain::User, "login_failed")
        );
        let env = nova_infra::nats::Envelope::decode(&m.payload).unwrap();
        assert_eq!(env.event, *e);
    }
    nats.cleanup().await;
    db.close().await;
}

async fn two_hundred_events_arrive_in_version_order_despite_relay_restarts(engine: Engine) {
    let (_t, db, nats) = setup(engine).await;
    let id = Uuid::now_v7();
    let other = Uuid::now_v7();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let source = JetStreamSource::new(
        nats.js.clone(),
        nats.names.clone(),
        db.store.clone(),
        "test_recorder",
    );
    let checkpoints = Checkpoints::default();
    let mut version = 0;
    let mut other_version = 0;
    while version < 200 {
        // Append a few events (interleaved with another aggregate's).
        let n = rng.gen_range(1..=7).min(200 - version);
        db.store
            .append(
                vec![(id, "user", version, (0..n).map(|_| ev()).collect())],
                EventMetadata::default(),
            )
            .await
            .unwrap();
        version += n;
        db.store
            .append(
                vec![(other, "user", other_version, vec![ev()])],
                EventMetadata::default(),
            )
            .await
            .unwrap();
        other_version += 1;
        // A new relay process each round; sometimes it "crashed" before saving its
        // checkpoint, so it re-sends a tail that JetStream already has.
        if rng.gen_bool(0.4) {
            sqlx::query(
                "UPDATE relay_checkpoints SET position = CASE WHEN position > $1 THEN position - $1 ELSE 0 END, owner = NULL",
            )
            .bind(rng.gen_range(1..10i64))
            .execute(&db.any)
            .await
            .unwrap();
        } else {
            sqlx::query("UPDATE relay_checkpoints SET owner = NULL")
                .execute(&db.any)
                .await
                .unwrap();
        }
        let relay = Relay::new(
            db.store.clone(),
            nats.js.clone(),
            nats.names.clone(),
            db.any.clone(),
            Domain::User,
        );
        relay_all(&relay).await;
        if rng.gen_bool(0.5) {
            project_once(&Recorder, Domain::User, &source, &db.any, &checkpoints)
                .await
                .unwrap();
        }
    }
    let head = db.store.head(Domain::User).await.unwrap();
    while checkpoints
        .load(&db.any, "test_recorder", Domain::User)
        .await
        .unwrap()
        < head
    {
        project_once(&Recorder, Domain::User, &source, &db.any, &checkpoints)
            .await
            .unwrap();
    }
    let log = log(&db).await;
    let versions: Vec<i64> = log
        .iter()
        .filter(|r| r.0 == id.to_string())
        .map(|r| r.1)
        .collect();
    assert_eq!(versions, (1..=200).collect::<Vec<_>>());
    let positions: Vec<i64> = log.iter().map(|r| r.2).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "applied out of position order"
    );
    assert_eq!(positions.len() as i64, 200 + other_version);
    nats.cleanup().await;
    db.close().await;
}

/// Wraps a source and "crashes" the projector between commit and ack: acks are lost.
struct CrashBeforeAck {
    inner: JetStreamSource,
    crash: AtomicBool,
}

#[async_trait]
impl EventSource for CrashBeforeAck {
    async fn next_batch(
        &self,
        d: Domain,
        after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.next_batch(d, after, max).await
    }
    async fn wait_for_more(&self, d: Domain, seen: i64) {
        self.inner.wait_for_more(d, seen).await
    }
    async fn acknowledge(&self, d: Domain, position: i64) {
        if !self.crash.load(Ordering::SeqCst) {
            self.inner.acknowledge(d, position).await
        }
    }
}

async fn crash_between_commit_and_ack_applies_nothing_twice(engine: Engine) {
    let (_t, db, nats) = setup(engine).await;
    for _ in 0..20 {
        db.store
            .append(
                vec![(Uuid::now_v7(), "user", 0, vec![ev(), ev()])],
                EventMetadata::default(),
            )
            .await
            .unwrap();
    }
    let relay = Relay::new(
        db.store.clone(),
        nats.js.clone(),
        nats.names.clone(),
        db.any.clone(),
        Domain::User,
    );
    relay_all(&relay).await;
    let ack_wait = Duration::from_secs(1);
    let crashing = CrashBeforeAck {
        inner: JetStreamSource::with_ack_wait(
            nats.js.clone(),
            nats.names.clone(),
            db.store.clone(),
            "test_recorder",
            ack_wait,
        ),
        crash: AtomicBool::new(true),
    };
    let first_run = Checkpoints::default();
    while log(&db).await.len() < 40 {
        project_once(&Recorder, Domain::User, &crashing, &db.any, &first_run)
            .await
            .unwrap();
    }
    drop(crashing);

    // The "restarted" projector: same durable consumer; the unacknowledged messages come back
    // after ack_wait and must be recognised as applied.
    let restarted = JetStreamSource::with_ack_wait(
        nats.js.clone(),
        nats.names.clone(),
        db.store.clone(),
        "test_recorder",
        ack_wait,
    );
    let checkpoints = Checkpoints::default();
    let stream = nats
        .js
        .get_stream(nats.names.stream(Domain::User))
        .await
        .unwrap();
    let durable = restarted.durable_name(Domain::User);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        project_once(&Recorder, Domain::User, &restarted, &db.any, &checkpoints)
            .await
            .unwrap();
        let info = stream.consumer_info(&durable).await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            // Unacknowledged deliveries came back (more deliveries than stream messages) and
            // were acknowledged as duplicates.
            assert!(
                info.delivered.consumer_sequence > info.delivered.stream_sequence,
                "nothing was redelivered: {info:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery never drained: {info:?}"
        );
    }
    let log = log(&db).await;
    assert_eq!(log.len(), 40, "an event was applied twice");
    nats.cleanup().await;
    db.close().await;
}

/// The stream holds the domain's events out of order and with a hole (as after a retried
/// publish that landed late, or one that was never stored): the projector still applies every
/// event once, in position order, taking the missing one from the store.
async fn out_of_order_and_missing_messages_are_applied_in_order(engine: Engine) {
    let (_t, db, nats) = setup(engine).await;
    let id = Uuid::now_v7();
    for v in 0..5 {
        db.store
            .append(vec![(id, "user", v, vec![ev()])], EventMetadata::default())
            .await
            .unwrap();
    }
    let events = db.store.load(Domain::User, id, 0).await.unwrap();
    let mut prev = 0;
    let mut envelopes = Vec::new();
    for e in &events {
        envelopes.push(nova_infra::nats::Envelope {
            prev_position: prev,
            event: e.clone(),
        });
        prev = e.position;
    }
    // Stream order: 1, 4, 3, 5, 1 (duplicate); position 2 never published.
    for i in [0usize, 3, 2, 4, 0] {
        let env = &envelopes[i];
        nats.js
            .send_publish(
                nats.names.subject(Domain::User, "login_failed"),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(env.encode())
                    .headers(env.headers()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let source = JetStreamSource::new(
        nats.js.clone(),
        nats.names.clone(),
        db.store.clone(),
        "test_recorder",
    );
    let checkpoints = Checkpoints::default();
    let head = db.store.head(Domain::User).await.unwrap();
    for _ in 0..10 {
        project_once(&Recorder, Domain::User, &source, &db.any, &checkpoints)
            .await
            .unwrap();
        if checkpoints.cached("test_recorder", Domain::User) >= head {
            break;
        }
    }
    let versions: Vec<i64> = log(&db).await.iter().map(|r| r.1).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    nats.cleanup().await;
    db.close().await;
}
