//! Test support: a fresh, private database per test on either engine, removed afterwards.
//!
//! PostgreSQL is reached through `NOVA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test creates its own database there. An
//! unreachable server fails the test — a suite that silently skips proves nothing.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::db::{Database, Engine};

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
