//! The `user` domain: identity, credentials and sessions.
//!
//! Two aggregates: [`User`] (one per account) and [`UsernameClaim`] (one per lower-cased
//! username, id from `username_claim_id`). Registration appends to both in one transaction, so
//! two concurrent registrations of the same name race on version 0 of the claim and exactly one
//! wins — uniqueness without a unique index on a read model.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use esrs::Aggregate;
use nova_event_schemas::personal::ERASED;
use nova_event_schemas::user::*;
use uuid::Uuid;

use crate::CommandName;

/// The `aggregate_type` of every aggregate of the `user` domain (listed by `nova boundaries`).
pub const AGGREGATE_TYPES: &[&str] = &[
    <User as Aggregate>::NAME,
    <UsernameClaim as Aggregate>::NAME,
];

/// Failed logins that lock an account, within [`LOCKOUT_WINDOW`].
pub const LOCKOUT_THRESHOLD: usize = 5;
pub const LOCKOUT_WINDOW: Duration = Duration::minutes(15);
pub const LOCKOUT_DURATION: Duration = Duration::minutes(15);

/// Rotated-away refresh tokens kept per live session for reuse detection: a copy of a token is
/// recognised as reused while the session has been refreshed fewer than this many times since;
/// an older copy is merely invalid.
pub const RETIRED_TOKENS_KEPT: usize = 32;

/// Why the user domain refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the username is already taken")]
    UsernameTaken,
    #[error("the user already exists")]
    AlreadyRegistered,
    #[error("no such user")]
    NotFound,
    #[error("the account is deactivated")]
    Deactivated,
    /// Erasure is for deactivated accounts only (ADR 0025).
    #[error("the account is active; only a deactivated account can be erased")]
    NotDeactivated,
    #[error("the account is locked after too many failed logins")]
    Locked { until: DateTime<Utc> },
    #[error("the refresh token is invalid or expired")]
    InvalidRefreshToken,
    #[error("the session is not active")]
    SessionInactive,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the password hash was not produced by the server")]
    InvalidPasswordHash,
    #[error("the session id is already in use")]
    SessionIdInUse,
    /// Unknown user and wrong password are indistinguishable on purpose (decided by the
    /// command handler, which also hides which of the two it was).
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("the refresh token was already used; the session is revoked")]
    RefreshTokenReused,
    /// A read marker names a notification the caller does not have (checked by the command
    /// handler against the notification view).
    #[error("no such notification")]
    NotificationNotFound,
}

/// A user session: one refresh-token family. Tokens are known by their ids; their hashes are
/// in the user domain's credentials table, never in events or states (ADR 0016).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// The token that refreshes the session (`None` once revoked).
    pub current_token: Option<Uuid>,
    /// Tokens already rotated away; presenting one of them again means the token leaked, and
    /// the whole session is revoked. Only the last [`RETIRED_TOKENS_KEPT`].
    pub retired_tokens: RetiredTokens,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

/// The most recently retired refresh tokens of a session, oldest first, at most
/// [`RETIRED_TOKENS_KEPT`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetiredTokens(VecDeque<Uuid>);

impl RetiredTokens {
    pub fn contains(&self, token: Uuid) -> bool {
        self.0.contains(&token)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn retire(&mut self, token: Uuid) {
        if self.0.len() >= RETIRED_TOKENS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(token);
    }
}

/// A user as its events leave it. Serializable (for `GET /v1/aggregates/...`): it holds no
/// secret, only the ids of credentials kept in the credentials table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserState {
    pub user_id: Option<Uuid>,
    pub username: String,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    /// The current password credential (its hash is in the credentials table).
    pub credential_id: Option<Uuid>,
    pub registered_at: Option<DateTime<Utc>>,
    pub deactivated: bool,
    /// The user's personal data was erased (ADR 0025): their personal fields read as erased.
    pub erased: bool,
    /// Failed logins since the last success or lock.
    pub recent_failures: Vec<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    /// Sessions not yet expired as of the user's latest session event (revoked ones keep only
    /// their id and expiry, so that the id cannot be started again).
    pub sessions: BTreeMap<Uuid, Session>,
    pub roles: BTreeSet<Role>,
    /// Notification kinds the user switched off.
    pub notifications_disabled: BTreeSet<NotificationKind>,
    /// Read marker of the notification list: (created_at, id) of the last read notification.
    pub notifications_read_up_to: Option<(DateTime<Utc>, Uuid)>,
}

impl UserState {
    pub fn exists(&self) -> bool {
        self.user_id.is_some()
    }

    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// A session authorises requests while it is neither revoked nor expired and the account
    /// is active.
    pub fn session_active(&self, session_id: Uuid, now: DateTime<Utc>) -> bool {
        !self.deactivated
            && self
                .sessions
                .get(&session_id)
                .is_some_and(|s| !s.revoked && now < s.expires_at)
    }

    /// Drops sessions that expired before `now` (the time of a session event): they can
    /// neither refresh nor authorise, and session ids are never reused.
    fn forget_expired_sessions(&mut self, now: DateTime<Utc>) {
        self.sessions.retain(|_, s| now < s.expires_at);
    }

    fn active_sessions(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.revoked)
            .map(|(id, _)| *id)
    }
}

/// The outcome of checking a password, computed by the command handler (argon2 is slow and
/// not pure), together with everything a new session needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginAttempt {
    pub password_ok: bool,
    /// Set when the stored hash is a legacy one that matched: the credential holding its
    /// argon2id replacement.
    pub upgraded_credential: Option<Uuid>,
    pub session_id: Uuid,
    /// The new session's refresh token, stored by the handler in the credentials table.
    pub refresh_token_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        username: String,
        display_name: Option<String>,
        /// The password credential, stored by the handler in the credentials table.
        credential_id: Uuid,
        now: DateTime<Utc>,
    },
    Login(LoginAttempt),
    Refresh {
        session_id: Uuid,
        /// The id of the presented token, `None` when its hash is unknown to the credentials
        /// table.
        presented_token: Option<Uuid>,
        new_token: Uuid,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Logout {
        session_id: Uuid,
        now: DateTime<Utc>,
    },
    /// `None` leaves a field as it is; `Some(None)` clears it.
    UpdateProfile {
        display_name: Option<Option<String>>,
        status: Option<Option<String>>,
        profile_picture_url: Option<Option<String>>,
        now: DateTime<Utc>,
    },
    /// Refused while the account is locked, like a login.
    ChangePassword {
        current_password_ok: bool,
        new_credential_id: Uuid,
        keep_session: Uuid,
        now: DateTime<Utc>,
    },
    /// A wrong current password on a password change: counts toward the same lockout as a
    /// failed login (a stolen access token must not allow unlimited guessing).
    PasswordCheckFailed {
        now: DateTime<Utc>,
    },
    Deactivate {
        now: DateTime<Utc>,
    },
    /// Erase a deactivated user's personal data (their data key is destroyed by the handler
    /// first, ADR 0025); a second erasure appends nothing.
    Erase {
        now: DateTime<Utc>,
    },
    GrantRole {
        role: Role,
        now: DateTime<Utc>,
    },
    /// Replaces the set of notification kinds that are off.
    SetNotificationPreferences {
        disabled: BTreeSet<NotificationKind>,
        now: DateTime<Utc>,
    },
    /// Moves the read marker forward to `up_to` (never backwards). `up_to_created_at` was looked
    /// up in the notification view by the command handler.
    MarkNotificationsRead {
        up_to: Uuid,
        up_to_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
}

impl CommandName for UserCommand {
    fn name(&self) -> &'static str {
        match self {
            UserCommand::Register { .. } => "register",
            UserCommand::Login(..) => "login",
            UserCommand::Refresh { .. } => "refresh",
            UserCommand::Logout { .. } => "logout",
            UserCommand::UpdateProfile { .. } => "update_profile",
            UserCommand::ChangePassword { .. } => "change_password",
            UserCommand::PasswordCheckFailed { .. } => "password_check_failed",
            UserCommand::Deactivate { .. } => "deactivate",
            UserCommand::Erase { .. } => "erase",
            UserCommand::GrantRole { .. } => "grant_role",
            UserCommand::SetNotificationPreferences { .. } => "set_notification_preferences",
            UserCommand::MarkNotificationsRead { .. } => "mark_notifications_read",
        }
    }
}

pub struct User;

impl Aggregate for User {
    const NAME: &'static str = "user";
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn handle_command(
        state: &UserState,
        command: UserCommand,
    ) -> Result<Vec<UserEvent>, UserError> {
        if let UserCommand::Register {
            user_id,
            username,
            display_name,
            credential_id,
            now,
        } = command
        {
            if state.exists() {
                return Err(UserError::AlreadyRegistered);
            }
            return Ok(vec![UserEvent::Registered(Registered {
                user_id,
                username: username.to_lowercase(),
                display_name,
                credential_id,
                registered_at: now,
            })]);
        }
        if !state.exists() {
            return Err(UserError::NotFound);
        }
        if let UserCommand::Erase { now } = command {
            if !state.deactivated {
                return Err(UserError::NotDeactivated);
            }
            if state.erased {
                return Ok(Vec::new());
            }
            return Ok(vec![UserEvent::Erased(Erased {
                user_id: state.user_id.unwrap_or_default(),
                erased_at: now,
            })]);
        }
        if state.deactivated {
            return Err(UserError::Deactivated);
        }
        match command {
            UserCommand::Register { .. } => Err(UserError::AlreadyRegistered),
            UserCommand::Login(attempt) => login(state, attempt),
            UserCommand::Refresh {
                session_id,
                presented_token,
                new_token,
                expires_at,
                now,
            } => {
                let session = state
                    .sessions
                    .get(&session_id)
                    .filter(|s| !s.revoked)
                    .ok_or(UserError::InvalidRefreshToken)?;
                let Some(presented) = presented_token else {
                    return Err(UserError::InvalidRefreshToken);
                };
                if session.retired_tokens.contains(presented) {
                    // A rotated token came back: someone holds a copy. Kill the family.
                    return Ok(vec![UserEvent::SessionRevoked(SessionRevoked {
                        session_id,
                        reason: RevocationReason::RefreshTokenReused,
                        revoked_at: now,
                    })]);
                }
                if session.current_token != Some(presented) || now >= session.expires_at {
                    return Err(UserError::InvalidRefreshToken);
                }
                Ok(vec![UserEvent::SessionRefreshed(SessionRefreshed {
                    session_id,
                    refresh_token_id: new_token,
                    expires_at,
                    refreshed_at: now,
                })])
            }
            UserCommand::Logout { session_id, now } => {
                if state.sessions.get(&session_id).is_none_or(|s| s.revoked) {
                    return Err(UserError::SessionInactive);
                }
                Ok(vec![UserEvent::SessionRevoked(SessionRevoked {
                    session_id,
                    reason: RevocationReason::Logout,
                    revoked_at: now,
                })])
            }
            UserCommand::UpdateProfile {
                display_name,
                status,
                profile_picture_url,
                now,
            } => {
                let next = ProfileUpdated {
                    display_name: display_name.unwrap_or_else(|| state.display_name.clone()),
                    status: status.unwrap_or_else(|| state.status.clone()),
                    profile_picture_url: profile_picture_url
                        .unwrap_or_else(|| state.profile_picture_url.clone()),
                    updated_at: now,
                };
                let unchanged = next.display_name == state.display_name
                    && next.status == state.status
                    && next.profile_picture_url == state.profile_picture_url;
                Ok(if unchanged {
                    vec![]
                } else {
                    vec![UserEvent::ProfileUpdated(next)]
                })
            }
            UserCommand::ChangePassword {
                current_password_ok,
                new_credential_id,
                keep_session,
                now,
            } => {
                if let Some(until) = state.locked_until.filter(|until| now < *until) {
                    return Err(UserError::Locked { until });
                }
                if !current_password_ok {
                    return Err(UserError::WrongPassword);
                }
                let mut events = vec![UserEvent::PasswordChanged(PasswordChanged {
                    credential_id: new_credential_id,
                    changed_at: now,
                })];
                events.extend(
                    state
                        .active_sessions()
                        .filter(|id| *id != keep_session)
                        .map(|session_id| {
                            UserEvent::SessionRevoked(SessionRevoked {
                                session_id,
                                reason: RevocationReason::PasswordChanged,
                                revoked_at: now,
                            })
                        }),
                );
                Ok(events)
            }
            UserCommand::PasswordCheckFailed { now } => {
                if let Some(until) = state.locked_until.filter(|until| now < *until) {
                    return Err(UserError::Locked { until });
                }
                Ok(failed_attempt(state, now))
            }
            UserCommand::GrantRole { role, now } => Ok(if state.roles.contains(&role) {
                vec![]
            } else {
                vec![UserEvent::RoleGranted(RoleGranted {
                    role,
                    granted_at: now,
                })]
            }),
            UserCommand::SetNotificationPreferences { disabled, now } => {
                Ok(if disabled == state.notifications_disabled {
                    vec![]
                } else {
                    vec![UserEvent::NotificationPreferencesChanged(
                        NotificationPreferencesChanged {
                            disabled: disabled.into_iter().collect(),
                            changed_at: now,
                        },
                    )]
                })
            }
            UserCommand::MarkNotificationsRead {
                up_to,
                up_to_created_at,
                now,
            } => {
                let marker = (up_to_created_at, up_to);
                Ok(
                    if state
                        .notifications_read_up_to
                        .as_ref()
                        .is_some_and(|m| *m >= marker)
                    {
                        vec![]
                    } else {
                        vec![UserEvent::NotificationsRead(NotificationsRead {
                            up_to: marker.1,
                            up_to_created_at: marker.0,
                            read_at: now,
                        })]
                    },
                )
            }
            // Decided above, before the refusal of deactivated accounts.
            UserCommand::Erase { .. } => Ok(Vec::new()),
            UserCommand::Deactivate { now } => {
                let mut events: Vec<UserEvent> = state
                    .active_sessions()
                    .map(|session_id| {
                        UserEvent::SessionRevoked(SessionRevoked {
                            session_id,
                            reason: RevocationReason::Deactivated,
                            revoked_at: now,
                        })
                    })
                    .collect();
                events.push(UserEvent::Deactivated(Deactivated {
                    deactivated_at: now,
                }));
                Ok(events)
            }
        }
    }

    fn apply_event(mut state: UserState, event: UserEvent) -> UserState {
        match event {
            UserEvent::UsernameClaimed(_) => {}
            UserEvent::Registered(e) => {
                state.user_id = Some(e.user_id);
                state.username = e.username;
                state.display_name = e.display_name;
                state.credential_id = Some(e.credential_id);
                state.registered_at = Some(e.registered_at);
            }
            UserEvent::ProfileUpdated(e) => {
                state.display_name = e.display_name;
                state.status = e.status;
                state.profile_picture_url = e.profile_picture_url;
            }
            UserEvent::PasswordChanged(e) => state.credential_id = Some(e.credential_id),
            UserEvent::PasswordRehashed(e) => state.credential_id = Some(e.credential_id),
            UserEvent::LoginFailed(e) => {
                // Only the last few failures can ever matter for the lockout decision.
                if state.recent_failures.len() >= LOCKOUT_THRESHOLD {
                    state.recent_failures.remove(0);
                }
                state.recent_failures.push(e.failed_at);
            }
            UserEvent::Locked(e) => {
                state.locked_until = Some(e.locked_until);
                state.recent_failures.clear();
            }
            UserEvent::SessionStarted(e) => {
                state.recent_failures.clear();
                state.forget_expired_sessions(e.started_at);
                state.sessions.insert(
                    e.session_id,
                    Session {
                        current_token: Some(e.refresh_token_id),
                        retired_tokens: RetiredTokens::default(),
                        expires_at: e.expires_at,
                        revoked: false,
                    },
                );
            }
            UserEvent::SessionRefreshed(e) => {
                state.forget_expired_sessions(e.refreshed_at);
                if let Some(s) = state.sessions.get_mut(&e.session_id) {
                    let old = s.current_token.replace(e.refresh_token_id);
                    if let Some(old) = old {
                        s.retired_tokens.retire(old);
                    }
                    s.expires_at = e.expires_at;
                }
            }
            UserEvent::SessionRevoked(e) => {
                state.forget_expired_sessions(e.revoked_at);
                if let Some(s) = state.sessions.get_mut(&e.session_id) {
                    // A revoked session never refreshes again: its tokens are dead weight.
                    s.revoked = true;
                    s.current_token = None;
                    s.retired_tokens = RetiredTokens::default();
                }
            }
            UserEvent::Deactivated(_) => state.deactivated = true,
            UserEvent::Erased(_) => {
                // What a replay reads from the sealed fields once the key is gone.
                let erased = |v: Option<String>| v.map(|_| ERASED.to_owned());
                state.erased = true;
                state.username = ERASED.to_owned();
                state.display_name = erased(state.display_name.take());
                state.status = erased(state.status.take());
                state.profile_picture_url = erased(state.profile_picture_url.take());
            }
            UserEvent::RoleGranted(e) => {
                state.roles.insert(e.role);
            }
            UserEvent::NotificationPreferencesChanged(e) => {
                state.notifications_disabled = e.disabled.into_iter().collect();
            }
            UserEvent::NotificationsRead(e) => {
                state.notifications_read_up_to = Some((e.up_to_created_at, e.up_to));
            }
        }
        state
    }
}

fn login(state: &UserState, a: LoginAttempt) -> Result<Vec<UserEvent>, UserError> {
    if let Some(until) = state.locked_until.filter(|until| a.now < *until) {
        return Err(UserError::Locked { until });
    }
    if !a.password_ok {
        return Ok(failed_attempt(state, a.now));
    }
    if state.sessions.contains_key(&a.session_id) {
        // Session ids are fresh UUIDs; reusing one would resurrect a revoked family.
        return Err(UserError::SessionIdInUse);
    }
    let mut events = Vec::with_capacity(2);
    if let Some(credential_id) = a.upgraded_credential {
        events.push(UserEvent::PasswordRehashed(PasswordRehashed {
            credential_id,
            previous_algorithm: "sha256".into(),
            rehashed_at: a.now,
        }));
    }
    events.push(UserEvent::SessionStarted(SessionStarted {
        session_id: a.session_id,
        refresh_token_id: a.refresh_token_id,
        expires_at: a.expires_at,
        started_at: a.now,
    }));
    Ok(events)
}

/// A failed password check (login or password change): recorded, and locks the account when
/// it is the [`LOCKOUT_THRESHOLD`]th within [`LOCKOUT_WINDOW`].
fn failed_attempt(state: &UserState, now: DateTime<Utc>) -> Vec<UserEvent> {
    let mut events = vec![UserEvent::LoginFailed(LoginFailed { failed_at: now })];
    let window_start = now - LOCKOUT_WINDOW;
    let in_window = state
        .recent_failures
        .iter()
        .filter(|t| **t > window_start)
        .count()
        + 1;
    if in_window >= LOCKOUT_THRESHOLD {
        events.push(UserEvent::Locked(Locked {
            locked_at: now,
            locked_until: now + LOCKOUT_DURATION,
        }));
    }
    events
}

/// Unsalted SHA-256 hex, as produced by the system Nova replaces.
pub fn is_legacy_sha256(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// New hashes are always argon2id PHC strings; legacy SHA-256 hashes only arrive by import.
pub fn is_server_hash(hash: &str) -> bool {
    hash.starts_with("$argon2id$")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClaimState {
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimUsername {
    pub username: String,
    pub user_id: Uuid,
}

impl CommandName for ClaimUsername {
    fn name(&self) -> &'static str {
        "claim_username"
    }
}

/// A username, reserved for one user forever (also after deactivation, so that a name cannot
/// be re-registered to impersonate its former owner).
pub struct UsernameClaim;

impl Aggregate for UsernameClaim {
    const NAME: &'static str = "username_claim";
    type State = ClaimState;
    type Command = ClaimUsername;
    type Event = UserEvent;
    type Error = UserError;

    fn handle_command(state: &ClaimState, c: ClaimUsername) -> Result<Vec<UserEvent>, UserError> {
        if state.user_id.is_some() {
            return Err(UserError::UsernameTaken);
        }
        Ok(vec![UserEvent::UsernameClaimed(UsernameClaimed {
            username: c.username.to_lowercase(),
            user_id: c.user_id,
        })])
    }

    fn apply_event(mut state: ClaimState, event: UserEvent) -> ClaimState {
        if let UserEvent::UsernameClaimed(e) = event {
            state.user_id = Some(e.user_id);
        }
        state
    }
}

#[cfg(test)]
mod tests;
