//! `Application::build`: everything `nova serve` runs — migrations, the projectors (embedded
//! source: tailing the store), and the HTTP server — assembled from [`Settings`] so tests can
//! start the real thing on port 0 with their own database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use nova_commands::user::credentials::{Argon2Config, Passwords, Tokens};
use nova_commands::user::UserCommands;
use nova_infra::db::Database;
use nova_projections::{run_projector, Checkpoints, EventSource, StoreTail};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{self, AppState};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Settings {
    pub database_url: String,
    pub listen: String,
    pub jwt_secret: SecretString,
    pub argon2: Argon2Config,
    pub max_body_bytes: usize,
    pub access_ttl: ChronoDuration,
    pub refresh_ttl: ChronoDuration,
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    db: Database,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(s: Settings) -> Result<Application, BoxError> {
        let db = Database::connect(&s.database_url).await?;
        db.migrate().await?;
        let passwords = Passwords::new(s.argon2)?;
        let tokens = Tokens::new(&s.jwt_secret, s.access_ttl, s.refresh_ttl);
        let users = UserCommands::new(db.store.clone(), passwords, tokens);
        let checkpoints = Checkpoints::default();
        let (stop, stop_rx) = watch::channel(false);

        let mut tasks = Vec::new();
        let source: Arc<dyn EventSource> = Arc::new(StoreTail::new(db.store.clone()));
        for projection in nova_projections::all() {
            for &domain in projection.domains() {
                tasks.push(tokio::spawn(run_projector(
                    projection.clone(),
                    domain,
                    source.clone(),
                    db.any.clone(),
                    checkpoints.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        tasks.push(tokio::spawn(purge_idempotency_keys(
            db.any.clone(),
            stop_rx,
        )));

        let state = AppState {
            db: db.clone(),
            users,
            checkpoints,
            max_body_bytes: s.max_body_bytes,
        };
        let listener = TcpListener::bind(&s.listen).await?;
        Ok(Application {
            listener,
            router: http::router(state),
            db,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, stops the
    /// background tasks and closes the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.db.close().await;
        served
    }
}

async fn purge_idempotency_keys(pool: sqlx::AnyPool, mut stop: watch::Receiver<bool>) {
    loop {
        match http::idempotency::purge_expired(&pool).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "purged expired idempotency keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
