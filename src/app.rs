//! `Application::build`: everything a `nova` process runs — migrations, the relay, the
//! projectors and the HTTP server — assembled from [`Settings`], so tests start the real thing
//! on port 0 with their own database and NATS namespace.
//!
//! Which parts run is chosen by [`Components`]: `nova serve` runs all of them, `--api-only`
//! only the API, `nova relay` only the relays, `nova project` only projectors. Without
//! `NOVA_NATS_URL` projectors tail the store; with it they consume JetStream and the relay
//! feeds JetStream from the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use nova_commands::experiment::ExperimentCommands;
use nova_commands::follow::FollowCommands;
use nova_commands::post::PostCommands;
use nova_commands::stream::StreamCommands;
use nova_commands::user::credentials::{Argon2Config, Passwords, Tokens};
use nova_commands::user::notifications::NotificationCommands;
use nova_commands::user::UserCommands;
use nova_commands::CommandStore;
use nova_event_schemas::Domain;
use nova_infra::db::Database;
use nova_infra::limits::Limits;
use nova_infra::nats::Names;
use nova_infra::relay::Relay;
use nova_policies::{run_policy, CatchUp};
use nova_projections::{spawn_projectors, Checkpoints, EventSource, JetStreamSource, StoreTail};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::facts::ReadModels;
use crate::http::{self, AppState};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The parts of Nova a process runs.
#[derive(Debug, Clone)]
pub struct Components {
    pub api: bool,
    pub relay: bool,
    /// Projections to run: `None` = all, `Some(empty)` = none.
    pub projections: Option<Vec<String>>,
}

impl Components {
    pub fn all() -> Self {
        Components {
            api: true,
            relay: true,
            projections: None,
        }
    }
}

pub struct Settings {
    pub database_url: String,
    /// The search index's directory (ADR 0013).
    pub search_dir: std::path::PathBuf,
    /// This host's durable JetStream consumer name for the search projector (one per replica).
    pub search_consumer: String,
    pub nats_url: Option<String>,
    pub nats_names: Names,
    pub listen: String,
    pub jwt_secret: SecretString,
    pub argon2: Argon2Config,
    pub max_body_bytes: usize,
    pub access_ttl: ChronoDuration,
    pub refresh_ttl: ChronoDuration,
    pub components: Components,
    /// Who may read `/metrics` (ADR 0012). Default: nobody.
    pub metrics: MetricsAccess,
    /// After how long a retry may take over an Idempotency-Key claim that never answered.
    pub idempotency_takeover: Duration,
    /// Rate limits and where they are kept (ADR 0022).
    pub rate_limits: RateLimitSettings,
    /// The shared secret the media server's publish hooks send (`?secret=`); without it the
    /// hooks refuse every publish.
    pub ingest_secret: Option<SecretString>,
    /// Where "now" comes from for viewer presence (tests move it forward).
    pub clock: nova_infra::clock::Clock,
}

/// Rate limits of the API. The default limits nothing (processes without an API, tools).
#[derive(Clone, Default)]
pub struct RateLimitSettings {
    /// Per user; `None` = off.
    pub user: Option<nova_infra::limits::Quota>,
    /// Per client address without a valid token; `None` = off.
    pub anonymous: Option<nova_infra::limits::Quota>,
    /// Redis shared by all API processes (also for failed logins of unknown names).
    pub redis_url: Option<String>,
    /// Prefix of Nova's Redis keys.
    pub redis_prefix: String,
    /// The time limits decide by (a manual clock in tests).
    pub clock: http::ratelimit::Clock,
}

/// Where `/metrics` is served. With neither field set it is not served.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    /// A separate listener that serves `/metrics` without a token.
    pub listen: Option<String>,
    /// A bearer token that opens `/metrics` on the API listener.
    pub token: Option<SecretString>,
}

pub struct Application {
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    router: axum::Router,
    db: Database,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Hands `db`'s event store the user domain's data keys, so that personal fields are sealed
/// on append and opened on read (ADR 0025). Every process that appends or reads events does
/// this once, right after connecting ([`connect`]).
pub fn with_data_keys(db: &Database) -> Arc<nova_commands::user::data_keys::DataKeyVault> {
    let keys = Arc::new(nova_commands::user::data_keys::DataKeyVault::new(
        db.any.clone(),
    ));
    db.store.set_data_keys(keys.clone());
    keys
}

/// Seals, in every domain that stores personal data, what older versions kept in plaintext
/// (ADR 0025; idempotent). Answers the number of events rewritten.
pub async fn seal_history(
    store: &CommandStore,
    keys: &dyn nova_infra::personal::DataKeys,
) -> Result<u64, BoxError> {
    Ok(nova_commands::user::seal_history(store, keys).await?
        + nova_commands::post::seal_history(store, keys).await?
        + nova_commands::stream::seal_history(store, keys).await?)
}

/// Connects to the database with the data keys in place (for the CLI and tools; the server
/// does the same in [`Application::build`]).
pub async fn connect(url: &str) -> Result<Database, BoxError> {
    let db = Database::connect(url).await?;
    with_data_keys(&db);
    Ok(db)
}

impl Application {
    pub async fn build(s: Settings) -> Result<Application, BoxError> {
        let db = Database::connect(&s.database_url).await?;
        db.migrate().await?;
        let data_keys = with_data_keys(&db);
        let vault = nova_commands::user::vault::Vault::new(db.any.clone());
        // Secrets that old credential events still carry move out of the history before any
        // relay or projector reads it (ADR 0016).
        nova_commands::user::vault::upgrade_credentials(
            &CommandStore::new(db.store.clone()),
            &vault,
        )
        .await?;
        // Personal data stored in plaintext before ADR 0025 is sealed, so that erasure reaches
        // it too; also before anything reads the history.
        seal_history(&CommandStore::new(db.store.clone()), &*data_keys).await?;
        let nats = match &s.nats_url {
            Some(url) => Some(nova_infra::nats::connect(url).await?),
            None => None,
        };
        let js = nats.clone().map(async_nats::jetstream::new);
        let (stop, stop_rx) = watch::channel(false);
        let checkpoints = Checkpoints::default();
        let mut tasks = Vec::new();

        if let Some(js) = &js {
            // Streams are created (or updated) before anything publishes or consumes; while
            // NATS is down this keeps retrying in the background and the API still serves.
            let (ready_tx, ready_rx) = watch::channel(false);
            tasks.push(tokio::spawn(ensure_streams(
                js.clone(),
                s.nats_names.clone(),
                ready_tx,
                stop_rx.clone(),
            )));
            if s.components.relay {
                for domain in Domain::ALL {
                    let mut relay = Relay::new(
                        db.store.clone(),
                        js.clone(),
                        s.nats_names.clone(),
                        db.any.clone(),
                        domain,
                    );
                    if let Some(pg) = db.pg_pool() {
                        // Failover in well under a second (ADR 0005).
                        relay = relay.with_session_lock(pg.clone());
                    }
                    tasks.push(tokio::spawn(after_streams(
                        ready_rx.clone(),
                        relay.run(stop_rx.clone()),
                    )));
                }
            }
        }

        let wanted = |name: &str| match &s.components.projections {
            None => true,
            Some(names) => names.iter().any(|n| n == name),
        };
        let tail: Arc<dyn EventSource> = Arc::new(StoreTail::new(db.store.clone()));
        for projection in nova_projections::all() {
            if !wanted(projection.name()) {
                continue;
            }
            let source: Arc<dyn EventSource> = match &js {
                Some(js) => Arc::new(JetStreamSource::new(
                    js.clone(),
                    s.nats_names.clone(),
                    db.store.clone(),
                    projection.name(),
                )),
                None => tail.clone(),
            };
            tasks.extend(spawn_projectors(
                &projection,
                &source,
                &db.any,
                &checkpoints,
                &stop_rx,
            ));
        }

        // The search index: written by its projector where it runs, read by the API. An
        // API-only process opens it without a writer and sees the projector's commits.
        let search = nova_infra::search::LiveIndex::open(&s.search_dir)?;
        if wanted(nova_projections::search::NAME) {
            let source: Arc<dyn EventSource> = match &js {
                Some(js) => Arc::new(JetStreamSource::new(
                    js.clone(),
                    s.nats_names.clone(),
                    db.store.clone(),
                    &s.search_consumer,
                )),
                None => tail.clone(),
            };
            tasks.push(tokio::spawn(nova_projections::search::run(
                search.clone(),
                source,
                db.store.clone(),
                db.any.clone(),
                checkpoints.clone(),
                stop_rx.clone(),
            )));
        }

        // The command services: each appends its own domain's events only, and learns what it
        // needs about other domains from the read models (ADR 0008).
        let store = CommandStore::new(db.store.clone());
        let facts = ReadModels::shared(db.any.clone());
        let follows = FollowCommands::new(store.clone(), facts.clone());
        let posts = PostCommands::new(store.clone(), facts.clone(), facts.clone());
        let experiments = ExperimentCommands::new(store.clone());
        let streams = StreamCommands::new(store.clone(), db.any.clone(), s.clock.clone());
        let keys = nova_commands::conversation::keys::KeyServer::new(db.any.clone(), db.engine);
        let conversations = nova_commands::conversation::ConversationCommands::new(
            store.clone(),
            facts.clone(),
            facts.clone(),
        );
        // Policies run wherever all projections run (`nova serve`, `nova project` without
        // names): they react to other domains' events with commands to their own.
        if s.components.projections.is_none() {
            let catch_up = CatchUp::new(db.any.clone(), checkpoints.clone());
            for policy in nova_policies::all(
                nova_policies::Services::over(
                    &follows,
                    &posts,
                    &experiments,
                    &streams,
                    &conversations,
                    &keys,
                    facts.clone(),
                ),
                &catch_up,
            ) {
                let source: Arc<dyn EventSource> = match &js {
                    Some(js) => Arc::new(JetStreamSource::new(
                        js.clone(),
                        s.nats_names.clone(),
                        db.store.clone(),
                        policy.name(),
                    )),
                    None => tail.clone(),
                };
                for &domain in policy.domains() {
                    tasks.push(tokio::spawn(run_policy(
                        policy.clone(),
                        domain,
                        source.clone(),
                        db.any.clone(),
                        checkpoints.clone(),
                        stop_rx.clone(),
                    )));
                }
            }
        }

        crate::http::metrics::handle();
        tasks.push(tokio::spawn(publish_status_metrics(
            db.clone(),
            stop_rx.clone(),
        )));
        let listener = if s.components.api {
            tasks.push(tokio::spawn(purge_idempotency_keys(
                db.any.clone(),
                stop_rx.clone(),
            )));
            // Viewer heartbeats are buffered per API process and written once a second.
            tasks.push(tokio::spawn(streams.clone().run_presence(stop_rx.clone())));
            Some(TcpListener::bind(&s.listen).await?)
        } else {
            None
        };
        let metrics_listener = match &s.metrics.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let passwords = Passwords::new(s.argon2)?;
        let tokens = Tokens::new(&s.jwt_secret, s.access_ttl, s.refresh_ttl);
        let limits = match &s.rate_limits.redis_url {
            Some(url) => Limits::redis(url, &s.rate_limits.redis_prefix)?,
            None => Limits::in_process(),
        };
        let users = UserCommands::new(store.clone(), vault, passwords, tokens)
            .with_limits(limits.clone())
            .with_data_keys(data_keys);
        let state = AppState {
            db: db.clone(),
            users,
            follows,
            posts,
            notifications: NotificationCommands::new(store, facts),
            experiments,
            streams,
            ingest_secret: s.ingest_secret.map(std::sync::Arc::new),
            conversations,
            keys,
            checkpoints,
            search,
            nats,
            rebuilds: Default::default(),
            waits: Default::default(),
            max_body_bytes: s.max_body_bytes,
            idempotency: http::idempotency::Settings::new(&s.jwt_secret, s.idempotency_takeover),
            metrics_token: s.metrics.token.as_ref().map(http::metrics::Token::new),
            rate_limits: http::ratelimit::RateLimits {
                user: s.rate_limits.user,
                anonymous: s.rate_limits.anonymous,
                limits,
                clock: s.rate_limits.clock.clone(),
            },
        };
        Ok(Application {
            listener,
            metrics_listener,
            router: http::router(state),
            db,
            stop,
            tasks,
        })
    }

    /// The API's address (`None` when this process runs no API).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The separate metrics listener's address, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Runs until `shutdown` resolves, then finishes in-flight requests, stops the
    /// background tasks and closes the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics_server = self.metrics_listener.map(|listener| {
            let mut stop = self.stop.subscribe();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, http::metrics::router())
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::warn!(error = %e, "metrics listener failed");
                }
            })
        });
        let served = match self.listener {
            Some(listener) => {
                axum::serve(
                    listener,
                    self.router
                        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
            None => {
                shutdown.await;
                Ok(())
            }
        };
        let _ = self.stop.send(true);
        for t in self.tasks.into_iter().chain(metrics_server) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.db.close().await;
        served
    }
}

/// The policies Nova runs, over `db` (for tools such as `nova projections retry`; a serving
/// process builds them with its own command services in [`Application::build`]).
pub fn policies_over(db: &Database) -> Vec<Arc<dyn nova_policies::Policy>> {
    policies_with(db.store.clone(), db.any.clone(), db.engine)
}

/// The policies Nova runs, each with its own domain's command service over `store` and the
/// read models in `any` (on `engine`) as its fact source.
pub fn policies_with(
    store: nova_infra::store::EventStore,
    any: sqlx::AnyPool,
    engine: nova_infra::db::Engine,
) -> Vec<Arc<dyn nova_policies::Policy>> {
    let store = CommandStore::new(store);
    let facts = ReadModels::shared(any.clone());
    let follows = FollowCommands::new(store.clone(), facts.clone());
    let posts = PostCommands::new(store.clone(), facts.clone(), facts.clone());
    let experiments = ExperimentCommands::new(store.clone());
    let streams = StreamCommands::new(
        store.clone(),
        any.clone(),
        nova_infra::clock::Clock::system(),
    );
    let conversations =
        nova_commands::conversation::ConversationCommands::new(store, facts.clone(), facts.clone());
    let keys = nova_commands::conversation::keys::KeyServer::new(any.clone(), engine);
    let catch_up = CatchUp::new(any, Checkpoints::default());
    nova_policies::all(
        nova_policies::Services::over(
            &follows,
            &posts,
            &experiments,
            &streams,
            &conversations,
            &keys,
            facts,
        ),
        &catch_up,
    )
}

async fn ensure_streams(
    js: async_nats::jetstream::Context,
    names: Names,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match nova_infra::nats::ensure_streams(&js, &names).await {
            Ok(()) => {
                let _ = ready.send(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot set up JetStream streams yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs `task` once the streams exist.
async fn after_streams(mut ready: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    if ready.wait_for(|r| *r).await.is_ok() {
        task.await;
    }
}

/// Projection lag as gauges, refreshed every few seconds.
async fn publish_status_metrics(db: Database, mut stop: watch::Receiver<bool>) {
    loop {
        match nova_projections::status::status(&db.store, &db.any, nova_policies::CATALOG).await {
            Ok(s) => nova_projections::status::record_metrics(&s),
            Err(e) => tracing::debug!(error = %e, "projection status unavailable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
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

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when it is first awaited), so a signal that arrives during start-up is not
/// lost to the default action: the process then stops gracefully as soon as it is up.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}
