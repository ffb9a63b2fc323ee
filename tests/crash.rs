//! Kill -9: the real `nova serve` binary on PostgreSQL and a (private) nats-server is killed
//! with SIGKILL three times at random moments under a load of concurrent commands and
//! restarted. Afterwards every command that got a 2xx has its events in the store exactly
//! once, and the read model (fed through the relay and JetStream) equals a from-scratch
//! rebuild.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nova_event_schemas::Domain;
use nova_infra::db::{Database, Engine};
use nova_infra::store::ReadFilter;
use nova_infra::testing::{PrivateNats, TestDb};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

const SECRET: &str = "crash-test-secret-crash-test-secret-0123";

fn start(db_url: &str, nats_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nova"))
        .arg("serve")
        .env("NOVA_DATABASE_URL", db_url)
        .env("NOVA_NATS_URL", nats_url)
        .env("NOVA_JWT_SECRET", SECRET)
        .env("NOVA_LISTEN", format!("127.0.0.1:{port}"))
        // Load from one address: the rate limits (ADR 0022) are not under test here.
        .env("NOVA_RATE_LIMIT_PER_MINUTE", "0")
        .env("NOVA_RATE_LIMIT_ANONYMOUS_PER_MINUTE", "0")
        .env("NOVA_ARGON2_MEMORY_KIB", "1024")
        .env("NOVA_ARGON2_ITERATIONS", "1")
        .env("NOVA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nova starts")
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nova did not come up");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let testdb = TestDb::postgres().await;
    let nats = PrivateNats::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut child = start(&testdb.url, &nats.url(), port);
    wait_healthy(&http, &base).await;

    let acknowledged: Arc<Mutex<Vec<(Uuid, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (http, base, acknowledged, stop) = (
            http.clone(),
            base.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let username = format!("c{c}_{n}");
                n += 1;
                let res = http
                    .post(format!("{base}/v1/users"))
                    .json(&json!({"username": username, "password": "crash test pass"}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(id) = body["user_id"].as_str().and_then(|s| s.parse().ok()) {
                            acknowledged.lock().unwrap().push((id, username));
                        }
                    }
                    // Refused connections and 503s while the process is down or starting.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }

    let mut rng = rand::rngs::StdRng::from_entropy();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(400..1200))).await;
        child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on unix
        child.wait().unwrap();
        child = start(&testdb.url, &nats.url(), port);
        wait_healthy(&http, &base).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "too little load: {}",
        acknowledged.len()
    );
    eprintln!(
        "{} registrations acknowledged across 3 kills",
        acknowledged.len()
    );

    let db = Database::connect(&testdb.url).await.unwrap();
    // Read events as the server does: personal fields opened with the user domain's keys.
    nova::app::with_data_keys(&db);
    // Every acknowledged registration is stored exactly once.
    let registered: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM user_events WHERE event_type = 'registered'",
    )
    .fetch_all(db.pg_pool().unwrap())
    .await
    .unwrap();
    let mut per_user: HashMap<Uuid, usize> = HashMap::new();
    let mut names = HashSet::new();
    for (id, payload) in &registered {
        *per_user.entry(*id).or_default() += 1;
        assert!(
            names.insert(payload["username"].as_str().unwrap().to_owned()),
            "a username was registered twice"
        );
    }
    for (id, username) in &acknowledged {
        assert_eq!(
            per_user.get(id),
            Some(&1),
            "{username} ({id}) not stored exactly once"
        );
    }
    // Per-aggregate versions are contiguous: nothing lost in the middle, nothing doubled.
    let gaps: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, COUNT(*), MAX(version) FROM user_events \
         GROUP BY aggregate_id HAVING COUNT(*) <> MAX(version)",
    )
    .fetch_all(db.pg_pool().unwrap())
    .await
    .unwrap();
    assert!(gaps.is_empty(), "{gaps:?}");

    // The read model catches up through the relay and JetStream...
    let head = db.store.head(Domain::User).await.unwrap();
    let checkpoints = nova_projections::Checkpoints::default();
    let caught = checkpoints
        .wait_for(
            &db.any,
            "user_directory",
            Domain::User,
            head,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(caught, nova_projections::checkpoint::Caught::Up);
    let relayed = nova_infra::relay::Relay::checkpoint(&db.any, Domain::User)
        .await
        .unwrap();
    // (the relay publishes asynchronously; give it the same bound)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut relayed = relayed;
    while relayed < head {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay stuck at {relayed} < {head}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        relayed = nova_infra::relay::Relay::checkpoint(&db.any, Domain::User)
            .await
            .unwrap();
    }
    // Stop the server cleanly, then compare with a from-scratch rebuild.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let live = common::directory(&db).await;
    for (id, _) in &acknowledged {
        assert!(
            live.iter().any(|r| r.0 == id.to_string()),
            "{id} missing from the directory"
        );
    }
    assert_eq!(common::replayed_directory(&db).await, live);
    db.close().await;
}

/// API, relay and projector as three processes sharing one PostgreSQL and one NATS: a
/// registration through the API process becomes visible through the projector process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_relay_and_projector_run_as_separate_processes() {
    let testdb = TestDb::postgres().await;
    let nats = PrivateNats::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(args)
            .env("NOVA_DATABASE_URL", &testdb.url)
            .env("NOVA_NATS_URL", nats.url())
            .env("NOVA_JWT_SECRET", SECRET)
            .env("NOVA_LISTEN", format!("127.0.0.1:{port}"))
            // Load from one address: the rate limits (ADR 0022) are not under test here.
            .env("NOVA_RATE_LIMIT_PER_MINUTE", "0")
            .env("NOVA_RATE_LIMIT_ANONYMOUS_PER_MINUTE", "0")
            .env("NOVA_ARGON2_MEMORY_KIB", "1024")
            .env("NOVA_ARGON2_ITERATIONS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nova starts")
    };
    let mut api = spawn(&["serve", "--api-only"]);
    wait_healthy(&http, &base).await;
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "split_user", "password": "split test pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let pos = res.headers()["x-nova-position"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = res.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // No projector runs yet: the read cannot catch up (bounded wait, then 503).
    let res = http
        .get(format!("{base}/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);

    let mut relay = spawn(&["relay"]);
    let mut projector = spawn(&["project", "user_directory"]);
    let res = http
        .get(format!("{base}/v1/users/{id}"))
        .header("X-Nova-Min-Position", &pos)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let db = Database::connect(&testdb.url).await.unwrap();
    // Read events as the server does: personal fields opened with the user domain's keys.
    nova::app::with_data_keys(&db);
    // The relay process (not a fallback) delivered it: its checkpoint moves past the event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while nova_infra::relay::Relay::checkpoint(&db.any, Domain::User)
        .await
        .unwrap()
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay published nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, child) in [
        ("api", &mut api),
        ("relay", &mut relay),
        ("projector", &mut projector),
    ] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "{name} exited with {status:?}");
    }
    db.close().await;
}

common::on_both_backends!(keyed_retries_after_kill_dash_nine_run_once);

/// 400 keyed `POST /v1/posts` from 32 concurrent clients, kill -9 once 100 were acknowledged,
/// restart, let the unanswered claims become stale (takeover after 500 ms here instead of
/// 60 s), retry every key: every key produced exactly one post, and a retry of an
/// acknowledged create answers its post id.
async fn keyed_retries_after_kill_dash_nine_run_once(engine: Engine) {
    const KEYS: usize = 400;
    let testdb = TestDb::new(engine).await;
    let data_dir = std::env::temp_dir().join(format!("nova-keyed-{}", Uuid::new_v4().simple()));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_nova"))
            .arg("serve")
            .env("NOVA_DATABASE_URL", &testdb.url)
            .env("NOVA_DATA_DIR", &data_dir)
            .env("NOVA_JWT_SECRET", SECRET)
            .env("NOVA_LISTEN", format!("127.0.0.1:{port}"))
            // Load from one address: the rate limits (ADR 0022) are not under test here.
            .env("NOVA_RATE_LIMIT_PER_MINUTE", "0")
            .env("NOVA_RATE_LIMIT_ANONYMOUS_PER_MINUTE", "0")
            .env("NOVA_ARGON2_MEMORY_KIB", "1024")
            .env("NOVA_ARGON2_ITERATIONS", "1")
            .env("NOVA_IDEMPOTENCY_TAKEOVER_MS", "500")
            .env("NOVA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nova starts")
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut child = start();
    wait_healthy(&http, &base).await;
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "keyed_author", "password": "crash test pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let res = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"username": "keyed_author", "password": "crash test pass"}))
        .send()
        .await
        .unwrap();
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        move |k: usize| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            async move {
                let res = http
                    .post(format!("{base}/v1/posts"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("key-{k}"))
                    .json(&json!({"content": format!("post of key-{k}")}))
                    .send()
                    .await;
                match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        Some((status, body["post_id"].as_str().map(str::to_owned)))
                    }
                    Err(_) => None,
                }
            }
        }
    };

    // Under load: 32 clients sending creates back to back; the process is killed once a
    // quarter of them were acknowledged, with about 32 in flight.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acked: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (next, acked, create) = (next.clone(), acked.clone(), create.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= KEYS {
                    return;
                }
                match create(k).await {
                    Some((201, Some(id))) => {
                        acked.lock().unwrap().insert(k, id);
                    }
                    Some(_) => {}
                    // The process is gone: stop sending.
                    None => return,
                }
            }
        }));
    }
    let started = tokio::time::Instant::now();
    while acked.lock().unwrap().len() < KEYS / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too little load"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let first: HashMap<usize, String> = acked.lock().unwrap().clone();

    child = start();
    wait_healthy(&http, &base).await;
    let db = Database::connect(&testdb.url).await.unwrap();
    // Read events as the server does: personal fields opened with the user domain's keys.
    nova::app::with_data_keys(&db);
    let (unanswered,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM idempotency_keys WHERE status IS NULL")
            .fetch_one(&db.any)
            .await
            .unwrap();
    let created_before = created_posts(&db).await;
    // Claims whose events committed but whose answer was lost: the case that ran twice.
    let lost_answers = created_before
        .keys()
        .filter(|k| !first.contains_key(k))
        .count();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let retries: Vec<_> = (0..KEYS).map(|k| tokio::spawn(create(k))).collect();
    for (k, task) in retries.into_iter().enumerate() {
        let (status, id) = task.await.unwrap().expect("the retry is answered");
        assert_eq!(status, 201, "retry of key-{k}");
        if let Some(original) = first.get(&k) {
            assert_eq!(
                id.as_ref(),
                Some(original),
                "retry of key-{k} answered another post"
            );
        }
    }
    let created = created_posts(&db).await;
    eprintln!(
        "{engine:?}: {} of {KEYS} creates acknowledged before kill -9, {} committed, \
         {unanswered} claims left unanswered, {lost_answers} committed without an answer; \
         after retrying every key: {} posts",
        first.len(),
        created_before.len(),
        created.values().sum::<usize>()
    );
    for k in 0..KEYS {
        assert_eq!(
            created.get(&k),
            Some(&1),
            "key-{k} did not produce exactly one post"
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    db.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Number of `post.created` events per key (from the content `post of key-<k>`).
async fn created_posts(db: &Database) -> HashMap<usize, usize> {
    let mut out = HashMap::new();
    let mut after = 0;
    loop {
        let page = db
            .store
            .read(
                Domain::Post,
                &ReadFilter {
                    after_position: after,
                    limit: 1000,
                    event_type: Some("created".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            let key = e.payload["content"]
                .as_str()
                .and_then(|c| c.strip_prefix("post of key-"))
                .and_then(|k| k.parse::<usize>().ok());
            if let Some(k) = key {
                *out.entry(k).or_default() += 1;
            }
        }
    }
    out
}

/// Relay failover: two `nova relay` processes on one PostgreSQL; the one that publishes is
/// killed with SIGKILL and the standby publishes the next event within a second or so (the
/// leader's session lock goes with its connection; the old design waited out a 10 s lease).
/// The figure is printed; the assertion only separates the two designs with room for a loaded
/// machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_failover_after_kill_dash_nine() {
    use nova_event_schemas::post::{PostCreated, PostEvent};
    use nova_event_schemas::EventMetadata;
    use std::time::Instant;

    let testdb = TestDb::postgres().await;
    let nats = PrivateNats::start();
    let db = Database::connect(&testdb.url).await.unwrap();
    // Read events as the server does: personal fields opened with the user domain's keys.
    nova::app::with_data_keys(&db);
    db.migrate().await.unwrap();
    let relay = || {
        Command::new(env!("CARGO_BIN_EXE_nova"))
            .arg("relay")
            .env("NOVA_DATABASE_URL", &testdb.url)
            .env("NOVA_NATS_URL", nats.url())
            .env("NOVA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nova relay starts")
    };
    let append = |n: usize| {
        let db = db.clone();
        async move {
            let post_id = Uuid::now_v7();
            db.store
                .append(
                    vec![(
                        post_id,
                        "post",
                        0,
                        vec![PostEvent::Created(PostCreated {
                            post_id,
                            author_id: Uuid::now_v7(),
                            content: format!("failover {n}"),
                            media_urls: vec![],
                            mentions: vec![],
                            created_at: chrono::Utc::now(),
                        })],
                    )],
                    EventMetadata::default(),
                )
                .await
                .unwrap()
                .last_position
        }
    };
    let owner = |db: Database| async move {
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT owner, position FROM relay_checkpoints WHERE domain = 'post'")
                .fetch_optional(&db.any)
                .await
                .unwrap();
        row.unwrap_or((None, 0))
    };
    let published = |position: i64, within: Duration| {
        let db = db.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                let (_, at) = owner(db.clone()).await;
                if at >= position {
                    return Instant::now();
                }
                assert!(
                    Instant::now() < deadline,
                    "position {position} never published"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    let mut first = relay();
    let pos = append(0).await;
    published(pos, Duration::from_secs(30)).await;
    let (leader, _) = owner(db.clone()).await;
    // The standby starts after the leader holds the lock; it asks for it in a loop.
    let mut standby = relay();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pos = append(1).await;
    published(pos, Duration::from_secs(10)).await;
    assert_eq!(
        owner(db.clone()).await.0,
        leader,
        "the standby stayed standby"
    );

    first.kill().expect("SIGKILL");
    let killed = Instant::now();
    first.wait().unwrap();
    let pos = append(2).await;
    let at = published(pos, Duration::from_secs(30)).await;
    let failover = at - killed;
    println!("relay failover: kill -9 to next publish {failover:?}");
    assert_ne!(owner(db.clone()).await.0, leader, "the standby took over");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    standby.kill().expect("SIGKILL");
    standby.wait().unwrap();
    db.close().await;
}
