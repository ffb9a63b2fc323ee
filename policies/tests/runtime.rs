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
    checkpoint_survives_restart,
    a_poison_event_is_parked_and_retried,
);

/// Records the positions it handled; fails once at `fail_at`, and declares `poison_at`
/// impossible to handle while it is set.
struct Recorder {
    handled: Mutex<Vec<i64>>,
    fail_at: Mutex<Option<i64>>,
    poison_at: Mutex<Option<i64>>,
}

impl Recorder {
    fn new(fail_at: Option<i64>) -> Self {
        Recorder {
            handled: Mutex::new(Vec::new()),
            fail_at: Mutex::new(fail_at),
            poison_at: Mutex::new(None),
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
        if *self.poison_at.lock().unwrap() == Some(event.position) {
            return Err(PolicyError::Poison("injected poison".into()));
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

/// A poison event is parked with the checkpoint past it — the events after it are handled —,
/// counted in the status; retried once the policy can handle it, it is handled and removed.
/// A passing fault is never parked.
async fn a_poison_event_is_parked_and_retried(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    seed(&db, 6).await;
    let policy = Recorder::new(Some(5));
    *policy.poison_at.lock().unwrap() = Some(3);
    let checkpoints = Checkpoints::default();
    let source = StoreTail::new(db.store.clone());
    // The passing fault at 5 stops the batch there (after parking 3); the retry goes on.
    let err = react_once(&policy, Domain::User, &source, &db.any, &checkpoints).await;
    assert!(matches!(err, Err(PolicyError::Retry(_))), "{err:?}");
    react_all(&policy, &db.store, &db.any, &checkpoints)
        .await
        .unwrap();
    assert_eq!(policy.handled(), vec![1, 2, 4, 5, 6]);
    assert_eq!(
        checkpoints
            .load(&db.any, "policy_test_recorder", Domain::User)
            .await
            .unwrap(),
        6
    );
    let parked: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT position, error, attempts FROM dead_letters WHERE consumer = 'policy_test_recorder'",
    )
    .fetch_all(&db.any)
    .await
    .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, 3);
    assert!(parked[0].1.contains("injected poison"), "{parked:?}");
    let status = |db: nova_infra::db::Database| async move {
        nova_projections::status::status(
            &db.store,
            &db.any,
            &[("policy_test_recorder", &[Domain::User])],
        )
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.projection == "policy_test_recorder")
        .unwrap()
    };
    let row = status(db.clone()).await;
    assert_eq!(
        (row.kind, row.dead_letters, row.lag_events),
        ("policy", 1, 0)
    );

    // Still poisonous: kept, one more attempt.
    let again = nova_policies::retry_dead_letters(&policy, &db.store, &db.any)
        .await
        .unwrap();
    assert_eq!((again.handled, again.failed), (0, 1));
    // Cured: handled and removed.
    *policy.poison_at.lock().unwrap() = None;
    let cured = nova_policies::retry_dead_letters(&policy, &db.store, &db.any)
        .await
        .unwrap();
    assert_eq!((cured.handled, cured.failed), (1, 0));
    assert_eq!(policy.handled(), vec![1, 2, 4, 5, 6, 3]);
    assert_eq!(status(db.clone()).await.dead_letters, 0);
    db.close().await;
}
