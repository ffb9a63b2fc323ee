//! The projector runtime on both engines: checkpoint committed with the writes, redelivered
//! events ignored, a failed batch rolled back whole and retried, and the user directory
//! identical whether built live (while events arrive) or from scratch afterwards.

use nova_infra::on_both_backends;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use nova_event_schemas::user::{Deactivated, ProfileUpdated, Registered, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::store::{EventStore, RecordedEvent, StoreError};
use nova_infra::testing::TestDb;
use nova_projections::user_directory::UserDirectory;
use nova_projections::{
    catch_up, project_once, run_projector, Checkpoints, EventSource, Projection, ProjectionError,
    StoreTail,
};
use sqlx::{Any, Transaction};
use std::time::Duration;
use uuid::Uuid;

on_both_backends!(
    redelivered_events_are_not_applied_twice,
    failed_batch_rolls_back_with_its_checkpoint,
    live_directory_equals_rebuild,
    two_projector_processes_apply_each_event_once,
    interrupted_rebuild_resumes_and_swaps,
);

/// Counts applications per event in its own table; can be told to fail on one position.
struct Counter {
    fail_at: AtomicUsize,
}

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        "test_counter"
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
            "INSERT INTO test_applied (position, times) VALUES ($1, 1) \
             ON CONFLICT (position) DO UPDATE SET times = test_applied.times + 1",
        )
        .bind(event.position)
        .execute(&mut **tx)
        .await?;
        if event.position as usize == self.fail_at.load(Ordering::SeqCst) {
            return Err(ProjectionError::Source(StoreError::Unavailable(
                "injected fault".into(),
            )));
        }
        Ok(())
    }
}

/// A source that always re-sends everything from the start of the domain, as a redelivering
/// broker might.
struct Redelivering(EventStore);

#[async_trait]
impl EventSource for Redelivering {
    async fn next_batch(
        &self,
        domain: Domain,
        _after: i64,
        max: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        StoreTail::new(self.0.clone())
            .next_batch(domain, 0, max)
            .await
    }
    async fn wait_for_more(&self, _: Domain, _: i64) {}
}

async fn setup(engine: Engine) -> (TestDb, Database) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    sqlx::query("CREATE TABLE test_applied (position BIGINT PRIMARY KEY, times BIGINT NOT NULL)")
        .execute(&db.any)
        .await
        .unwrap();
    (t, db)
}

async fn seed(store: &EventStore, users: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..users {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let mut events = vec![UserEvent::Registered(Registered {
            user_id: id,
            username: format!("user_{i}"),
            display_name: None,
            credential_id: Uuid::now_v7(),
            registered_at: now,
        })];
        events.push(UserEvent::ProfileUpdated(ProfileUpdated {
            display_name: Some(format!("User {i}")),
            status: (i % 2 == 0).then(|| "hi".to_owned()),
            profile_picture_url: None,
            updated_at: now,
        }));
        if i % 3 == 0 {
            events.push(UserEvent::Deactivated(Deactivated {
                deactivated_at: now,
            }));
        }
        store
            .append(vec![(id, "user", 0, events)], EventMetadata::default())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn applied(db: &Database) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT position, times FROM test_applied ORDER BY position")
        .fetch_all(&db.any)
        .await
        .unwrap()
}

async fn redelivered_events_are_not_applied_twice(engine: Engine) {
    let (_t, db) = setup(engine).await;
    seed(&db.store, 5).await;
    let head = db.store.head(Domain::User).await.unwrap();
    let counter = Counter {
        fail_at: AtomicUsize::new(usize::MAX),
    };
    let source = Redelivering(db.store.clone());
    let checkpoints = Checkpoints::default();
    for _ in 0..3 {
        project_once(&counter, Domain::User, &source, &db.any, &checkpoints)
            .await
            .unwrap();
    }
    let rows = applied(&db).await;
    assert_eq!(rows.len() as i64, head);
    assert!(rows.iter().all(|(_, times)| *times == 1), "{rows:?}");
    assert_eq!(checkpoints.cached("test_counter", Domain::User), head);
    db.close().await;
}

async fn failed_batch_rolls_back_with_its_checkpoint(engine: Engine) {
    let (_t, db) = setup(engine).await;
    seed(&db.store, 4).await;
    let head = db.store.head(Domain::User).await.unwrap();
    let counter = Counter {
        fail_at: AtomicUsize::new(5),
    };
    let source = StoreTail::new(db.store.clone());
    let checkpoints = Checkpoints::default();
    let err = project_once(&counter, Domain::User, &source, &db.any, &checkpoints).await;
    assert!(err.is_err());
    // Nothing of the failed batch is visible, and the checkpoint did not move.
    assert!(applied(&db).await.is_empty());
    assert_eq!(
        checkpoints
            .load(&db.any, "test_counter", Domain::User)
            .await
            .unwrap(),
        0
    );
    counter.fail_at.store(usize::MAX, Ordering::SeqCst);
    project_once(&counter, Domain::User, &source, &db.any, &checkpoints)
        .await
        .unwrap();
    let rows = applied(&db).await;
    assert_eq!(rows.len() as i64, head);
    assert!(rows.iter().all(|(_, times)| *times == 1));
    db.close().await;
}

type DirRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
    String,
    i64,
);

async fn directory(db: &Database) -> Vec<DirRow> {
    sqlx::query_as(
        "SELECT user_id, username, display_name, status, profile_picture_url, active, \
                created_at, updated_at, last_version \
         FROM user_directory ORDER BY user_id",
    )
    .fetch_all(&db.any)
    .await
    .unwrap()
}

/// A live user directory projector tailing `db`'s store; `stop` ends it.
fn live_directory(
    db: &Database,
    checkpoints: &Checkpoints,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(run_projector(
        Arc::new(UserDirectory::default()),
        Domain::User,
        Arc::new(StoreTail::new(db.store.clone())),
        db.any.clone(),
        checkpoints.clone(),
        stop_rx,
    ));
    (live, stop)
}

async fn live_directory_equals_rebuild(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let checkpoints = Checkpoints::default();
    let (live, stop) = live_directory(&db, &checkpoints);
    // Events arrive while the projector runs.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move { seed(&store, 10).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let head = db.store.head(Domain::User).await.unwrap();
    let caught = checkpoints
        .wait_for(
            &db.any,
            "user_directory",
            Domain::User,
            head,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(caught, nova_projections::checkpoint::Caught::Up);
    stop.send(true).unwrap();
    live.await.unwrap();
    let live_rows = directory(&db).await;
    assert_eq!(live_rows.len(), 40);
    assert_eq!(live_rows.iter().filter(|r| r.5 == 0).count(), 16);

    // From scratch: wipe the read model and its checkpoint, replay the store.
    sqlx::query("DELETE FROM user_directory")
        .execute(&db.any)
        .await
        .unwrap();
    sqlx::query("DELETE FROM projection_checkpoints")
        .execute(&db.any)
        .await
        .unwrap();
    catch_up(
        &UserDirectory::default(),
        &db.store,
        &db.any,
        &Checkpoints::default(),
    )
    .await
    .unwrap();
    assert_eq!(directory(&db).await, live_rows);
    db.close().await;
}

/// Two processes (own pools, own checkpoint caches) run the same projection at once; the
/// checkpoint row lock makes each event count exactly once.
async fn two_projector_processes_apply_each_event_once(engine: Engine) {
    let (t, db) = setup(engine).await;
    seed(&db.store, 30).await;
    let head = db.store.head(Domain::User).await.unwrap();
    let other = Database::connect(&t.url).await.unwrap();
    let run = |db: Database| {
        tokio::spawn(async move {
            let counter = Counter {
                fail_at: AtomicUsize::new(usize::MAX),
            };
            // Small batches so the two interleave.
            let source = Redelivering(db.store.clone());
            let checkpoints = Checkpoints::default();
            let mut errors = 0;
            loop {
                match project_once(&counter, Domain::User, &source, &db.any, &checkpoints).await {
                    Ok(_) => {}
                    // Lock contention (SQLite busy) is retried like any projector failure.
                    Err(_) => errors += 1,
                }
                let done = checkpoints
                    .load(&db.any, "test_counter", Domain::User)
                    .await
                    .unwrap();
                if done >= head || errors > 1000 {
                    return;
                }
            }
        })
    };
    let (a, b) = (run(db.clone()), run(other.clone()));
    a.await.unwrap();
    b.await.unwrap();
    let rows = applied(&db).await;
    assert_eq!(rows.len() as i64, head);
    assert!(rows.iter().all(|(_, times)| *times == 1), "{rows:?}");
    other.close().await;
    db.close().await;
}

/// A rebuild killed after its first batch leaves its copy behind; the next run resumes it
/// and swaps in a directory equal to the live one.
async fn interrupted_rebuild_resumes_and_swaps(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    seed(&db.store, 250).await;
    let checkpoints = Checkpoints::default();
    catch_up(&UserDirectory::default(), &db.store, &db.any, &checkpoints)
        .await
        .unwrap();
    let live = directory(&db).await;

    let first = {
        let (store, pool) = (db.store.clone(), db.any.clone());
        tokio::spawn(async move {
            nova_projections::rebuild::rebuild(
                Arc::new(UserDirectory::default()),
                &store,
                &pool,
                &Checkpoints::default(),
                |_| panic!("interrupted after the first batch"),
            )
            .await
        })
    };
    assert!(first.await.is_err());
    // The killed rebuild's lease is still held; it expires as a dead holder's does.
    let busy = nova_projections::rebuild::rebuild(
        Arc::new(UserDirectory::default()),
        &db.store,
        &db.any,
        &checkpoints,
        |_| {},
    )
    .await;
    assert!(
        matches!(busy, Err(nova_projections::rebuild::RebuildError::Busy(_))),
        "{busy:?}"
    );
    sqlx::query("UPDATE rebuild_leases SET lease_until = 0")
        .execute(&db.any)
        .await
        .unwrap();
    let pending = nova_projections::rebuild::pending(&UserDirectory::default(), &db.any)
        .await
        .unwrap()
        .expect("the interrupted copy is still there");
    assert!(pending[0].1 > 0);

    let report = nova_projections::rebuild::rebuild(
        Arc::new(UserDirectory::default()),
        &db.store,
        &db.any,
        &checkpoints,
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.resumed);
    let head = db.store.head(Domain::User).await.unwrap();
    assert_eq!(report.positions, vec![(Domain::User, head)]);
    assert_eq!(directory(&db).await, live);
    assert!(
        nova_projections::rebuild::pending(&UserDirectory::default(), &db.any)
            .await
            .unwrap()
            .is_none()
    );
    // And it can be rebuilt again from scratch.
    let again = nova_projections::rebuild::rebuild(
        Arc::new(UserDirectory::default()),
        &db.store,
        &db.any,
        &checkpoints,
        |_| {},
    )
    .await
    .unwrap();
    assert!(!again.resumed);
    assert_eq!(directory(&db).await, live);
    db.close().await;
}

/// A live projector that has written a lot refreshes its tables' planner statistics itself
/// (PostgreSQL), instead of serving reads with an empty table's statistics until autovacuum.
#[tokio::test]
async fn a_growing_projection_refreshes_its_statistics() {
    let t = TestDb::new(Engine::Postgres).await;
    let db = t.open().await;
    let checkpoints = Checkpoints::default();
    let (live, stop) = live_directory(&db, &checkpoints);
    let analyzed = || async {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_user_tables \
             WHERE relname = 'user_directory' AND last_analyze IS NOT NULL",
        )
        .fetch_one(&db.any)
        .await
        .unwrap();
        n == 1
    };
    // A few hundred positions: not yet.
    seed(&db.store, 100).await;
    let head = db.store.head(Domain::User).await.unwrap();
    checkpoints
        .wait_for(
            &db.any,
            "user_directory",
            Domain::User,
            head,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(!analyzed().await, "{head} positions are not a lot");
    // Past the first thousand: the projector analyzes.
    seed(&db.store, 400).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !analyzed().await {
        assert!(std::time::Instant::now() < deadline, "never analyzed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    live.await.unwrap();
    db.close().await;
}
