//! The databases a run benchmarks: a fresh private database per backend, migrated, and removed
//! again when the run is done (or dropped on error or interruption).

use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use nova_infra::db::{Database, Engine};
use nova_infra::testing::{postgres_admin_url, TestDb};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::Error;

/// Which backends to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Both,
    Postgres,
    Sqlite,
}

impl BackendChoice {
    pub fn engines(self) -> Vec<Engine> {
        match self {
            BackendChoice::Both => vec![Engine::Postgres, Engine::Sqlite],
            BackendChoice::Postgres => vec![Engine::Postgres],
            BackendChoice::Sqlite => vec![Engine::Sqlite],
        }
    }
}

pub fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Sqlite => "sqlite",
    }
}

/// A migrated private database; the database itself is removed when this is dropped.
pub struct Fresh {
    pub db: Database,
    // Declared after `db`, so its pools are dropped before the database is removed.
    _guard: TestDb,
}

impl Fresh {
    /// Closes the pools, then removes the database.
    pub async fn close(self) {
        self.db.close().await;
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates, connects and migrates a fresh database on `engine`.
pub async fn open_fresh(engine: Engine) -> Result<Fresh, Error> {
    if engine == Engine::Postgres {
        check_postgres().await?;
    }
    // `TestDb` reports failures by panicking (it is made for tests): contain the panic in a
    // task, and keep its report off stderr, since the message is returned as the error.
    let quiet = QuietPanics::install();
    let created = tokio::spawn(TestDb::new(engine)).await;
    drop(quiet);
    let guard = created.map_err(|e| {
        let why = match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown failure".to_owned()),
            Err(e) => e.to_string(),
        };
        format!(
            "cannot create a {} benchmark database: {why}",
            engine_name(engine)
        )
    })?;
    let db = Database::connect(&guard.url)
        .await
        .map_err(|e| format!("{}: {e}", engine_name(engine)))?;
    if let Err(e) = db.migrate().await {
        db.close().await;
        return Err(format!("{}: {e}", engine_name(engine)).into());
    }
    Ok(Fresh { db, _guard: guard })
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Silences the panic hook until dropped, then restores the previous one.
struct QuietPanics(Option<PanicHook>);

impl QuietPanics {
    fn install() -> QuietPanics {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        QuietPanics(Some(previous))
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            std::panic::set_hook(previous);
        }
    }
}

/// Fails with a readable message when the PostgreSQL server cannot be reached or refuses us.
async fn check_postgres() -> Result<(), Error> {
    let url = postgres_admin_url();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("NOVA_TEST_POSTGRES_URL must start with postgres:// or postgresql://".into());
    }
    let opts = PgConnectOptions::from_str(&url)
        .map_err(|e| format!("NOVA_TEST_POSTGRES_URL is not a PostgreSQL URL: {e}"))?;
    let shown = format!(
        "postgres://{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("")
    );
    let cannot = |why: String| {
        format!("cannot connect to PostgreSQL at {shown} (set NOVA_TEST_POSTGRES_URL): {why}")
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(cannot(e.to_string()).into()),
        Err(_) => Err(cannot(format!("no answer within {CONNECT_TIMEOUT:?}")).into()),
    }
}
