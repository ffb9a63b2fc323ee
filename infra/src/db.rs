//! Opening the database named by `NOVA_DATABASE_URL`: the event store on its native driver,
//! plus an `AnyPool` on the same database for read models and platform tables (their SQL is
//! written once, in the dialect both engines accept: `$n` parameters, TEXT and BIGINT columns).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AnyPool, Executor};

use crate::store::postgres::PgBackend;
use crate::store::sqlite::SqliteBackend;
use crate::store::{Backend, EventStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (expected postgres:// or sqlite://)")]
    UnsupportedUrl,
    #[error("cannot open database: {0}")]
    Connect(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create data directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything that talks to the database.
#[derive(Clone)]
pub struct Database {
    pub engine: Engine,
    pub store: EventStore,
    /// Read models and platform tables.
    pub any: AnyPool,
    native: Native,
}

#[derive(Clone)]
enum Native {
    Pg(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// The PostgreSQL migrations (`migrations/postgres/`), embedded at build time.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
/// The SQLite migrations (`migrations/sqlite/`), embedded at build time.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a connection waiting for SQLite's write lock tries again.
const BUSY_POLL: Duration = Duration::from_micros(500);

/// SQLite's busy handler for the store's connections: try again every [`BUSY_POLL`] for up to
/// [`SQLITE_BUSY_TIMEOUT`]. SQLite's own (`busy_timeout`) backs off to sleeps of 100 ms, so
/// an append that waits behind a projector's transaction once or twice is answered 100–400 ms
/// late — the tail of writes on the embedded engine (`nova-bench http`).
extern "C" fn poll_busy(_: *mut std::ffi::c_void, attempts: std::ffi::c_int) -> std::ffi::c_int {
    let limit = (SQLITE_BUSY_TIMEOUT.as_micros() / BUSY_POLL.as_micros()) as std::ffi::c_int;
    if attempts >= limit {
        return 0;
    }
    std::thread::sleep(BUSY_POLL);
    1
}

async fn fine_busy_handler(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the open connection's handle, valid while `handle` is held; the handler
    // is a plain function with no state (null user data), and it runs on the connection's own
    // worker thread, where blocking is what SQLite's default handler does too.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(raw.as_ptr(), Some(poll_busy), std::ptr::null_mut())
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "sqlite3_busy_handler failed: {rc}"
        )));
    }
    Ok(())
}

/// A pooled PostgreSQL connection idle for longer than this is pinged before it is handed
/// out. sqlx pings on every acquire by default: a round trip before each statement of a busy
/// server (ADR 0027). A connection in steady use has just proven itself; one that sat idle may
/// have been cut (a restarted server, a dropped NAT entry) and is replaced if the ping fails.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= IDLE_BEFORE_PING {
            conn.ping().await?;
        }
        Ok(true)
    })
}

impl Database {
    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<Database, DbError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| ping_if_idle(conn, meta))
                .connect(url)
                .await?;
            let any = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| ping_if_idle(conn, meta))
                .connect(url)
                .await?;
            let backend: Arc<dyn Backend> = Arc::new(PgBackend::new(pg.clone()));
            Ok(Database {
                engine: Engine::Postgres,
                store: EventStore::new(backend),
                any,
                native: Native::Pg(pg),
            })
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged append survives power loss, not only a crash.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(false);
            if let Some(parent) = opts.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            let native = SqlitePoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _| Box::pin(async move { fine_busy_handler(conn).await }))
                .connect_with(opts)
                .await?;
            let any = AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;")
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::new(native.clone()));
            Ok(Database {
                engine: Engine::Sqlite,
                store: EventStore::new(backend),
                any,
                native: Native::Sqlite(native),
            })
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }

    /// Applies pending migrations (idempotent; concurrent callers are serialised by sqlx).
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.native {
            Native::Pg(pool) => POSTGRES_MIGRATOR.run(pool).await?,
            Native::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// After data was deleted for good (erasure, ADR 0025): on SQLite, rewrites the database
    /// file from its live rows (`VACUUM`: deleted rows and free pages do not survive it) and
    /// then copies the write-ahead log into the file and truncates it, so no deleted byte stays
    /// in either file. (`secure_delete` on every connection would zero deleted rows as they
    /// go, but stalled other processes' connections after a view's table swap in our tests.)
    /// Nothing to do on PostgreSQL, whose dead row versions are reclaimed by (auto)vacuum.
    pub async fn scrub(&self) -> Result<(), DbError> {
        if let Native::Sqlite(pool) = &self.native {
            sqlx::query("VACUUM").execute(pool).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.native {
            Native::Pg(p) => Some(p),
            Native::Sqlite(_) => None,
        }
    }

    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.native {
            Native::Sqlite(p) => Some(p),
            Native::Pg(_) => None,
        }
    }

    pub async fn close(&self) {
        self.any.close().await;
        match &self.native {
            Native::Pg(p) => p.close().await,
            Native::Sqlite(p) => p.close().await,
        }
    }
}
