//! Test support: a fresh, private database per test on either engine, removed afterwards.
//!
//! PostgreSQL is reached through `NOVA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test creates its own database there. An
//! unreachable server fails the test — a suite that silently skips proves nothing.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::db::{Database, Engine};

/// Runs an async test body once per engine, each on its own database:
/// `on_both_backends!(name, …)` makes `mod name { sqlite, postgres }` calling `name(engine)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() { super::$name($crate::db::Engine::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() { super::$name($crate::db::Engine::Postgres).await }
        }
    )+ };
}

pub fn postgres_admin_url() -> String {
    std::env::var("NOVA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A private database that is dropped (Postgres) or deleted (SQLite) when this is dropped.
pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    pg_name: Option<String>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Postgres => Self::postgres().await,
            Engine::Sqlite => Self::sqlite(),
        }
    }

    pub async fn postgres() -> TestDb {
        let admin = postgres_admin_url();
        let name = format!("nova_t_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL unreachable at {admin} (set NOVA_TEST_POSTGRES_URL): {e}")
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        TestDb {
            engine: Engine::Postgres,
            url: format!("{base}/{name}"),
            pg_name: Some(name),
            dir: None,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("nova-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create temp dir: {e}"));
        TestDb {
            engine: Engine::Sqlite,
            url: format!("sqlite://{}/nova.db", dir.display()),
            pg_name: None,
            dir: Some(dir),
        }
    }

    /// Connects and migrates.
    pub async fn open(&self) -> Database {
        let db = Database::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.url));
        db.migrate()
            .await
            .unwrap_or_else(|e| panic!("cannot migrate {}: {e}", self.url));
        db
    }

    pub fn data_dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.pg_name.take() {
            // Drop may run inside a runtime; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                            let _ = conn
                                .execute(
                                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                                )
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

pub fn nats_url() -> String {
    std::env::var("NOVA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A JetStream context on the shared test server with a namespace of its own; its streams are
/// deleted by [`TestNats::cleanup`].
pub struct TestNats {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub names: crate::nats::Names,
}

impl TestNats {
    pub async fn connect() -> TestNats {
        Self::connect_to(&nats_url()).await
    }

    pub async fn connect_to(url: &str) -> TestNats {
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("NATS unreachable at {url} (set NOVA_TEST_NATS_URL): {e}"));
        let js = async_nats::jetstream::new(client.clone());
        let names = crate::nats::Names::unique();
        crate::nats::ensure_streams(&js, &names)
            .await
            .unwrap_or_else(|e| panic!("cannot create test streams: {e}"));
        TestNats { client, js, names }
    }

    pub async fn cleanup(&self) {
        self.names.delete_streams(&self.js).await;
    }
}

/// A private nats-server process (JetStream, own port and storage) that a test may stop and
/// restart — for outage tests that must not disturb the shared server.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let dir = std::env::temp_dir().join(format!("nova-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let mut n = PrivateNats {
            port,
            dir,
            child: None,
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn binary() -> String {
        std::env::var("NOVA_TEST_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
    }

    /// (Re)starts the server on the same port and storage, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(Self::binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
