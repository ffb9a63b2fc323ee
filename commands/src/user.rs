//! Command handlers of the `user` domain: registration, login, token refresh, logout, profile,
//! password, deactivation. Input is validated here (so the CLI and HTTP share the rules);
//! decisions are the aggregates'. Only this module (and its submodules) can create a
//! [`UserWriter`], so only it appends user events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use esrs::Aggregate;
use nova_aggregates::user::{
    ClaimUsername, LoginAttempt, User, UserCommand, UserError, UserState, UsernameClaim,
    LOCKOUT_DURATION, LOCKOUT_THRESHOLD, LOCKOUT_WINDOW,
};
use nova_event_schemas::user::{username_claim_id, Role, UserEvent};
use nova_infra::store::StoreError;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{
    CommandContext, CommandError, CommandStore, Done, Executed, Owned, Repository, MAX_ATTEMPTS,
};

pub mod credentials;
pub mod notifications;

use credentials::{hash_token, Passwords, RefreshToken, Tokens, Verification};

/// The user domain's writer: the proof, required to append user events, that the code
/// appending them is this module's (or its submodules'). Its field is private, so no other
/// module can create one (ADR 0008).
pub struct UserWriter(());

impl Owned for UserEvent {
    type Writer = UserWriter;
}

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const STATUS_MAX: usize = 280;
pub const URL_MAX: usize = 2048;

/// Why a user command failed, in terms the HTTP edge maps once.
#[derive(Debug, thiserror::Error)]
pub enum UserCommandError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Unknown user and wrong password are indistinguishable on purpose.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many failed logins; try again later")]
    Locked { until: DateTime<Utc> },
    #[error("the refresh token is invalid or expired")]
    InvalidRefreshToken,
    #[error("the refresh token was already used; the session is revoked")]
    RefreshTokenReused,
    #[error(transparent)]
    Domain(UserError),
    #[error("the account changed concurrently too often; retry")]
    Conflict,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CommandError<UserError>> for UserCommandError {
    fn from(e: CommandError<UserError>) -> Self {
        match e {
            CommandError::Domain(d) => UserCommandError::Domain(d),
            CommandError::Conflict => UserCommandError::Conflict,
            CommandError::Store(StoreError::Conflict { .. }) => UserCommandError::Conflict,
            CommandError::Store(s) => UserCommandError::Unavailable(s.to_string()),
            CommandError::Corrupt(m) => UserCommandError::Internal(m),
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
    passwords: Passwords,
    tokens: Tokens,
    unknown: Arc<Mutex<UnknownNames>>,
}

/// Failed logins for usernames that do not exist, so that they lock exactly like real accounts
/// and the lockout does not reveal which names are registered. In memory and bounded: a
/// process restart forgets them (real accounts' failures are events and are not forgotten).
#[derive(Default)]
struct UnknownNames {
    failures: HashMap<String, Vec<DateTime<Utc>>>,
}

const UNKNOWN_NAMES_MAX: usize = 10_000;

impl UnknownNames {
    /// Records a failure; returns the lock expiry if the name is (now) locked.
    fn fail(&mut self, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(until) = self.locked_until(name, now) {
            return Some(until);
        }
        if self.failures.len() >= UNKNOWN_NAMES_MAX {
            let cutoff = now - LOCKOUT_WINDOW - LOCKOUT_DURATION;
            self.failures
                .retain(|_, times| times.last().is_some_and(|t| *t > cutoff));
            if self.failures.len() >= UNKNOWN_NAMES_MAX {
                self.failures.clear();
            }
        }
        let times = self.failures.entry(name.to_owned()).or_default();
        times.retain(|t| *t > now - LOCKOUT_WINDOW);
        times.push(now);
        (times.len() >= LOCKOUT_THRESHOLD).then(|| now + LOCKOUT_DURATION)
    }

    fn locked_until(&self, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let times = self.failures.get(name)?;
        if times.len() < LOCKOUT_THRESHOLD {
            return None;
        }
        let until = *times.last()? + LOCKOUT_DURATION;
        (now < until).then_some(until)
    }
}

/// A partial profile update: `None` = unchanged, `Some(None)` = cleared.
#[derive(Debug, Default, Clone)]
pub struct ProfilePatch {
    pub display_name: Option<Option<String>>,
    pub status: Option<Option<String>>,
    pub profile_picture_url: Option<Option<String>>,
}

impl UserCommands {
    pub fn new(store: CommandStore, passwords: Passwords, tokens: Tokens) -> Self {
        UserCommands {
            users: Repository::new(&store, UserWriter(())),
            claims: Repository::new(&store, UserWriter(())),
            store,
            passwords,
            tokens,
            unknown: Arc::default(),
        }
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
        let hash = self
            .passwords
            .hash(password)
            .await
            .map_err(UserCommandError::Internal)?;
        self.register_with_hash(ctx, username, hash, display_name)
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
        self.register_with_hash(ctx, username, sha256_hex.to_ascii_lowercase(), display_name)
            .await
    }

    async fn register_with_hash(
        &self,
        ctx: &CommandContext,
        username: &str,
        password_hash: String,
        display_name: Option<String>,
    ) -> Result<(Uuid, i64)> {
        let user_id = Uuid::now_v7();
        let claim_id = username_claim_id(username);
        let now = Utc::now();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                crate::backoff(attempt).await;
            }
            let claim = self.claims.load(claim_id).await?;
            let claimed = UsernameClaim::handle_command(
                &claim.state,
                ClaimUsername {
                    username: username.to_owned(),
                    user_id,
                },
            )
            .map_err(UserCommandError::Domain)?;
            let registered = User::handle_command(
                &UserState::default(),
                UserCommand::Register {
                    user_id,
                    username: username.to_owned(),
                    display_name: display_name.clone(),
                    password_hash: password_hash.clone(),
                    now,
                },
            )
            .map_err(UserCommandError::Domain)?;
            match self
                .store
                .append(
                    &UserWriter(()),
                    vec![
                        (claim_id, UsernameClaim::NAME, claim.version, claimed),
                        (user_id, User::NAME, 0, registered),
                    ],
                    ctx.metadata(),
                )
                .await
            {
                Ok(appended) => return Ok((user_id, appended.last_position)),
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

    pub async fn login(
        &self,
        ctx: &CommandContext,
        username: &str,
        password: SecretString,
    ) -> Result<IssuedTokens> {
        let user_id = if username.len() <= USERNAME_MAX {
            self.user_id_of(username).await?
        } else {
            None
        };
        let Some(user_id) = user_id else {
            // Same work, same answers (including the lockout) as a wrong password.
            let _ = self.passwords.verify(password, None).await;
            let name = username.to_lowercase();
            let locked = self
                .unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fail(&name, Utc::now());
            return Err(match locked {
                Some(until) => UserCommandError::Locked { until },
                None => UserCommandError::InvalidCredentials,
            });
        };
        let loaded = self.users.load(user_id).await?;
        let now = Utc::now();
        if loaded.state.deactivated {
            let _ = self.passwords.verify(password, None).await;
            return Err(UserCommandError::InvalidCredentials);
        }
        let checked_hash = loaded.state.password_hash.clone();
        let verification = self
            .passwords
            .verify(password.clone(), Some(checked_hash.clone()))
            .await;
        let upgraded_hash = match verification {
            Verification::MatchLegacy => Some(
                self.passwords
                    .hash(password)
                    .await
                    .map_err(UserCommandError::Internal)?,
            ),
            _ => None,
        };
        let session_id = Uuid::now_v7();
        let refresh = RefreshToken::generate(user_id, session_id);
        let refresh_hash = refresh.hash();
        let expires_at = now + self.tokens.refresh_ttl;
        let result = self
            .users
            .execute(user_id, ctx, |state| {
                Ok(UserCommand::Login(LoginAttempt {
                    // A password change between verification and append invalidates the check.
                    password_ok: verification != Verification::Mismatch
                        && state.password_hash == checked_hash,
                    upgraded_hash: upgraded_hash.clone(),
                    session_id,
                    refresh_token_hash: refresh_hash.clone(),
                    expires_at,
                    now,
                }))
            })
            .await;
        let executed = match result {
            Err(CommandError::Domain(UserError::Locked { until })) => {
                return Err(UserCommandError::Locked { until })
            }
            Err(CommandError::Domain(UserError::Deactivated | UserError::NotFound)) => {
                return Err(UserCommandError::InvalidCredentials)
            }
            other => other?,
        };
        if !started_session(&executed, session_id) {
            if let Some(until) = executed.state.locked_until.filter(|u| now < *u) {
                return Err(UserCommandError::Locked { until });
            }
            return Err(UserCommandError::InvalidCredentials);
        }
        self.issued(user_id, session_id, refresh, now, executed.position())
    }

    pub async fn refresh(&self, ctx: &CommandContext, token: &str) -> Result<IssuedTokens> {
        let (user_id, session_id) =
            RefreshToken::parse(token).ok_or(UserCommandError::InvalidRefreshToken)?;
        let presented = hash_token(token);
        let next = RefreshToken::generate(user_id, session_id);
        let next_hash = next.hash();
        let now = Utc::now();
        let expires_at = now + self.tokens.refresh_ttl;
        let executed = self
            .users
            .execute(user_id, ctx, |_| {
                Ok(UserCommand::Refresh {
                    session_id,
                    presented_token_hash: presented.clone(),
                    new_token_hash: next_hash.clone(),
                    expires_at,
                    now,
                })
            })
            .await
            .map_err(|e| match e {
                CommandError::Domain(
                    UserError::InvalidRefreshToken | UserError::NotFound | UserError::Deactivated,
                ) => UserCommandError::InvalidRefreshToken,
                other => other.into(),
            })?;
        let reused = executed
            .events
            .iter()
            .any(|e| matches!(e, UserEvent::SessionRevoked(_)));
        if reused {
            return Err(UserCommandError::RefreshTokenReused);
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
            .load(claims.sub)
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
        let loaded = self.users.load(who.user_id).await?;
        let checked_hash = loaded.state.password_hash.clone();
        let ok = self
            .passwords
            .verify(current, Some(checked_hash.clone()))
            .await
            != Verification::Mismatch;
        let new_hash = self
            .passwords
            .hash(new)
            .await
            .map_err(UserCommandError::Internal)?;
        let e = self
            .users
            .execute(who.user_id, ctx, |state| {
                Ok(UserCommand::ChangePassword {
                    current_password_ok: ok && state.password_hash == checked_hash,
                    new_password_hash: new_hash.clone(),
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
            .ok_or(UserCommandError::Domain(UserError::NotFound))?;
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
    let v = v.trim().to_owned();
    if v.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(if v.is_empty() { None } else { Some(v) })
}

fn validate_picture_url(value: Option<String>) -> Result<Option<String>> {
    let Some(v) = validate_optional_text("profile_picture_url", value, URL_MAX)? else {
        return Ok(None);
    };
    // No credentials in the URL: they would be shown to everyone who reads the profile.
    let ok = url::Url::parse(&v).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    });
    if !ok {
        return Err(invalid("profile_picture_url", "must be an http(s) URL"));
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests;
