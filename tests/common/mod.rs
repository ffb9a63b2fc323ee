//! Black-box test support: the real application on port 0 with its own fresh database, driven
//! over real HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;

use nova::app::{Application, Settings};
use nova_commands::user::credentials::Argon2Config;
use nova_infra::db::{Database, Engine};
#[allow(unused_imports)]
pub use nova_infra::on_both_backends;
use nova_infra::testing::TestDb;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const PASSWORD: &str = "correct horse battery";
/// Opens `/metrics` on the API listener of test applications.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

pub struct TestApp {
    pub addr: SocketAddr,
    /// The separate metrics listener, when the test configured one.
    pub metrics_addr: Option<SocketAddr>,
    pub db_url: String,
    pub client: Client,
    pub db: Database,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// The search index directory, removed with the app.
    search_dir: std::path::PathBuf,
    // Dropped last: removes the database (`None` for an app beside another's database).
    _testdb: Option<TestDb>,
}

/// Cheap argon2 parameters: tests check behaviour, not hashing cost.
pub fn cheap_argon2() -> Argon2Config {
    Argon2Config {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        ..Argon2Config::default()
    }
}

pub async fn spawn(engine: Engine) -> TestApp {
    spawn_with(engine, cheap_argon2(), 64 * 1024).await
}

pub async fn spawn_with(engine: Engine, argon2: Argon2Config, max_body_bytes: usize) -> TestApp {
    spawn_full(engine, argon2, max_body_bytes, None).await
}

/// With NATS: the relay feeds JetStream and projectors consume it.
pub async fn spawn_with_nats(engine: Engine, nats_url: String) -> TestApp {
    spawn_full(engine, cheap_argon2(), 64 * 1024, Some(nats_url)).await
}

pub async fn spawn_full(
    engine: Engine,
    argon2: Argon2Config,
    max_body_bytes: usize,
    nats_url: Option<String>,
) -> TestApp {
    spawn_ttl(
        engine,
        argon2,
        max_body_bytes,
        nats_url,
        chrono::Duration::days(30),
    )
    .await
}

pub async fn spawn_ttl(
    engine: Engine,
    argon2: Argon2Config,
    max_body_bytes: usize,
    nats_url: Option<String>,
    refresh_ttl: chrono::Duration,
) -> TestApp {
    spawn_configured(engine, |s| {
        s.argon2 = argon2;
        s.max_body_bytes = max_body_bytes;
        s.nats_url = nats_url;
        s.refresh_ttl = refresh_ttl;
    })
    .await
}

/// The application with the test defaults, adjusted by `configure`.
pub async fn spawn_configured(engine: Engine, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let testdb = TestDb::new(engine).await;
    let mut settings = test_settings(&testdb.url);
    configure(&mut settings);
    start(settings, testdb.url.clone(), Some(testdb)).await
}

/// A second application on `other`'s database — API only (its relays and projectors are the
/// first one's) — with the test defaults, adjusted by `configure`.
pub async fn spawn_beside(other: &TestApp, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(&other.db_url);
    settings.components = nova::app::Components {
        api: true,
        relay: false,
        projections: Some(Vec::new()),
    };
    configure(&mut settings);
    start(settings, other.db_url.clone(), None).await
}

/// The settings every test application starts from.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: database_url.to_owned(),
        search_dir: std::env::temp_dir().join(format!("nova-search-{}", uuid::Uuid::new_v4())),
        search_consumer: nova_projections::search::NAME.to_owned(),
        nats_url: None,
        nats_names: nova_infra::nats::Names::default(),
        components: nova::app::Components::all(),
        listen: "127.0.0.1:0".into(),
        jwt_secret: SecretString::from(SECRET),
        argon2: cheap_argon2(),
        max_body_bytes: 64 * 1024,
        access_ttl: chrono::Duration::minutes(15),
        refresh_ttl: chrono::Duration::days(30),
        metrics: nova::app::MetricsAccess {
            listen: None,
            token: Some(SecretString::from(METRICS_TOKEN)),
        },
        idempotency_takeover: nova::http::idempotency::DEFAULT_TAKEOVER,
        // Limits on, but far above what any test sends; tests/rate_limits.rs sets its own.
        rate_limits: nova::app::RateLimitSettings {
            user: Some(nova_infra::limits::Quota::per_minute(1_000_000, 100_000)),
            anonymous: Some(nova_infra::limits::Quota::per_minute(1_000_000, 100_000)),
            ..Default::default()
        },
        ingest_secret: None,
        clock: nova_infra::clock::Clock::system(),
    }
}

async fn start(settings: Settings, db_url: String, testdb: Option<TestDb>) -> TestApp {
    let search_dir = settings.search_dir.clone();
    let app = Application::build(settings)
        .await
        .expect("application starts");
    let addr = app.local_addr().expect("API bound");
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    let db = Database::connect(&db_url).await.expect("test db");
    nova::app::with_data_keys(&db);
    TestApp {
        addr,
        metrics_addr,
        db_url,
        client: Client::new(),
        db,
        shutdown: Some(tx),
        server: Some(server),
        search_dir,
        _testdb: testdb,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.client.put(self.url(path))
    }
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.client.patch(self.url(path))
    }
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }

    pub async fn register(&self, username: &str) -> (Uuid, String) {
        // A 503 says "retry after" (busy or the store briefly unavailable): a client retries
        // it, and so does this helper, a few times and loudly.
        let mut attempt = 0;
        let res = loop {
            let res = self
                .post("/v1/users")
                .json(&json!({"username": username, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            if res.status() != StatusCode::SERVICE_UNAVAILABLE || attempt == 3 {
                break res;
            }
            attempt += 1;
            eprintln!(
                "register {username}: 503 {}; retrying ({attempt})",
                res.text().await.unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(res.status(), StatusCode::CREATED);
        let pos = position(&res);
        let body: Value = res.json().await.unwrap();
        (body["user_id"].as_str().unwrap().parse().unwrap(), pos)
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post("/v1/sessions")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Registers and logs in; returns (user id, access token, refresh token).
    pub async fn user(&self, username: &str) -> (Uuid, String, String) {
        let (id, _) = self.register(username).await;
        let res = self.login(username, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        (
            id,
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Stops the server (and its projectors and relays) but keeps the database.
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    /// The directory of this app's search index.
    pub fn search_dir(&self) -> &std::path::Path {
        &self.search_dir
    }

    /// This app's store as the command services take it.
    pub fn command_store(&self) -> nova_commands::CommandStore {
        nova_commands::CommandStore::new(self.db.store.clone())
    }

    /// The read models of this app's database, as the command services and policies take
    /// their facts.
    pub fn read_models(&self) -> std::sync::Arc<nova::facts::ReadModels> {
        nova::facts::ReadModels::shared(self.db.any.clone())
    }

    /// The user command service on this app's store, for setting up state no route creates
    /// (roles, imported legacy accounts).
    pub fn user_commands(&self) -> nova_commands::user::UserCommands {
        nova_commands::user::UserCommands::new(
            self.command_store(),
            nova_commands::user::vault::Vault::new(self.db.any.clone()),
            nova_commands::user::credentials::Passwords::new(cheap_argon2()).unwrap(),
            nova_commands::user::credentials::Tokens::new(
                &SecretString::from(SECRET),
                chrono::Duration::minutes(15),
                chrono::Duration::days(1),
            ),
        )
    }

    /// Runs the `nova` binary with `--json` on this app's database (no NATS); it must succeed.
    /// Answers its JSON output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova"))
            .env("NOVA_DATABASE_URL", &self.db_url)
            .env_remove("NOVA_NATS_URL")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nova {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        self.db.close().await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Nothing left behind in the temp dir (best effort: a projector may still be closing).
        let _ = std::fs::remove_dir_all(&self.search_dir);
    }
}

/// Waits (30 s at most) until `projection` has applied `domain` up to the domain's head.
pub async fn caught_up(app: &TestApp, projection: &str, domain: nova_event_schemas::Domain) {
    let head = app.db.store.head(domain).await.unwrap();
    let caught = nova_projections::Checkpoints::default()
        .wait_for(
            &app.db.any,
            projection,
            domain,
            head,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        caught,
        nova_projections::checkpoint::Caught::Up,
        "{projection} behind {domain}:{head}"
    );
}

/// The JetStream stream of `domain` under `names`, once the relay has published at least
/// `head` messages to it (30 s at most).
pub async fn relayed_stream(
    js: &async_nats::jetstream::Context,
    names: &nova_infra::nats::Names,
    domain: nova_event_schemas::Domain,
    head: i64,
) -> async_nats::jetstream::stream::Stream {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut s) = js.get_stream(names.stream(domain)).await {
            if s.info().await.map(|i| i.state.messages).unwrap_or(0) >= head as u64 {
                return s;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "relay did not publish {domain}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A second process's API on the same database (no relay, no projectors), e.g. to show state
/// shared by API processes. Stops when the returned sender is dropped or fired.
pub async fn spawn_api_beside(
    app: &TestApp,
    configure: impl FnOnce(&mut Settings),
) -> (SocketAddr, oneshot::Sender<()>) {
    let mut settings = test_settings(&app.db_url);
    settings.components = nova::app::Components {
        api: true,
        relay: false,
        projections: Some(Vec::new()),
    };
    configure(&mut settings);
    let second = Application::build(settings)
        .await
        .expect("second API starts");
    let addr = second.local_addr().expect("API bound");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = second
            .run_until(async {
                let _ = rx.await;
            })
            .await;
    });
    (addr, tx)
}

pub fn position(res: &Response) -> String {
    res.headers()
        .get("x-nova-position")
        .expect("X-Nova-Position header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts status and error code; returns the error object.
pub async fn expect_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(
        res.status(),
        status,
        "unexpected status for expected {code}"
    );
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body["error"].clone()
}

/// Every column of the user directory, ordered by id.
pub type DirectoryRow = (
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

pub async fn directory(db: &Database) -> Vec<DirectoryRow> {
    sqlx::query_as(
        "SELECT user_id, username, display_name, status, profile_picture_url, active, \
                created_at, updated_at, last_version \
         FROM user_directory ORDER BY user_id",
    )
    .fetch_all(&db.any)
    .await
    .unwrap()
}

/// Wipes the directory and its checkpoint, replays it from the store, and returns its rows —
/// what a from-scratch rebuild produces. Run only with no projector running.
pub async fn replayed_directory(db: &Database) -> Vec<DirectoryRow> {
    sqlx::query("DELETE FROM user_directory")
        .execute(&db.any)
        .await
        .unwrap();
    sqlx::query("DELETE FROM projection_checkpoints")
        .execute(&db.any)
        .await
        .unwrap();
    nova_projections::catch_up(
        &nova_projections::user_directory::UserDirectory::default(),
        &db.store,
        &db.any,
        &nova_projections::Checkpoints::default(),
    )
    .await
    .unwrap();
    directory(db).await
}

/// Every row of a table, each as `column=value` cells sorted by column, rows sorted.
pub async fn table_rows(pool: &sqlx::AnyPool, table: &str) -> Vec<String> {
    use sqlx::{Column, Row};
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = r
                .columns()
                .iter()
                .map(|c| {
                    let i = c.ordinal();
                    let v = if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<i32>, _>(i) {
                        format!("{:?}", v.map(i64::from))
                    } else if let Ok(v) = r.try_get::<Option<i16>, _>(i) {
                        format!("{:?}", v.map(i64::from))
                    } else if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        format!("{v:?}")
                    } else {
                        panic!("{table}.{}: undecodable column", c.name())
                    };
                    format!("{}={v}", c.name())
                })
                .collect();
            cells.sort();
            cells.join("|")
        })
        .collect();
    out.sort();
    out
}

/// Everything the database holds, as bytes: the SQLite files themselves (with the write-ahead
/// log), or on PostgreSQL every row of every table of the test's schema as text. For searches
/// of what must not be stored (secrets, erased personal data).
pub async fn database_bytes(app: &TestApp) -> Vec<u8> {
    if let Some(path) = app.db_url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(b);
            }
        }
        assert!(!bytes.is_empty(), "no database file at {path}");
        return bytes;
    }
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db.any)
    .await
    .unwrap();
    assert!(!tables.is_empty(), "no table in the test's schema");
    let mut out = Vec::new();
    for (table,) in tables {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT CAST(row_to_json(t) AS TEXT) FROM \"{table}\" t"
        ))
        .fetch_all(&app.db.any)
        .await
        .unwrap();
        for (row,) in rows {
            out.extend(row.into_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// True if `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
