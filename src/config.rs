//! Command line and configuration: every setting is a flag with an `NOVA_*` environment
//! variable behind it, and a default that runs out of the box (embedded SQLite under
//! `./nova-data`).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(name = "nova", version, about = "Nova: event-sourced social backend")]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Event store and read models. Default: a SQLite file in the data directory.
    #[arg(long, env = "NOVA_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Where the embedded database and generated secrets live.
    #[arg(
        long,
        env = "NOVA_DATA_DIR",
        default_value = "nova-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Where the search index lives (ADR 0013). Default: `<data dir>/search`. Each host keeps
    /// its own index; an API process on the same host as the projector opens it read only.
    #[arg(long, env = "NOVA_SEARCH_DIR", global = true)]
    pub search_dir: Option<PathBuf>,
    /// Name of this host's durable JetStream consumer for the search projector (default
    /// `search`). Every host that keeps its own index replica needs its own name.
    #[arg(
        long,
        env = "NOVA_SEARCH_CONSUMER",
        default_value = "search",
        global = true
    )]
    pub search_consumer: String,
    /// NATS with JetStream. When set, events are relayed to JetStream and projectors consume
    /// it; otherwise projectors tail the store (embedded mode).
    #[arg(long, env = "NOVA_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Print machine-readable JSON instead of a human summary (ops commands).
    #[arg(long, global = true)]
    pub json: bool,
}

impl DbArgs {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("nova.db").display()),
        }
    }

    pub fn search_dir(&self) -> PathBuf {
        self.search_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("search"))
    }

    pub fn is_postgres(&self) -> bool {
        let u = self.url();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API, the relay and the projectors (applies migrations first).
    Serve(ServeArgs),
    /// Run only the relays (store → JetStream), until SIGINT/SIGTERM. Needs NOVA_NATS_URL.
    Relay,
    /// Run only projectors (all, or the named ones), until SIGINT/SIGTERM.
    Project {
        /// Projection names; none = all.
        names: Vec<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Administrative commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Projection operations.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Event history for analysts.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Aggregates as their history leaves them, for analysts (ADR 0024).
    #[command(subcommand)]
    Aggregates(AggregatesCommand),
    /// Print the ownership matrix (domains, tables, policies, routes) generated from the code
    /// and the embedded migrations; exit non-zero on a violation. Needs no database.
    Boundaries,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Serve the API only: no relay, no projectors (run those as `nova relay` /
    /// `nova project`, e.g. to scale API processes separately).
    #[arg(long)]
    pub api_only: bool,
    #[arg(long, env = "NOVA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// HMAC secret for access tokens. Required with PostgreSQL; generated and kept in the data
    /// directory in embedded mode.
    #[arg(long, env = "NOVA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// argon2id memory cost in KiB.
    #[arg(long, env = "NOVA_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub argon2_memory_kib: u32,
    #[arg(long, env = "NOVA_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    #[arg(long, env = "NOVA_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// argon2 runs in progress at once (each holds the memory cost); 0 = available cores.
    #[arg(long, env = "NOVA_ARGON2_MAX_CONCURRENT", default_value_t = 0)]
    pub argon2_max_concurrent: usize,
    /// How long a login, registration or password change waits for an argon2 slot before it
    /// is answered 503 `busy` with `Retry-After`.
    #[arg(long, env = "NOVA_ARGON2_QUEUE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub argon2_queue_timeout_ms: u64,
    /// Largest accepted request body.
    #[arg(long, env = "NOVA_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Access token lifetime.
    #[arg(long, env = "NOVA_ACCESS_TTL_SECS", default_value_t = 15 * 60,
          value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub access_ttl_secs: i64,
    /// Refresh token lifetime.
    #[arg(long, env = "NOVA_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600,
          value_parser = clap::value_parser!(i64).range(60..=366 * 86_400))]
    pub refresh_ttl_secs: i64,
    /// Serve `/metrics` on this separate address (e.g. 127.0.0.1:9464 or a private
    /// interface), without a token. Default: no separate listener.
    #[arg(long, env = "NOVA_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Serve `/metrics` on the API listener too, to callers presenting this bearer token.
    /// Without it (and without NOVA_METRICS_ADDR), `/metrics` is not served at all.
    #[arg(long, env = "NOVA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,
    /// How long a claimed Idempotency-Key whose request never answered (its process died)
    /// is held before a retry may take it over, in milliseconds. The retry never runs a
    /// command twice either way (ADR 0012); this only bounds how long it answers 409.
    #[arg(long, env = "NOVA_IDEMPOTENCY_TAKEOVER_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub idempotency_takeover_ms: u64,
    /// Shared secret of the media server's publish hooks (`/v1/streams/hooks/…?secret=`).
    /// Without it every publish is refused.
    #[arg(long, env = "NOVA_INGEST_SECRET", hide_env_values = true)]
    pub ingest_secret: Option<SecretString>,
    /// Requests a minute per user (a valid access token), GCRA; 0 = no limit (ADR 0022).
    #[arg(long, env = "NOVA_RATE_LIMIT_PER_MINUTE", default_value_t = 100)]
    pub rate_limit_per_minute: u32,
    /// How many of a user's requests may come at once (the GCRA burst).
    #[arg(long, env = "NOVA_RATE_LIMIT_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// Requests a minute per client address without a valid token (registration, login,
    /// refresh); 0 = no limit.
    #[arg(
        long,
        env = "NOVA_RATE_LIMIT_ANONYMOUS_PER_MINUTE",
        default_value_t = 30
    )]
    pub rate_limit_anonymous_per_minute: u32,
    /// How many requests of one address without a token may come at once.
    #[arg(long, env = "NOVA_RATE_LIMIT_ANONYMOUS_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_anonymous_burst: u32,
    /// Redis for limits every API process shares (rate quotas, failed logins of unknown
    /// names). Without it they are kept per process.
    #[arg(long, env = "NOVA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key Nova writes (several deployments may share one Redis).
    #[arg(long, env = "NOVA_REDIS_PREFIX", default_value = "nova:")]
    pub redis_prefix: String,
}

impl ServeArgs {
    /// The configured rate limits (a quota of 0 requests a minute is off).
    pub fn rate_limits(&self) -> crate::app::RateLimitSettings {
        let quota =
            |n: u32, burst: u32| (n > 0).then(|| nova_infra::limits::Quota::per_minute(n, burst));
        crate::app::RateLimitSettings {
            user: quota(self.rate_limit_per_minute, self.rate_limit_burst),
            anonymous: quota(
                self.rate_limit_anonymous_per_minute,
                self.rate_limit_anonymous_burst,
            ),
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            clock: Default::default(),
        }
    }
}

/// Minimum length of a configured metrics token.
pub const MIN_METRICS_TOKEN: usize = 16;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Export a domain's events in position order, upcast to their latest schema versions, as
    /// NDJSON (one event a line) or CSV, to a file or stdout. `--after` resumes an export.
    Export {
        /// `user`, `follow`, `post`, …
        #[arg(long)]
        domain: String,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        aggregate_id: Option<uuid::Uuid>,
        /// Start after this position (exclusive): the last position of an earlier export.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only events recorded at or before this RFC 3339 instant.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_parser = ["ndjson", "csv"], default_value = "ndjson")]
        format: String,
        /// Output file; stdout when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AggregatesCommand {
    /// An aggregate's state at a version or an instant (neither: now), folded from its events
    /// upcast to their latest schema versions; printed as JSON.
    State {
        /// `user`, `follow`, `post`, `experiment`, …
        domain: String,
        id: uuid::Uuid,
        /// After this version (1 = the first event).
        #[arg(long, conflicts_with = "as_of")]
        version: Option<i64>,
        /// After the last event recorded at or before this RFC 3339 instant.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Per projection and domain: checkpoint, head, lag in events and seconds, state; then the
    /// as-of copies.
    Status,
    /// Rebuild a projection from the event store into a fresh copy while the live one keeps
    /// serving, then swap. Interrupted, it resumes where it stopped when run again.
    ///
    /// With `--as-of`: build a side copy of the view as it stood at that instant (from the
    /// events recorded at or before it) beside the live one, never swapped in; listed by
    /// `status`, removed by `drop` (ADR 0024).
    Rebuild {
        name: String,
        /// RFC 3339 instant, inclusive (not in the future).
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Drop an as-of copy: by projection and instant, or by the id `status` lists.
    Drop {
        /// Projection name (with `--as-of`).
        name: Option<String>,
        #[arg(long, requires = "name")]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// The copy's id as listed by `status`.
        #[arg(long, conflicts_with_all = ["name", "as_of"])]
        id: Option<i64>,
    },
    /// Handle a policy's parked events (`dead_letters`, counted by `status`) again: each one
    /// handled now is removed, each one that fails again stays with its new error.
    Retry {
        /// The policy's name, e.g. policy_follow_on_user_deactivated.
        policy: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Grant a role (admin: ops routes; analyst: event history) to a user.
    GrantRole {
        username: String,
        #[arg(value_parser = ["admin", "analyst"])]
        role: String,
    },
    /// Import an account from a legacy system (unsalted SHA-256 password hash); its hash is
    /// upgraded to argon2id at the first successful login.
    ImportUser {
        username: String,
        /// SHA-256 of the password, 64 hex characters.
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Move password and refresh-token hashes that events stored before ADR 0016 still carry
    /// into the credentials table, rewriting those events to version 2 (also done at every
    /// `serve`). Idempotent.
    UpgradeCredentials,
    /// Seal the personal data that events stored in plaintext before ADR 0025 (also done at
    /// every `serve`). Idempotent.
    SealHistory,
    /// Erase a deactivated user's personal data by crypto-shredding (ADR 0025): destroys their
    /// data key and appends `user.erased`; the views drop their data when they apply it (the
    /// projectors run in `nova serve`/`nova project`). Idempotent.
    EraseUser {
        /// The user's id.
        user_id: uuid::Uuid,
        /// Seconds to wait for the views to drop the data before scrubbing the database files.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

/// Minimum length of a configured JWT secret (HS256 wants ≥ 256 bits).
pub const MIN_JWT_SECRET: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("NOVA_JWT_SECRET is required when NOVA_DATABASE_URL points at PostgreSQL")]
    JwtSecretRequired,
    #[error("NOVA_JWT_SECRET must be at least {MIN_JWT_SECRET} characters")]
    JwtSecretTooShort,
    #[error("NOVA_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN} characters")]
    MetricsTokenTooShort,
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The JWT secret: configured, or (embedded mode only) generated once and kept in
/// `<data_dir>/jwt-secret` with owner-only permissions.
pub fn jwt_secret(
    db: &DbArgs,
    configured: Option<SecretString>,
) -> Result<SecretString, ConfigError> {
    use secrecy::ExposeSecret;
    if let Some(s) = configured {
        if s.expose_secret().len() < MIN_JWT_SECRET {
            return Err(ConfigError::JwtSecretTooShort);
        }
        return Ok(s);
    }
    if db.is_postgres() {
        return Err(ConfigError::JwtSecretRequired);
    }
    load_or_create_secret(&db.data_dir.join("jwt-secret"))
}

fn load_or_create_secret(path: &Path) -> Result<SecretString, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= MIN_JWT_SECRET => {
            return Ok(SecretString::from(s.trim().to_owned()))
        }
        Ok(_) | Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let secret = hex::encode(bytes);
    write_private(path, &secret).map_err(io)?;
    Ok(SecretString::from(secret))
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The configured metrics token, refused when too short to resist guessing.
pub fn metrics_token(
    configured: Option<SecretString>,
) -> Result<Option<SecretString>, ConfigError> {
    use secrecy::ExposeSecret;
    match configured {
        Some(t) if t.expose_secret().len() < MIN_METRICS_TOKEN => {
            Err(ConfigError::MetricsTokenTooShort)
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["nova", "serve"], args].concat()).unwrap();
        match cli.command {
            Command::Serve(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn rate_limits_default_to_100_a_minute_per_user_and_switch_off_at_0() {
        let q = nova_infra::limits::Quota::per_minute;
        let defaults = serve(&[]).rate_limits();
        assert_eq!(defaults.user, Some(q(100, 20)));
        assert_eq!(defaults.anonymous, Some(q(30, 10)));
        assert_eq!(defaults.redis_url, None);
        assert_eq!(defaults.redis_prefix, "nova:");
        let set = serve(&[
            "--rate-limit-per-minute",
            "0",
            "--rate-limit-anonymous-per-minute",
            "5",
            "--rate-limit-anonymous-burst",
            "2",
            "--redis-url",
            "redis://127.0.0.1:6379",
        ])
        .rate_limits();
        assert_eq!(set.user, None);
        assert_eq!(set.anonymous, Some(q(5, 2)));
        assert_eq!(set.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert!(Cli::try_parse_from(["nova", "serve", "--rate-limit-burst", "0"]).is_err());
    }
}
