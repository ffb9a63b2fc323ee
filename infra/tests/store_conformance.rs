//! One conformance suite, run against both backends: every test below exists as
//! `<name>::sqlite` and `<name>::postgres`, each on its own fresh database.

use nova_infra::on_both_backends;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nova_event_schemas::user::{LoginFailed, UserEvent};
use nova_event_schemas::{Domain, EventMetadata};
use nova_infra::db::{Database, Engine};
use nova_infra::store::postgres::PgBackend;
use nova_infra::store::sqlite::SqliteBackend;
use nova_infra::store::{
    AppendRequest, Appended, Backend, EventStore, NewEvent, ReadFilter, RecordedEvent, StoreError,
    StreamAppend,
};
use nova_infra::testing::TestDb;
use uuid::Uuid;

on_both_backends!(
    append_and_read_back_with_metadata,
    wrong_expected_version_is_a_typed_conflict,
    multi_stream_append_is_all_or_nothing,
    sixteen_writers_on_one_aggregate,
    eight_writers_on_different_aggregates,
    reader_never_skips_a_late_commit,
    read_filters,
    a_command_key_is_written_once,
    a_batch_decided_on_stale_facts_is_decided_again,
    a_panicking_batch_leaves_the_appender_serving,
);

fn ev() -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        failed_at: Utc::now(),
    })
}

fn meta() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        actor_id: Some(Uuid::now_v7()),
        request_id: Some("req-1".into()),
    }
}

async fn read_all(db: &Database) -> Vec<nova_infra::store::RecordedEvent> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = db
            .store
            .read(
                Domain::User,
                &ReadFilter {
                    after_position: after,
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        out.extend(page);
    }
    out
}

async fn append_and_read_back_with_metadata(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let id = Uuid::now_v7();
    let m = meta();
    let events = vec![ev(), ev()];
    let a = db
        .store
        .append(vec![(id, "user", 0, events.clone())], m.clone())
        .await
        .unwrap();
    assert_eq!(a.versions, vec![(id, 2)]);
    let loaded = db.store.load(Domain::User, id, 0).await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[1].position, a.last_position);
    for (i, r) in loaded.iter().enumerate() {
        assert_eq!(r.version, i as i64 + 1);
        assert_eq!(r.metadata, m);
        assert_eq!(r.event_type, "login_failed");
        assert_eq!(r.schema_version, 1);
        assert_eq!(r.aggregate_type, "user");
        assert_eq!(r.event_id.get_version_num(), 7);
        assert_eq!(r.decode::<UserEvent>().unwrap(), events[i]);
    }
    assert_eq!(db.store.load(Domain::User, id, 1).await.unwrap().len(), 1);
    assert_eq!(db.store.head(Domain::User).await.unwrap(), a.last_position);
    assert_eq!(db.store.head(Domain::Post).await.unwrap(), 0);
    db.close().await;
}

async fn wrong_expected_version_is_a_typed_conflict(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let id = Uuid::now_v7();
    db.store
        .append(vec![(id, "user", 0, vec![ev()])], meta())
        .await
        .unwrap();
    let err = db
        .store
        .append(vec![(id, "user", 0, vec![ev()])], meta())
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            aggregate_id,
            expected,
            actual,
        } => {
            assert_eq!((aggregate_id, expected, actual), (id, 0, 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    db.close().await;
}

async fn multi_stream_append_is_all_or_nothing(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    db.store
        .append(vec![(b, "user", 0, vec![ev()])], meta())
        .await
        .unwrap();
    // `b` is at version 1, so this request must write neither stream.
    let err = db
        .store
        .append(
            vec![(a, "user", 0, vec![ev()]), (b, "user", 0, vec![ev()])],
            meta(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { aggregate_id, .. } if aggregate_id == b));
    assert!(db.store.load(Domain::User, a, 0).await.unwrap().is_empty());
    let ok = db
        .store
        .append(
            vec![(a, "user", 0, vec![ev()]), (b, "user", 1, vec![ev()])],
            meta(),
        )
        .await
        .unwrap();
    assert_eq!(ok.versions, vec![(a, 1), (b, 2)]);
    db.close().await;
}

/// 16 writers (split over two store instances, i.e. two appenders competing as two processes
/// would) append to the same aggregate, each reloading and retrying on conflict until it has
/// written its share. Every version must exist exactly once, and losers must have seen
/// conflicts.
async fn sixteen_writers_on_one_aggregate(engine: Engine) {
    const WRITERS: usize = 16;
    const EACH: usize = 10;
    let t = TestDb::new(engine).await;
    let db1 = t.open().await;
    let db2 = Database::connect(&t.url).await.unwrap();
    let id = Uuid::now_v7();
    let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = if w % 2 == 0 {
            db1.store.clone()
        } else {
            db2.store.clone()
        };
        let conflicts = conflicts.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut written = 0;
            while written < EACH {
                let version = store
                    .load(Domain::User, id, 0)
                    .await
                    .unwrap()
                    .last()
                    .map_or(0, |e| e.version);
                match store
                    .append(vec![(id, "user", version, vec![ev()])], meta())
                    .await
                {
                    Ok(_) => written += 1,
                    Err(StoreError::Conflict { .. }) => {
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected store error: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = db1.store.load(Domain::User, id, 0).await.unwrap();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=(WRITERS * EACH) as i64).collect::<Vec<_>>());
    assert!(
        conflicts.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "16 racing writers produced no conflict"
    );
    db2.close().await;
    db1.close().await;
}

/// 8 writers × 500 single-event appends on their own aggregates, while a reader tails the
/// domain from its checkpoint. Everything must be readable in strictly increasing position
/// order with nothing missing, and the tailing reader must have seen every event exactly once.
async fn eight_writers_on_different_aggregates(engine: Engine) {
    const WRITERS: usize = 8;
    const EACH: i64 = 500;
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = db.store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store
                    .read(
                        Domain::User,
                        &ReadFilter {
                            after_position: after,
                            limit: 300,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                if let Some(last) = page.last() {
                    after = last.position;
                }
                let empty = page.is_empty();
                seen.extend(page.into_iter().map(|e| (e.position, e.event_id)));
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let id = Uuid::now_v7();
            for v in 0..EACH {
                store
                    .append(vec![(id, "user", v, vec![ev()])], meta())
                    .await
                    .unwrap();
            }
            id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let tailed = reader.await.unwrap();

    let all = read_all(&db).await;
    assert_eq!(all.len(), WRITERS * EACH as usize);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut per_aggregate: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for e in &all {
        per_aggregate
            .entry(e.aggregate_id)
            .or_default()
            .push(e.version);
    }
    for id in &ids {
        assert_eq!(per_aggregate[id], (1..=EACH).collect::<Vec<_>>());
    }
    let stored: Vec<(i64, Uuid)> = all.iter().map(|e| (e.position, e.event_id)).collect();
    assert_eq!(
        tailed, stored,
        "the tailing reader missed or repeated events"
    );
    let unique: BTreeSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(unique.len(), all.len());
    db.close().await;
}

/// An append transaction is held open; a later append from another store instance (another
/// process) is started meanwhile. A reader must not see anything past its checkpoint until the
/// held one commits, and must then see both, the held one first.
async fn reader_never_skips_a_late_commit(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db1 = t.open().await;
    let db2 = Database::connect(&t.url).await.unwrap();
    let before = db1
        .store
        .append(vec![(Uuid::now_v7(), "user", 0, vec![ev()])], meta())
        .await
        .unwrap()
        .last_position;

    let (release, hold) = tokio::sync::oneshot::channel();
    let (written_tx, written) = tokio::sync::oneshot::channel();
    let held_id = Uuid::now_v7();
    let held = {
        let backend = db1.store.backend().clone();
        tokio::spawn(async move {
            backend
                .append_holding(
                    Domain::User,
                    AppendRequest {
                        streams: vec![StreamAppend {
                            aggregate_id: held_id,
                            aggregate_type: "user".into(),
                            expected_version: 0,
                            events: vec![NewEvent {
                                event_id: Uuid::now_v7(),
                                event_type: "login_failed".into(),
                                schema_version: 1,
                                payload: serde_json::json!({"failed_at": Utc::now()}),
                            }],
                        }],
                        metadata: meta(),
                        recorded_at: Utc::now(),
                        command_key: None,
                    },
                    written_tx,
                    hold,
                )
                .await
        })
    };
    // From here on the held transaction has written its row and holds the append lock.
    written.await.unwrap();
    let later_id = Uuid::now_v7();
    let mut later = {
        let store = db2.store.clone();
        tokio::spawn(async move {
            store
                .append(vec![(later_id, "user", 0, vec![ev()])], meta())
                .await
        })
    };
    // The later append cannot commit while the earlier one is open.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut later)
            .await
            .is_err(),
        "a later append committed while an earlier one was still open"
    );
    let visible = db1
        .store
        .read(
            Domain::User,
            &ReadFilter {
                after_position: before,
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        visible.is_empty(),
        "reader saw {visible:?} past an open append"
    );

    release.send(()).unwrap();
    let held = held.await.unwrap().unwrap();
    let later = later.await.unwrap().unwrap();
    assert!(held.last_position < later.last_position);
    let after = db1
        .store
        .read(
            Domain::User,
            &ReadFilter {
                after_position: before,
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = after.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(ids, vec![held_id, later_id]);
    db2.close().await;
    db1.close().await;
}

async fn read_filters(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    db.store
        .append(vec![(a, "user", 0, vec![ev(), ev()])], meta())
        .await
        .unwrap();
    db.store
        .append(vec![(b, "user", 0, vec![ev()])], meta())
        .await
        .unwrap();
    let only_b = db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                after_position: 0,
                limit: 10,
                aggregate_id: Some(b),
                event_type: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].aggregate_id, b);
    let none = db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                after_position: 0,
                limit: 10,
                aggregate_id: None,
                event_type: Some("registered".into()),
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let limited = db
        .store
        .read(
            Domain::User,
            &ReadFilter {
                after_position: 0,
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    db.close().await;
}

/// A command key is recorded with its events: appending under it again — even for another
/// aggregate, concurrently, in one batch — writes nothing new and answers the original.
async fn a_command_key_is_written_once(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let first = Uuid::now_v7();
    let original = db
        .store
        .append_keyed(
            vec![(first, "user", 0, vec![ev(), ev()])],
            meta(),
            Some("k-1".into()),
        )
        .await
        .unwrap();
    assert_eq!(original.replayed, None);
    // The retry generated a fresh id: still the original answers.
    let retry = db
        .store
        .append_keyed(
            vec![(Uuid::now_v7(), "user", 0, vec![ev()])],
            meta(),
            Some("k-1".into()),
        )
        .await
        .unwrap();
    assert_eq!(retry.last_position, original.last_position);
    assert_eq!(retry.versions, vec![(first, 2)]);
    assert_eq!(retry.replayed, Some(vec![(first, 1, 2)]));
    // Sixteen concurrent retries of one new key: exactly one writes.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                match store
                    .append_keyed(
                        vec![(Uuid::now_v7(), "user", 0, vec![ev()])],
                        meta(),
                        Some("k-2".into()),
                    )
                    .await
                {
                    Ok(a) => return a.replayed.is_none(),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("kept conflicting")
        }));
    }
    let mut writers = 0;
    for t in tasks {
        writers += usize::from(t.await.unwrap());
    }
    assert_eq!(writers, 1);
    // Keys are per domain and unkeyed appends are unaffected.
    db.store
        .append(vec![(Uuid::now_v7(), "user", 0, vec![ev()])], meta())
        .await
        .unwrap();
    assert_eq!(read_all(&db).await.len(), 4);
}

/// The PostgreSQL store decides a batch before it takes the domain's lock, on facts it assumes
/// (each aggregate at the version its first request expects, no command key recorded), and
/// checks them under the lock (ADR 0027). Here another process has changed both: one batch of
/// four concurrent appends must still get the answers a locked decision gives — whatever
/// their order in the batch.
async fn a_batch_decided_on_stale_facts_is_decided_again(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    stale_facts(&t, &db, &db.store).await;
    db.close().await;
}

/// PostgreSQL: the locked transaction — the path of a batch whose facts kept changing under the
/// one statement — answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_locked_transaction_answers_like_the_statement() {
    use nova_infra::store::postgres::{AppendMode, PgBackend};
    use nova_infra::store::EventStore;
    let t = TestDb::new(Engine::Postgres).await;
    let db = t.open().await;
    let pool = db.pg_pool().unwrap().clone();
    let locked = EventStore::new(Arc::new(PgBackend::with_mode(pool, AppendMode::Locked)));
    stale_facts(&t, &db, &locked).await;
    db.close().await;
}

/// Another process changes an aggregate's version and records a command key; then one batch
/// of `store` holds a fresh append, a stale one, a current one and a retry of that key.
async fn stale_facts(t: &TestDb, db: &Database, store: &nova_infra::store::EventStore) {
    let other = Database::connect(&t.url).await.unwrap();
    let (x, y, z) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    other
        .store
        .append(vec![(x, "user", 0, vec![ev()])], meta())
        .await
        .unwrap();
    let original = other
        .store
        .append_keyed(
            vec![(y, "user", 0, vec![ev()])],
            meta(),
            Some("k-other".into()),
        )
        .await
        .unwrap();

    let (fresh, stale, current, keyed) = tokio::join!(
        store.append(vec![(z, "user", 0, vec![ev()])], meta()),
        store.append(vec![(x, "user", 0, vec![ev()])], meta()),
        store.append(vec![(x, "user", 1, vec![ev()])], meta()),
        store.append_keyed(
            vec![(Uuid::now_v7(), "user", 0, vec![ev()])],
            meta(),
            Some("k-other".into()),
        ),
    );
    assert_eq!(fresh.unwrap().versions, vec![(z, 1)]);
    match stale {
        Err(StoreError::Conflict {
            aggregate_id,
            expected: 0,
            actual,
        }) => {
            assert_eq!(aggregate_id, x);
            assert!(actual == 1 || actual == 2, "actual version {actual}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(current.unwrap().versions, vec![(x, 2)]);
    let keyed = keyed.unwrap();
    assert_eq!(keyed.replayed, Some(vec![(y, 1, 1)]));
    assert_eq!(keyed.last_position, original.last_position);

    let all = read_all(db).await;
    assert_eq!(all.len(), 4, "x twice, y and z once");
    let versions_of_x: Vec<i64> = all
        .iter()
        .filter(|e| e.aggregate_id == x)
        .map(|e| e.version)
        .collect();
    assert_eq!(versions_of_x, vec![1, 2]);
    other.close().await;
}

/// A backend whose first `append_batch` panics; everything else is the real backend's.
struct PanicsOnce {
    inner: Arc<dyn Backend>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Backend for PanicsOnce {
    async fn append_batch(
        &self,
        domain: Domain,
        batch: &[AppendRequest],
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("injected: a bug in a batch's commit");
        }
        self.inner.append_batch(domain, batch).await
    }
    async fn load(
        &self,
        domain: Domain,
        aggregate_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.load(domain, aggregate_id, after_version).await
    }
    async fn read(
        &self,
        domain: Domain,
        filter: &ReadFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read(domain, filter).await
    }
    async fn head(&self, domain: Domain) -> Result<i64, StoreError> {
        self.inner.head(domain).await
    }
    async fn recorded(
        &self,
        domain: Domain,
        command_key: &str,
    ) -> Result<Option<Appended>, StoreError> {
        self.inner.recorded(domain, command_key).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn rewrite_payload(
        &self,
        domain: Domain,
        position: i64,
        from_version: i32,
        to_version: i32,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.inner
            .rewrite_payload(domain, position, from_version, to_version, payload)
            .await
    }
    async fn append_holding(
        &self,
        domain: Domain,
        request: AppendRequest,
        written: tokio::sync::oneshot::Sender<()>,
        release: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Appended, StoreError> {
        self.inner
            .append_holding(domain, request, written, release)
            .await
    }
}

/// A panic while a batch commits (a bug, not an input) answers that batch's callers
/// `Unavailable` and ends neither the domain's appender nor the process: later appends of the
/// domain are served as before.
async fn a_panicking_batch_leaves_the_appender_serving(engine: Engine) {
    let t = TestDb::new(engine).await;
    let db = t.open().await;
    let inner: Arc<dyn Backend> = match (db.pg_pool(), db.sqlite_pool()) {
        (Some(pg), _) => Arc::new(PgBackend::new(pg.clone())),
        (_, Some(lite)) => Arc::new(SqliteBackend::new(lite.clone())),
        _ => unreachable!("one engine or the other"),
    };
    let store = EventStore::new(Arc::new(PanicsOnce {
        inner,
        armed: true.into(),
    }));
    let id = Uuid::now_v7();
    let first = store
        .append(vec![(id, "user", 0, vec![ev()])], meta())
        .await;
    assert!(
        matches!(first, Err(StoreError::Unavailable(_))),
        "{first:?}"
    );
    for version in 0..3 {
        let appended = store
            .append(vec![(id, "user", version, vec![ev()])], meta())
            .await
            .unwrap();
        assert_eq!(appended.last_position, version + 1);
    }
    assert_eq!(read_all(&db).await.len(), 3);
    db.close().await;
}
