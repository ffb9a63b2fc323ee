//! The policy runtime on both engines: every event is handled in position order; a failed
//! reaction is retried without repeating the ones before it; the checkpoint survives a restart,
//! so a new runner handles nothing twice.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use nova_event_schemas::user::{Registered, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::Engine;
use nova_infra::on_both_backends;
use nova_infra::store::RecordedEvent;
use nova_infra::testing::TestDb;
use nova_policies::{react_all, react_once, Policy, PolicyError};
use nova_projections::{Checkpoints, StoreTail};
use uuid::Uuid;

on_both_backends!(
    failed_reaction_is_retried_alone,
    checkpoint_survives_restart
);

/// Records the positions it handled; fails once at `fail_at`.
struct Recorder {
    handled: Mutex<Vec<i64>>,
    fail_at: Mutex<Option<i64>>,
}

impl Recorder {
    fn new(fail_at: Option<i64>) -> Self {
        Recorder {
            handled: Mutex::new(Vec::new()),
            fail_at: Mutex::new(fail_at),
        }
    }
    fn handled(&self) -> Vec<i64> {
        self.handled.lock().unwrap().clone()
    }
}

#[async_trait]
impl Policy for Recorder {
    fn name(&self) -> &str {
        "policy_test_recorder"
    }
    fn domains(&self) -> &'static [Domain] {
        &[Domain::User]
    }
    fn domain(&self) -> Domain {
        Domain::User
    }
    fn consumes(&self) -> &'static [&'static str] {
        &[]
    }
    fn issues(&self) -> &'static [&'static str] {
        &[]
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), PolicyError> {
        let mut fail_at = self.fail_at.lock().unwrap();
        if *fail_at == Some(event.position) {
            *fail_at = None;
            return Err(PolicyError::Retry("injected fault".into()));
        }
        self.handled.lock().unwrap().push(event.position);
        Ok(())
    }
}

// A fixture, not a policy: it writes the user events a policy would find in the store.
#[allow(clippy::disallowed_methods)]
async fn seed(db: &nova_infra::db::Database, n: usize) {
    for i in 0..n {
        let id = Uuid::now_v7();
        let event = UserEvent::Registered(Registered {
            user_id: id,
            username: format!("p{i}"),
            display_name: None,
            credential_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        });
        db.store
            .append(vec![(id, "user", 0, vec![event])], EventMetadata::default())
            .await
            .unwrap();
    }
}

async fn failed_reaction_is_retried_alone(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    seed(&db, 6).await;
    let policy = Recorder::new(Some(4));
    let checkpoints = Checkpoints::default();
    let source = StoreTail::new(db.store.clone());
    let err = react_once(&policy, Domain::User, &source, &db.any, &checkpoints).await;
    assert!(matches!(err, Err(PolicyError::Retry(_))));
    assert_eq!(policy.handled(), vec![1, 2, 3]);
    // The events before the failure are checkpointed; the retry starts at the failed one.
    assert_eq!(
        checkpoints
            .load(&db.any, "policy_test_recorder", Domain::User)
            .await
            .unwrap(),
        3
    );
    while react_once(&policy, Domain::User, &source, &db.any, &checkpoints)
        .await
        .unwrap()
    {}
    assert_eq!(policy.handled(), vec![1, 2, 3, 4, 5, 6]);
    db.close().await;
}

async fn checkpoint_survives_restart(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    seed(&db, 3).await;
    let first = Recorder::new(None);
    react_all(&first, &db.store, &db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(first.handled(), vec![1, 2, 3]);
    seed(&db, 2).await;
    // A new process: fresh in-memory state, the checkpoint comes from the database.
    let second = Recorder::new(None);
    react_all(&second, &db.store, &db.any, &Checkpoints::default())
        .await
        .unwrap();
    assert_eq!(second.handled(), vec![4, 5]);
    db.close().await;
}
