//! The databases a run benchmarks: a fresh private database per backend, migrated, and removed
//! again when the run is done (or dropped on error or interruption); and, for the delivery
//! scenarios, the NATS server with a fresh namespace of streams per measurement, deleted again
//! afterwards.

use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use nova_infra::db::{Database, Engine};
use nova_infra::nats::Names;
use nova_infra::testing::{nats_url, postgres_admin_url, TestDb, TestNats};
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
    /// The database's URL, for a process of another program to reach the same database.
    pub fn url(&self) -> &str {
        &self._guard.url
    }

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

/// The NATS server the delivery scenarios publish to: `NOVA_TEST_NATS_URL` (default
/// `nats://127.0.0.1:4222`), with JetStream enabled.
pub struct Nats {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    url: String,
}

/// Connects to the test NATS server, failing with a readable message when it cannot be reached.
pub async fn connect_nats() -> Result<Nats, Error> {
    let url = nats_url();
    let cannot =
        |why: String| format!("cannot connect to NATS at {url} (set NOVA_TEST_NATS_URL): {why}");
    let connecting = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url.as_str());
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return Err(cannot(e.to_string()).into()),
        Err(_) => return Err(cannot(format!("no answer within {CONNECT_TIMEOUT:?}")).into()),
    };
    let js = async_nats::jetstream::new(client.clone());
    Ok(Nats { client, js, url })
}

impl Nats {
    /// A fresh namespace of streams (`Names::unique`), created now and deleted by
    /// [`Namespace::delete`] (or, as a fallback, when dropped).
    pub async fn namespace(&self) -> Result<Namespace, Error> {
        let names = Names::unique();
        let created = tokio::time::timeout(
            Duration::from_secs(30),
            nova_infra::nats::ensure_streams(&self.js, &names),
        )
        .await;
        let ns = Namespace {
            nats: TestNats {
                client: self.client.clone(),
                js: self.js.clone(),
                names,
            },
            url: self.url.clone(),
            deleted: false,
        };
        match created {
            Ok(Ok(())) => Ok(ns),
            Ok(Err(e)) => {
                ns.delete().await;
                Err(format!(
                    "NATS at {}: cannot create the benchmark streams (is JetStream enabled?): {e}",
                    self.url
                )
                .into())
            }
            Err(_) => {
                ns.delete().await;
                Err(format!(
                    "NATS at {}: creating the benchmark streams timed out",
                    self.url
                )
                .into())
            }
        }
    }
}

/// One private set of streams on the shared NATS server.
pub struct Namespace {
    pub nats: TestNats,
    url: String,
    deleted: bool,
}

impl Namespace {
    pub fn names(&self) -> &Names {
        &self.nats.names
    }

    pub fn js(&self) -> &async_nats::jetstream::Context {
        &self.nats.js
    }

    /// Messages currently stored in `domain`'s stream.
    pub async fn stored(&self, domain: nova_event_schemas::Domain) -> Result<u64, Error> {
        let stream = self
            .nats
            .js
            .get_stream(self.nats.names.stream(domain))
            .await?;
        Ok(stream.cached_info().state.messages)
    }

    /// Deletes the namespace's streams.
    pub async fn delete(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.nats.cleanup()).await;
        self.deleted = true;
    }
}

impl Drop for Namespace {
    /// Fallback for runs that end early (error or interruption): delete the streams over a
    /// connection of a thread of its own, since the run's runtime may be going away.
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let names = self.nats.names.clone();
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    if let Ok(client) = async_nats::connect(url.as_str()).await {
                        names
                            .delete_streams(&async_nats::jetstream::new(client))
                            .await;
                    }
                })
                .await;
            });
        })
        .join();
    }
}
