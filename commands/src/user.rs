//! Command handlers of the `user` domain: registration, login, token refresh, logout, profile,
//! password, deactivation. Input is validated here (so the CLI and HTTP share the rules);
//! decisions are the aggregates'. Only this module (and its submodules) can create a
//! [`UserWriter`], so only it appends user events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_aggregates::user::{
    ClaimUsername, LoginAttempt, User, UserCommand, UserError, UserState, UsernameClaim,
    LOCKOUT_DURATION, LOCKOUT_THRESHOLD, LOCKOUT_WINDOW,
};
use nova_event_schemas::user::{username_claim_id, Role, UserEvent};
use nova_infra::limits::Limits;
use nova_infra::store::StoreError;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{
    CommandContext, CommandError, CommandStore, Done, Executed, Owned, Repository, MAX_ATTEMPTS,
};

pub mod credentials;
pub mod data_keys;
pub mod notifications;
pub mod vault;

use credentials::{hash_token, PasswordError, Passwords, RefreshToken, Tokens, Verification};
use vault::Vault;

/// The user domain's writer: the proof, required to append user events, that the code
/// appending them is this module's (or its submodules'). Its field is private, so no other
/// module can create one (ADR 0008).
pub struct UserWriter(());

impl Owned for UserEvent {
    type Writer = UserWriter;
}

/// Seals the personal data this domain's events stored in plaintext before ADR 0025 (run at
/// start, before any relay or projector reads the history; see `CommandStore::seal_history`).
pub async fn seal_history(
    store: &CommandStore,
    keys: &dyn nova_infra::personal::DataKeys,
) -> std::result::Result<u64, nova_infra::store::StoreError> {
    store.seal_history::<UserEvent>(&UserWriter(()), keys).await
}

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const STATUS_MAX: usize = 280;
pub const URL_MAX: usize = 2048;

/// The URLs a profile picture or a post's media may name: `http` or `https`, a host name (dot-
/// separated labels of letters, digits and inner hyphens, the last starting with a letter — no
/// IP literals, no user info), an optional port below 10000, then printable ASCII. Checked as
/// is by [`valid_url`] and published as the pattern of the OpenAPI document: what the document
/// calls a URL, the server accepts.
pub const URL_PATTERN: &str = concat!(
    "^https?://",
    "(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*",
    "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    "(?::[0-9]{1,4})?",
    "(?:[/?#][!-~]*)?$",
);

/// Whether `url` (already trimmed) is one [`URL_PATTERN`] admits and `url` parses.
pub fn valid_url(url: &str) -> bool {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(URL_PATTERN).unwrap_or_else(|e| unreachable!("URL_PATTERN: {e}"))
    });
    url.chars().count() <= URL_MAX
        && PATTERN.is_match(url)
        && url::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        })
}

/// Why a user command failed: the one command error, with the user domain's refusals.
pub type UserCommandError = CommandError<UserError>;

impl From<PasswordError> for UserCommandError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => CommandError::Busy,
            PasswordError::Failed(m) => CommandError::Internal(m),
        }
    }
}

type Result<T> = std::result::Result<T, UserCommandError>;

/// A successful login or refresh.
pub struct IssuedTokens {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in: i64,
    pub position: Option<i64>,
}

/// A verified access token whose session is still active.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub admin: bool,
    pub analyst: bool,
    /// Position of the user's latest event: a read of the caller's own data waits for the
    /// projection to reach it.
    pub last_position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or invalid access token")]
    InvalidToken,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct UserCommands {
    store: CommandStore,
    users: Repository<User>,
    claims: Repository<UsernameClaim>,
    vault: Vault,
    /// The user domain's data keys (ADR 0025): destroyed by erasure.
    data_keys: Arc<data_keys::DataKeyVault>,
    passwords: Passwords,
    tokens: Tokens,
    limits: Limits,
    gates: Arc<[Arc<tokio::sync::Mutex<()>>]>,
}

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Erasure {
    pub done: Done,
    /// False when the user had been erased before (nothing new was appended).
    pub erased_now: bool,
}

/// Failed logins for names without an active account (unknown or deactivated), so that they
/// lock exactly like active accounts and the lockout does not reveal which names are
/// registered. Kept in the shared limits store (`nova_infra::limits`: Redis when configured,
/// ADR 0022), so a restart or another API process does not reset them; the record is the
/// failure times (ms) of the name's SHA-256, never the name itself (a password typed into the
/// name field must not land in Redis).
fn unknown_name_key(name: &str) -> String {
    use sha2::Digest;
    format!(
        "login-failures:{}",
        hex::encode(sha2::Sha256::digest(name.to_lowercase().as_bytes()))
    )
}

/// Records a failure at `now` (ms) in `times`; returns the lock expiry (ms) if the name is
/// (now) locked — the same rule as `User`'s `failed_attempt`: the
/// [`LOCKOUT_THRESHOLD`]th failure within [`LOCKOUT_WINDOW`] locks for [`LOCKOUT_DURATION`],
/// and a locked name's attempts are not counted.
fn record_unknown_failure(times: &mut Vec<i64>, now: i64) -> Option<i64> {
    let duration = LOCKOUT_DURATION.num_milliseconds();
    if times.len() >= LOCKOUT_THRESHOLD {
        if let Some(until) = times.last().map(|t| t + duration).filter(|u| now < *u) {
            return Some(until);
        }
    }
    times.retain(|t| *t > now - LOCKOUT_WINDOW.num_milliseconds());
    times.push(now);
    if times.len() > LOCKOUT_THRESHOLD {
        times.drain(..times.len() - LOCKOUT_THRESHOLD);
    }
    (times.len() >= LOCKOUT_THRESHOLD).then_some(now + duration)
}

/// Striped per-user gates: a failed login's events are appended after the answer (see
/// [`UserCommands::login`]); the next login or password change of the same user waits at its
/// gate until that append is done, so that every decision sees every earlier failure.
const GATES: usize = 64;

fn gate_index(id: Uuid) -> usize {
    (id.as_u128() % GATES as u128) as usize
}

/// A partial profile update: `None` = unchanged, `Some(None)` = cleared.
#[derive(Debug, Default, Clone)]
pub struct ProfilePatch {
    pub display_name: Option<Option<String>>,
    pub status: Option<Option<String>>,
    pub profile_picture_url: Option<Option<String>>,
}

impl UserCommands {
    /// `vault` is the user domain's credentials table (ADR 0016).
    pub fn new(store: CommandStore, vault: Vault, passwords: Passwords, tokens: Tokens) -> Self {
        UserCommands {
            users: Repository::new(&store, UserWriter(())),
            claims: Repository::new(&store, UserWriter(())),
            store,
            data_keys: Arc::new(data_keys::DataKeyVault::new(vault.pool().clone())),
            vault,
            passwords,
            tokens,
            limits: Limits::in_process(),
            gates: (0..GATES).map(|_| Arc::default()).collect(),
        }
    }

    /// Uses `keys` (the one the event store seals with, so that an erasure also forgets the
    /// key that store cached) instead of a table handle of its own.
    pub fn with_data_keys(mut self, keys: Arc<data_keys::DataKeyVault>) -> Self {
        self.data_keys = keys;
        self
    }

    /// Keeps failed logins of unknown names in `limits` (shared between processes when it is
    /// Redis) instead of this process only.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// argon2 computations run so far by this handler's password hasher.
    pub fn argon2_runs(&self) -> u64 {
        self.passwords.argon2_runs()
    }

    /// Waits until no failed-login append of the user (or name) `id` is pending.
    async fn pass_gate(&self, id: Uuid) {
        drop(self.gates[gate_index(id)].lock().await);
    }

    /// Registers an account. The username claim and the user stream are appended in one
    /// transaction; a concurrent registration of the same name loses on the claim's version.
    pub async fn register(
        &self,
        ctx: &CommandContext,
        username: &str,
        password: SecretString,
        display_name: Option<String>,
    ) -> Result<(Uuid, i64)> {
        validate_username(username)?;
        validate_password("password", &password)?;
        let display_name = validate_optional_text("display_name", display_name, DISPLAY_NAME_MAX)?;
        let hash = self.passwords.hash(password).await?;
        self.register_with_hash(ctx, username, hash, false, display_name)
            .await
    }

    /// Imports an account from a legacy system whose hashes are unsalted SHA-256 hex. The
    /// first successful login replaces the hash with argon2id.
    pub async fn import_legacy(
        &self,
        ctx: &CommandContext,
        username: &str,
        sha256_hex: &str,
        display_name: Option<String>,
    ) -> Result<(Uuid, i64)> {
        validate_username(username)?;
        if !credentials::is_legacy_sha256(sha256_hex) {
            return Err(invalid(
                "password_hash",
                "must be 64 hex characters (SHA-256)",
            ));
        }
        self.register_with_hash(
            ctx,
            username,
            sha256_hex.to_ascii_lowercase(),
            true,
            display_name,
        )
        .await
    }

    /// Appends the claim and the user directly (two streams, one transaction), so it opens
    /// the `command` span that `Repository::execute` opens for other commands.
    #[tracing::instrument(name = "command", skip_all, fields(
        domain = "user",
        aggregate_type = User::NAME,
        aggregate_id = tracing::field::Empty,
        command = "register",
        request_id = ctx.request_id.as_deref(),
        correlation_id = %ctx.correlation_id,
    ))]
    async fn register_with_hash(
        &self,
        ctx: &CommandContext,
        username: &str,
        password_hash: String,
        legacy: bool,
        display_name: Option<String>,
    ) -> Result<(Uuid, i64)> {
        let user_id = Uuid::now_v7();
        tracing::Span::current().record("aggregate_id", tracing::field::display(user_id));
        let claim_id = username_claim_id(username);
        // Stored before the append that names it (see `vault`): a failed append leaves an
        // unnamed row, never an event naming a missing credential.
        let credential_id = self
            .vault
            .store_password(user_id, &password_hash, legacy)
            .await?;
        let now = Utc::now();
        let command_key = ctx.next_command_key();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                crate::backoff(attempt).await;
            }
            if let Some(original) = crate::idempotency::recorded(&self.store, &command_key).await? {
                return Ok(original);
            }
            let claim = self.claims.load(claim_id).await?;
            let claimed = UsernameClaim::handle_command(
                &claim.state,
                ClaimUsername {
                    username: username.to_owned(),
                    user_id,
                },
            )
            .map_err(UserCommandError::Refused)?;
            let registered = User::handle_command(
                &UserState::default(),
                UserCommand::Register {
                    user_id,
                    username: username.to_owned(),
                    display_name: display_name.clone(),
                    credential_id,
                    now,
                },
            )
            .map_err(UserCommandError::Refused)?;
            match self
                .store
                .append_keyed(
                    &UserWriter(()),
                    vec![
                        (claim_id, UsernameClaim::NAME, claim.version, claimed),
                        (user_id, User::NAME, 0, registered),
                    ],
                    ctx.metadata(),
                    command_key.clone(),
                )
                .await
            {
                Ok(appended) => {
                    tracing::debug!(position = appended.last_position, "command appended");
                    // A retry (same command key) answers the account its first run created.
                    let registered = crate::idempotency::registered_user(&appended);
                    return Ok((registered.unwrap_or(user_id), appended.last_position));
                }
                Err(StoreError::Conflict { .. }) => {
                    metrics::counter!("nova_command_conflict_retries_total",
                        "domain" => "user", "aggregate" => UsernameClaim::NAME)
                    .increment(1);
                    continue;
                }
                Err(e) => return Err(UserCommandError::Unavailable(e.to_string())),
            }
        }
        Err(UserCommandError::Conflict)
    }

    /// The user id a username belongs to, read from its claim (strongly consistent).
    pub async fn user_id_of(&self, username: &str) -> Result<Option<Uuid>> {
        let claim = self.claims.load(username_claim_id(username)).await?;
        Ok(claim.state.user_id)
    }

    /// Logs in. Unknown, deactivated and active names behave alike to a caller: one argon2
    /// verification, the same answers, the same lockout (5 failures in 15 minutes), and no
    /// store write before a failure is answered (an active account's failure is appended right
    /// after; see ADR 0011).
    pub async fn login(
        &self,
        ctx: &CommandContext,
        username: &str,
        password: SecretString,
    ) -> Result<IssuedTokens> {
        // Names and passwords that no account can have are refused before any hashing.
        if username.chars().count() > USERNAME_MAX {
            return Err(invalid(
                "username",
                format!("must be at most {USERNAME_MAX} characters"),
            ));
        }
        if password.expose_secret().chars().count() > PASSWORD_MAX {
            return Err(invalid(
                "password",
                format!("must be at most {PASSWORD_MAX} characters"),
            ));
        }
        let claim_id = username_claim_id(username);
        let user_id = self.claims.load(claim_id).await?.state.user_id;
        // Unknown names wait at a gate and read a (missing) stream just like real accounts.
        let stream = user_id.unwrap_or(claim_id);
        self.pass_gate(stream).await;
        let loaded = self.users.load(stream).await?;
        let now = Utc::now();
        if user_id.is_none() || loaded.state.deactivated || !loaded.state.exists() {
            let _ = self.passwords.verify(password, None).await?;
            return Err(self.unknown_name_failed(username, now).await);
        }
        let user_id = stream;
        let checked = loaded.state.credential_id;
        let stored = self.stored_password(checked).await?;
        let verification = self.passwords.verify(password.clone(), stored).await?;
        if verification == Verification::Mismatch {
            return Err(self.login_failed(ctx, user_id, &loaded.state, now).await);
        }
        let upgraded_credential = match verification {
            Verification::MatchLegacy => {
                let hash = self.passwords.hash(password).await?;
                Some(self.vault.store_password(user_id, &hash, false).await?)
            }
            _ => None,
        };
        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate(user_id, session_id);
        let refresh_token_id = self
            .vault
            .store_refresh_token(user_id, &refresh.hash())
            .await?;
        let expires_at = now + self.tokens.refresh_ttl;
        let result = self
            .users
            .execute(user_id, ctx, |state| {
                Ok(UserCommand::Login(LoginAttempt {
                    // A password change between verification and append invalidates the check.
                    password_ok: state.credential_id == checked,
                    upgraded_credential,
                    session_id,
                    refresh_token_id,
                    expires_at,
                    now,
                }))
            })
            .await;
        let executed = match result {
            Err(CommandError::Refused(UserError::Locked { until })) => {
                return Err(UserCommandError::Refused(UserError::Locked { until }))
            }
            Err(CommandError::Refused(UserError::Deactivated | UserError::NotFound)) => {
                return Err(UserCommandError::Refused(UserError::InvalidCredentials))
            }
            other => other?,
        };
        if !started_session(&executed, session_id) {
            if let Some(until) = executed.state.locked_until.filter(|u| now < *u) {
                return Err(UserCommandError::Refused(UserError::Locked { until }));
            }
            return Err(UserCommandError::Refused(UserError::InvalidCredentials));
        }
        self.issued(user_id, session_id, refresh, now, executed.position())
    }

    /// A failed login of a name without an active account: counted in the shared limits
    /// store.
    async fn unknown_name_failed(&self, username: &str, now: DateTime<Utc>) -> UserCommandError {
        let now_ms = now.timestamp_millis();
        let ttl = (LOCKOUT_WINDOW + LOCKOUT_DURATION)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1800));
        let locked = self
            .limits
            .update(&unknown_name_key(username), ttl, now_ms, |stored| {
                let mut times: Vec<i64> = stored
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default();
                let locked = record_unknown_failure(&mut times, now_ms);
                (serde_json::to_string(&times).unwrap_or_default(), locked)
            })
            .await;
        match locked.and_then(DateTime::from_timestamp_millis) {
            Some(until) => UserCommandError::Refused(UserError::Locked { until }),
            None => UserCommandError::Refused(UserError::InvalidCredentials),
        }
    }

    /// A wrong password for an active account. The answer is decided on the loaded state; the
    /// failure (and lock) events are appended in the background, holding the user's gate so
    /// that the next attempt decides on them. Appending before answering would make existing
    /// names measurably slower than unknown ones.
    async fn login_failed(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        state: &UserState,
        now: DateTime<Utc>,
    ) -> UserCommandError {
        let attempt = |now| {
            UserCommand::Login(LoginAttempt {
                password_ok: false,
                upgraded_credential: None,
                session_id: Uuid::nil(),
                refresh_token_id: Uuid::nil(),
                expires_at: now,
                now,
            })
        };
        let answer = match User::handle_command(state, attempt(now)) {
            Err(UserError::Locked { until }) => {
                return UserCommandError::Refused(UserError::Locked { until })
            }
            Err(_) => return UserCommandError::Refused(UserError::InvalidCredentials),
            Ok(events) => events
                .iter()
                .find_map(|e| match e {
                    UserEvent::Locked(l) => Some(UserCommandError::Refused(UserError::Locked {
                        until: l.locked_until,
                    })),
                    _ => None,
                })
                .unwrap_or(UserCommandError::Refused(UserError::InvalidCredentials)),
        };
        let gate = self.gates[gate_index(user_id)].clone().lock_owned().await;
        let users = self.users.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _gate = gate;
            if let Err(e) = users.execute(user_id, &ctx, |_| Ok(attempt(now))).await {
                tracing::warn!(%user_id, error = %e, "failed login not recorded");
            }
        });
        answer
    }

    pub async fn refresh(&self, ctx: &CommandContext, token: &str) -> Result<IssuedTokens> {
        let (user_id, session_id) = RefreshToken::parse(token)
            .ok_or(UserCommandError::Refused(UserError::InvalidRefreshToken))?;
        // A token whose hash the credentials table does not know for this user was never
        // issued: refused before anything is stored.
        let presented = self
            .vault
            .refresh_token(user_id, &hash_token(token))
            .await?
            .ok_or(UserCommandError::Refused(UserError::InvalidRefreshToken))?;
        let next = RefreshToken::generate(user_id, session_id);
        let next_id = self
            .vault
            .store_refresh_token(user_id, &next.hash())
            .await?;
        let now = Utc::now();
        let expires_at = now + self.tokens.refresh_ttl;
        let executed = self
            .users
            .execute(user_id, ctx, |_| {
                Ok(UserCommand::Refresh {
                    session_id,
                    presented_token: Some(presented),
                    new_token: next_id,
                    expires_at,
                    now,
                })
            })
            .await
            .map_err(|e| match e {
                CommandError::Refused(
                    UserError::InvalidRefreshToken | UserError::NotFound | UserError::Deactivated,
                ) => UserCommandError::Refused(UserError::InvalidRefreshToken),
                other => other,
            })?;
        let reused = executed
            .events
            .iter()
            .any(|e| matches!(e, UserEvent::SessionRevoked(_)));
        if reused {
            return Err(UserCommandError::Refused(UserError::RefreshTokenReused));
        }
        self.issued(user_id, session_id, next, now, executed.position())
    }

    fn issued(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        refresh: RefreshToken,
        now: DateTime<Utc>,
        position: Option<i64>,
    ) -> Result<IssuedTokens> {
        let access_token = self
            .tokens
            .issue_access(user_id, session_id, now)
            .map_err(UserCommandError::Internal)?;
        Ok(IssuedTokens {
            user_id,
            session_id,
            access_token,
            refresh_token: refresh.token,
            expires_in: self.tokens.access_ttl.num_seconds(),
            position,
        })
    }

    /// The user a validly signed, unexpired access token names (no session check).
    pub fn token_subject(&self, token: &str) -> Option<Uuid> {
        self.tokens.verify_access(token).map(|c| c.sub)
    }

    /// Verifies an access token and that its session is still active (not logged out,
    /// revoked by a password change, or ended by deactivation).
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Authenticated, AuthError> {
        let claims = self
            .tokens
            .verify_access(token)
            .ok_or(AuthError::InvalidToken)?;
        let loaded = self
            .users
            .load_shared(claims.sub)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if !loaded.state.session_active(claims.sid, Utc::now()) {
            return Err(AuthError::InvalidToken);
        }
        Ok(Authenticated {
            user_id: claims.sub,
            session_id: claims.sid,
            admin: loaded.state.roles.contains(&Role::Admin),
            analyst: loaded.state.roles.contains(&Role::Analyst),
            last_position: loaded.last_position,
        })
    }

    pub async fn logout(&self, ctx: &CommandContext, who: Authenticated) -> Result<Done> {
        let e = self
            .users
            .execute(who.user_id, ctx, |_| {
                Ok(UserCommand::Logout {
                    session_id: who.session_id,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    pub async fn update_profile(
        &self,
        ctx: &CommandContext,
        who: Authenticated,
        patch: ProfilePatch,
    ) -> Result<(UserState, Done)> {
        let patch = ProfilePatch {
            display_name: patch
                .display_name
                .map(|v| validate_optional_text("display_name", v, DISPLAY_NAME_MAX))
                .transpose()?,
            status: patch
                .status
                .map(|v| validate_optional_text("status", v, STATUS_MAX))
                .transpose()?,
            profile_picture_url: patch
                .profile_picture_url
                .map(validate_picture_url)
                .transpose()?,
        };
        let e = self
            .users
            .execute(who.user_id, ctx, |_| {
                Ok(UserCommand::UpdateProfile {
                    display_name: patch.display_name.clone(),
                    status: patch.status.clone(),
                    profile_picture_url: patch.profile_picture_url.clone(),
                    // Taken per attempt, after the load: a retried update is stamped later
                    // than the one it lost to, so `updated_at` never goes backwards.
                    now: Utc::now(),
                })
            })
            .await?;
        let done = e.done();
        Ok((e.state, done))
    }

    /// Changes the password. A wrong current password counts toward the login lockout; a
    /// locked account's change is refused (429) even with the right password.
    pub async fn change_password(
        &self,
        ctx: &CommandContext,
        who: Authenticated,
        current: SecretString,
        new: SecretString,
    ) -> Result<Done> {
        validate_password("new_password", &new)?;
        if current.expose_secret().chars().count() > PASSWORD_MAX {
            return Err(invalid(
                "current_password",
                format!("must be at most {PASSWORD_MAX} characters"),
            ));
        }
        self.pass_gate(who.user_id).await;
        let loaded = self.users.load(who.user_id).await?;
        let now = Utc::now();
        if let Some(until) = loaded.state.locked_until.filter(|u| now < *u) {
            return Err(UserCommandError::Refused(UserError::Locked { until }));
        }
        let checked = loaded.state.credential_id;
        let stored = self.stored_password(checked).await?;
        let ok = self.passwords.verify(current, stored).await? != Verification::Mismatch;
        if !ok {
            let e = self
                .users
                .execute(who.user_id, ctx, |_| {
                    Ok(UserCommand::PasswordCheckFailed { now: Utc::now() })
                })
                .await?;
            if let Some(until) = e.state.locked_until.filter(|u| Utc::now() < *u) {
                return Err(UserCommandError::Refused(UserError::Locked { until }));
            }
            return Err(UserCommandError::Refused(UserError::WrongPassword));
        }
        let new_hash = self.passwords.hash(new).await?;
        let new_credential_id = self
            .vault
            .store_password(who.user_id, &new_hash, false)
            .await?;
        let e = self
            .users
            .execute(who.user_id, ctx, |state| {
                Ok(UserCommand::ChangePassword {
                    current_password_ok: state.credential_id == checked,
                    new_credential_id,
                    keep_session: who.session_id,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    pub async fn deactivate(&self, ctx: &CommandContext, who: Authenticated) -> Result<Done> {
        let e = self
            .users
            .execute(who.user_id, ctx, |_| {
                Ok(UserCommand::Deactivate { now: Utc::now() })
            })
            .await?;
        Ok(e.done())
    }

    /// Erases a deactivated user's personal data (ADR 0025): destroys their data key, then
    /// appends `user.erased`, on which every view drops what it derived from them. The key goes
    /// first: a crash in between leaves the key destroyed and an erasure to repeat, never an
    /// `erased` event while the key still opens the history. Unknown user: refused `NotFound`;
    /// an active one: `NotDeactivated`; erased before: nothing new (idempotent).
    pub async fn erase(&self, ctx: &CommandContext, user_id: Uuid) -> Result<Erasure> {
        let loaded = self.users.load(user_id).await?;
        if !loaded.state.exists() {
            return Err(UserCommandError::Refused(UserError::NotFound));
        }
        if !loaded.state.deactivated {
            return Err(UserCommandError::Refused(UserError::NotDeactivated));
        }
        self.data_keys.shred(user_id).await?;
        let e = self
            .users
            .execute(user_id, ctx, |_| Ok(UserCommand::Erase { now: Utc::now() }))
            .await?;
        Ok(Erasure {
            erased_now: e.appended.is_some(),
            done: Done {
                version: e.version,
                position: e.position().or(Some(loaded.last_position)),
            },
        })
    }

    /// Grants a role to the user with `username` (operator command, `nova admin grant-role`).
    pub async fn grant_role(
        &self,
        ctx: &CommandContext,
        username: &str,
        role: Role,
    ) -> Result<Done> {
        let user_id = self
            .user_id_of(username)
            .await?
            .ok_or(UserCommandError::Refused(UserError::NotFound))?;
        let e = self
            .users
            .execute(user_id, ctx, |_| {
                Ok(UserCommand::GrantRole {
                    role,
                    now: Utc::now(),
                })
            })
            .await?;
        Ok(e.done())
    }

    /// The password hash a user's credential names, for verification only (`None`: no such
    /// credential, verified against a dummy like an unknown user).
    async fn stored_password(&self, credential: Option<Uuid>) -> Result<Option<String>> {
        let Some(id) = credential else {
            return Ok(None);
        };
        Ok(self
            .vault
            .password_hash(id)
            .await?
            .map(|h| h.expose_secret().to_owned()))
    }

    /// Moves secrets still carried by stored events into the credentials table (ADR 0016;
    /// see [`vault::upgrade_credentials`]).
    pub async fn upgrade_credentials(&self) -> Result<vault::Upgraded> {
        vault::upgrade_credentials(&self.store, &self.vault).await
    }

    /// The current state of a user, for `/users/me` fallbacks and analysts.
    pub async fn state(&self, user_id: Uuid) -> Result<UserState> {
        Ok(self.users.load(user_id).await?.state)
    }
}

fn started_session(executed: &Executed<User>, session_id: Uuid) -> bool {
    executed
        .events
        .iter()
        .any(|e| matches!(e, UserEvent::SessionStarted(s) if s.session_id == session_id))
}

fn invalid(field: &'static str, message: impl Into<String>) -> UserCommandError {
    UserCommandError::Invalid {
        field,
        message: message.into(),
    }
}

pub fn validate_username(username: &str) -> Result<()> {
    let len = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(invalid(
            "username",
            format!("must be {USERNAME_MIN} to {USERNAME_MAX} characters"),
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(
            "username",
            "may contain only letters a-z, digits and underscores",
        ));
    }
    Ok(())
}

fn validate_password(field: &'static str, password: &SecretString) -> Result<()> {
    let len = password.expose_secret().chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(invalid(
            field,
            format!("must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

fn validate_optional_text(
    field: &'static str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>> {
    let Some(v) = value else { return Ok(None) };
    // As sent: the OpenAPI document's `maxLength` counts the white space the trim removes.
    if v.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    let v = v.trim().to_owned();
    if v.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err(invalid(
            field,
            "must not contain control or invisible formatting characters",
        ));
    }
    Ok(if v.is_empty() { None } else { Some(v) })
}

/// Unicode format characters (general category Cf: zero-width spaces and joiners,
/// bidirectional overrides and isolates, the byte-order mark, tags …) and the line and
/// paragraph separators: invisible in a rendered name, they let one name pass for another.
pub fn is_format_char(c: char) -> bool {
    FORMAT_CHARS
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The ranges [`is_format_char`] matches; the OpenAPI document's patterns are built from the
/// same list, so what it calls valid is what the validator accepts.
pub const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn validate_picture_url(value: Option<String>) -> Result<Option<String>> {
    let Some(v) = validate_optional_text("profile_picture_url", value, URL_MAX)? else {
        return Ok(None);
    };
    // No credentials in the URL: they would be shown to everyone who reads the profile.
    let ok = valid_url(&v);
    if !ok {
        return Err(invalid("profile_picture_url", "must be an http(s) URL"));
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod limits {
    use super::*;

    #[test]
    fn unknown_names_lock_like_accounts() {
        let mut times = Vec::new();
        let minute = 60_000;
        for i in 0..LOCKOUT_THRESHOLD as i64 - 1 {
            assert_eq!(record_unknown_failure(&mut times, i * minute), None);
        }
        let fifth = (LOCKOUT_THRESHOLD as i64 - 1) * minute;
        let until = fifth + LOCKOUT_DURATION.num_milliseconds();
        assert_eq!(record_unknown_failure(&mut times, fifth), Some(until));
        // Locked: attempts are answered with the same expiry and not counted.
        assert_eq!(record_unknown_failure(&mut times, until - 1), Some(until));
        assert_eq!(times.len(), LOCKOUT_THRESHOLD);
        // After the lock the window has moved past every failure.
        assert_eq!(record_unknown_failure(&mut times, until), None);
        assert_eq!(times, [until]);
        // Failures outside the window do not count.
        let mut spread = Vec::new();
        for i in 0..20 {
            assert_eq!(record_unknown_failure(&mut spread, i * 16 * minute), None);
        }
        assert_eq!(unknown_name_key("Alice"), unknown_name_key("alice"));
        assert!(!unknown_name_key("alice").contains("alice"));
    }

    #[test]
    fn format_and_control_characters_are_refused_in_profile_text() {
        for bad in [
            "Ali\u{200b}ce\u{202e}gnp.exe",
            "\u{200e}",
            "\u{2067}x",
            "\u{feff}",
            "a\u{ad}b",
            "\u{e0001}",
            "\u{1b}[31m",
        ] {
            assert!(
                validate_optional_text("display_name", Some(bad.into()), 64).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_optional_text("status", Some(" Zoë 🌱 שלום ".into()), 64).unwrap(),
            Some("Zoë 🌱 שלום".into())
        );
    }
}
