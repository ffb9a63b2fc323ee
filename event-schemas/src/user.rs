//! Events of the `user` domain (identity): registration, profile, credentials, sessions.
//!
//! Two kinds of aggregate live in this domain: a user (id = the user's UUIDv7) and a username
//! claim (id = [`username_claim_id`] of the lower-cased name), which is what makes usernames
//! unique under concurrent registrations.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Domain;

/// Namespace for the name-based ids of username claims.
const USERNAME_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d75_7365_726e_616d_6521_0001);

/// The aggregate id of the claim on `username` (case-insensitive).
pub fn username_claim_id(username: &str) -> Uuid {
    Uuid::new_v5(&USERNAME_NAMESPACE, username.to_lowercase().as_bytes())
}

/// Version 2: `username` is stored sealed under the user's data key (ADR 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameClaimed {
    /// Lower-cased username. Personal data of the user (sealed in storage).
    pub username: String,
    pub user_id: Uuid,
}

/// Version 3: `username` and `display_name` are stored sealed under the user's data key (ADR
/// 0025). Version 2: the password's hash is no longer in the event (ADR 0016).
/// `credential_id` names the credential in the user domain's credentials table
/// (`user_credentials`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub user_id: Uuid,
    /// Personal data of the user (sealed in storage).
    pub username: String,
    /// Personal data of the user (sealed in storage).
    pub display_name: Option<String>,
    /// The password credential, held outside the events (never the secret itself).
    pub credential_id: Uuid,
    pub registered_at: DateTime<Utc>,
}

/// The profile after the update: every field carries its new value.
///
/// Version 2: the three profile fields are stored sealed under the user's data key (ADR 0025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdated {
    /// Personal data of the user (sealed in storage).
    pub display_name: Option<String>,
    /// Personal data of the user (sealed in storage).
    pub status: Option<String>,
    /// Personal data of the user (sealed in storage).
    pub profile_picture_url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A user's personal data was erased (ADR 0025): their data key is destroyed, so every sealed
/// field of theirs in the history reads as `"[erased]"` from now on, and every view drops what
/// it derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Erased {
    pub user_id: Uuid,
    pub erased_at: DateTime<Utc>,
}

// Plaintext versions of the events above, kept for their checked-in schemas. The upcasters
// only relabel: the shape did not change, only how the store keeps the personal fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UsernameClaimed")]
pub struct UsernameClaimedV1 {
    /// Lower-cased username.
    pub username: String,
    pub user_id: Uuid,
}

/// Version 2: the password's hash is no longer in the event (ADR 0016). `credential_id` names
/// the credential in the user domain's credentials table (`user_credentials`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Registered")]
pub struct RegisteredV2 {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    /// The password credential, held outside the events (never the secret itself).
    pub credential_id: Uuid,
    pub registered_at: DateTime<Utc>,
}

/// The profile after the update: every field carries its new value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ProfileUpdated")]
pub struct ProfileUpdatedV1 {
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Version 2: names the new credential instead of carrying its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChanged {
    pub credential_id: Uuid,
    pub changed_at: DateTime<Utc>,
}

/// A legacy hash was replaced by an argon2id hash of the same password after a login.
/// Version 2: names the new credential instead of carrying its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRehashed {
    pub credential_id: Uuid,
    pub previous_algorithm: String,
    pub rehashed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFailed {
    pub failed_at: DateTime<Utc>,
}

/// Five failed logins within the window: logins are refused until `locked_until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    pub locked_at: DateTime<Utc>,
    pub locked_until: DateTime<Utc>,
}

/// Version 2: names the refresh token instead of carrying its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionStarted {
    pub session_id: Uuid,
    /// The refresh token's id in the credentials table (its hash is kept there, never here).
    pub refresh_token_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
}

/// Version 2: names the new refresh token instead of carrying its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRefreshed {
    pub session_id: Uuid,
    pub refresh_token_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub refreshed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    Logout,
    RefreshTokenReused,
    PasswordChanged,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRevoked {
    pub session_id: Uuid,
    pub reason: RevocationReason,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deactivated {
    pub deactivated_at: DateTime<Utc>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ops: projections, rebuilds.
    Admin,
    /// Reads event history and past states.
    Analyst,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGranted {
    pub role: Role,
    pub granted_at: DateTime<Utc>,
}

/// The kinds of notification a user can receive, each switchable in their preferences.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Someone followed you.
    Follow,
    /// Someone liked your post.
    Like,
    /// Someone commented on your post.
    Comment,
    /// Someone mentioned you in a post or comment.
    Mention,
    /// Someone shared your post.
    Share,
    /// Someone you follow went live.
    StreamStarted,
    /// Someone wrote in a conversation you are in (no content: messages are end-to-end
    /// encrypted).
    Message,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 7] = [
        NotificationKind::Follow,
        NotificationKind::Like,
        NotificationKind::Comment,
        NotificationKind::Mention,
        NotificationKind::Share,
        NotificationKind::StreamStarted,
        NotificationKind::Message,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Follow => "follow",
            NotificationKind::Like => "like",
            NotificationKind::Comment => "comment",
            NotificationKind::Mention => "mention",
            NotificationKind::Share => "share",
            NotificationKind::StreamStarted => "stream_started",
            NotificationKind::Message => "message",
        }
    }

    pub fn parse(s: &str) -> Option<NotificationKind> {
        NotificationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A user's notification settings belong to the user (the notification view is a projection
/// and has no writer of its own). The event carries the complete setting after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationPreferencesChanged {
    /// The kinds switched off; every other kind is on.
    pub disabled: Vec<NotificationKind>,
    pub changed_at: DateTime<Utc>,
}

// `notification_preferences_changed` version 1, as still found in stores: its kinds were the
// five before `stream_started`. Read only through the upcaster; names and doc comments are what
// its checked-in schema (`notification_preferences_changed.v1.json`) says.
/// The kinds of notification a user can receive, each switchable in their preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "NotificationKind")]
pub enum NotificationKindV1 {
    /// Someone followed you.
    Follow,
    /// Someone liked your post.
    Like,
    /// Someone commented on your post.
    Comment,
    /// Someone mentioned you in a post or comment.
    Mention,
    /// Someone shared your post.
    Share,
}

/// A user's notification settings belong to the user (the notification view is a projection
/// and has no writer of its own). The event carries the complete setting after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NotificationPreferencesChanged")]
pub struct NotificationPreferencesChangedV1 {
    /// The kinds switched off; every other kind is on.
    pub disabled: Vec<NotificationKindV1>,
    pub changed_at: DateTime<Utc>,
}

impl From<NotificationPreferencesChangedV1> for NotificationPreferencesChangedV2 {
    fn from(old: NotificationPreferencesChangedV1) -> Self {
        NotificationPreferencesChangedV2 {
            disabled: old.disabled.into_iter().map(Into::into).collect(),
            changed_at: old.changed_at,
        }
    }
}

// `notification_preferences_changed` version 2, as still found in stores: its kinds were the
// six before `message`. Read only through the upcaster; names and doc comments are what its
// checked-in schema (`notification_preferences_changed.v2.json`) says.
/// The kinds of notification a user can receive, each switchable in their preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "NotificationKind")]
pub enum NotificationKindV2 {
    /// Someone followed you.
    Follow,
    /// Someone liked your post.
    Like,
    /// Someone commented on your post.
    Comment,
    /// Someone mentioned you in a post or comment.
    Mention,
    /// Someone shared your post.
    Share,
    /// Someone you follow went live.
    StreamStarted,
}

impl From<NotificationKindV1> for NotificationKindV2 {
    fn from(k: NotificationKindV1) -> Self {
        match k {
            NotificationKindV1::Follow => NotificationKindV2::Follow,
            NotificationKindV1::Like => NotificationKindV2::Like,
            NotificationKindV1::Comment => NotificationKindV2::Comment,
            NotificationKindV1::Mention => NotificationKindV2::Mention,
            NotificationKindV1::Share => NotificationKindV2::Share,
        }
    }
}

impl From<NotificationKindV2> for NotificationKind {
    fn from(k: NotificationKindV2) -> Self {
        match k {
            NotificationKindV2::Follow => NotificationKind::Follow,
            NotificationKindV2::Like => NotificationKind::Like,
            NotificationKindV2::Comment => NotificationKind::Comment,
            NotificationKindV2::Mention => NotificationKind::Mention,
            NotificationKindV2::Share => NotificationKind::Share,
            NotificationKindV2::StreamStarted => NotificationKind::StreamStarted,
        }
    }
}

/// A user's notification settings belong to the user (the notification view is a projection
/// and has no writer of its own). The event carries the complete setting after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NotificationPreferencesChanged")]
pub struct NotificationPreferencesChangedV2 {
    /// The kinds switched off; every other kind is on.
    pub disabled: Vec<NotificationKindV2>,
    pub changed_at: DateTime<Utc>,
}

impl From<NotificationPreferencesChangedV2> for NotificationPreferencesChanged {
    fn from(old: NotificationPreferencesChangedV2) -> Self {
        NotificationPreferencesChanged {
            disabled: old.disabled.into_iter().map(Into::into).collect(),
            changed_at: old.changed_at,
        }
    }
}

/// The user read their notifications up to and including `up_to` (in the list's order:
/// `up_to_created_at`, then id). Version 2: version 1 carried the notification view's text for
/// `up_to_created_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsRead {
    pub up_to: Uuid,
    /// Creation time of the `up_to` notification.
    pub up_to_created_at: DateTime<Utc>,
    pub read_at: DateTime<Utc>,
}

// `notifications_read` version 1, as still found in stores: the creation time was the
// notification view's text encoding of it. Read only through the upcaster; the doc comment and
// name below are what its checked-in schema (`notifications_read.v1.json`) says.
/// The user read their notifications up to and including `up_to` (in the list's order:
/// `up_to_created_at`, then id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NotificationsRead")]
pub struct NotificationsReadV1 {
    pub up_to: Uuid,
    /// RFC 3339 creation time of the `up_to` notification, as the notification view lists it.
    pub up_to_created_at: String,
    pub read_at: DateTime<Utc>,
}

impl TryFrom<NotificationsReadV1> for NotificationsRead {
    type Error = String;

    /// The view's text is RFC 3339 with microseconds, so the conversion is exact: encoding the
    /// result the view's way gives back the same text.
    fn try_from(v1: NotificationsReadV1) -> Result<Self, String> {
        let up_to_created_at = DateTime::parse_from_rfc3339(&v1.up_to_created_at)
            .map_err(|e| format!("up_to_created_at {:?}: {e}", v1.up_to_created_at))?
            .with_timezone(&Utc);
        Ok(NotificationsRead {
            up_to: v1.up_to,
            up_to_created_at,
            read_at: v1.read_at,
        })
    }
}

// Version 1 of the credential events, as found in stores written before ADR 0016: they carried
// the secrets themselves. Read only through the upcasters below, which drop the secret and name
// no credential (the nil id): `nova admin upgrade-credentials` (run at every start) moves the
// secrets into the credentials table and rewrites these payloads to version 2 before anything
// reads them, so the upcasters only serve history read elsewhere (an export of an old backup).
// Doc comments and names are what the checked-in v1 schemas say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Registered")]
pub struct RegisteredV1 {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    /// PHC string (argon2id) or, for imported legacy accounts, SHA-256 hex.
    pub password_hash: String,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PasswordChanged")]
pub struct PasswordChangedV1 {
    pub password_hash: String,
    pub changed_at: DateTime<Utc>,
}

/// A legacy hash was replaced by an argon2id hash of the same password after a login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PasswordRehashed")]
pub struct PasswordRehashedV1 {
    pub password_hash: String,
    pub previous_algorithm: String,
    pub rehashed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SessionStarted")]
pub struct SessionStartedV1 {
    pub session_id: Uuid,
    /// SHA-256 hex of the refresh token; the token itself is never stored.
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SessionRefreshed")]
pub struct SessionRefreshedV1 {
    pub session_id: Uuid,
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub refreshed_at: DateTime<Utc>,
}

impl RegisteredV1 {
    /// Version 2 naming `credential_id` for the hash this event carried.
    pub fn into_v2(self, credential_id: Uuid) -> Registered {
        Registered {
            user_id: self.user_id,
            username: self.username,
            display_name: self.display_name,
            credential_id,
            registered_at: self.registered_at,
        }
    }
}

impl PasswordChangedV1 {
    pub fn into_v2(self, credential_id: Uuid) -> PasswordChanged {
        PasswordChanged {
            credential_id,
            changed_at: self.changed_at,
        }
    }
}

impl PasswordRehashedV1 {
    pub fn into_v2(self, credential_id: Uuid) -> PasswordRehashed {
        PasswordRehashed {
            credential_id,
            previous_algorithm: self.previous_algorithm,
            rehashed_at: self.rehashed_at,
        }
    }
}

impl SessionStartedV1 {
    pub fn into_v2(self, refresh_token_id: Uuid) -> SessionStarted {
        SessionStarted {
            session_id: self.session_id,
            refresh_token_id,
            expires_at: self.expires_at,
            started_at: self.started_at,
        }
    }
}

impl SessionRefreshedV1 {
    pub fn into_v2(self, refresh_token_id: Uuid) -> SessionRefreshed {
        SessionRefreshed {
            session_id: self.session_id,
            refresh_token_id,
            expires_at: self.expires_at,
            refreshed_at: self.refreshed_at,
        }
    }
}

/// The secret a version 1 credential event carried, if `(event_type, version)` is one.
pub fn v1_secret(event_type: &str, version: i32, payload: &serde_json::Value) -> Option<String> {
    let field = match (event_type, version) {
        ("registered" | "password_changed" | "password_rehashed", 1) => "password_hash",
        ("session_started" | "session_refreshed", 1) => "refresh_token_hash",
        _ => return None,
    };
    payload.get(field)?.as_str().map(str::to_owned)
}

crate::domain_events! {
    /// Every event the `user` domain stores.
    pub enum UserEvent in Domain::User {
        UsernameClaimed(UsernameClaimed) = ("username_claimed", 2),
        Registered(Registered) = ("registered", 3),
        ProfileUpdated(ProfileUpdated) = ("profile_updated", 2),
        PasswordChanged(PasswordChanged) = ("password_changed", 2),
        PasswordRehashed(PasswordRehashed) = ("password_rehashed", 2),
        LoginFailed(LoginFailed) = ("login_failed", 1),
        Locked(Locked) = ("locked", 1),
        SessionStarted(SessionStarted) = ("session_started", 2),
        SessionRefreshed(SessionRefreshed) = ("session_refreshed", 2),
        SessionRevoked(SessionRevoked) = ("session_revoked", 1),
        Deactivated(Deactivated) = ("deactivated", 1),
        RoleGranted(RoleGranted) = ("role_granted", 1),
        NotificationPreferencesChanged(NotificationPreferencesChanged) =
            ("notification_preferences_changed", 3),
        NotificationsRead(NotificationsRead) = ("notifications_read", 2),
        Erased(Erased) = ("erased", 1),
    }
    upcast(event_type, version, payload) {
        // Each arm brings one superseded version up by one; the second `match` takes v2 to v3,
        // so stored v1 events pass through both.
        let (event_type, version, payload) = match (event_type, version) {
            ("notification_preferences_changed", 1) => (
                "notification_preferences_changed",
                2,
                crate::upcast_payload(
                    Domain::User,
                    event_type,
                    version,
                    payload,
                    |old: NotificationPreferencesChangedV1| Ok(NotificationPreferencesChangedV2::from(old)),
                )?,
            ),
            ("notifications_read", 1) => (
                "notifications_read",
                2,
                crate::upcast_payload(
                    Domain::User,
                    event_type,
                    version,
                    payload,
                    <NotificationsRead as TryFrom<NotificationsReadV1>>::try_from,
                )?,
            ),
            ("registered", 1) => (
                "registered",
                2,
                crate::upcast_payload(Domain::User, event_type, version, payload, |old: RegisteredV1| {
                    Ok(old.into_v2(Uuid::nil()))
                })?,
            ),
            ("password_changed", 1) => (
                "password_changed",
                2,
                crate::upcast_payload(Domain::User, event_type, version, payload, |old: PasswordChangedV1| {
                    Ok(old.into_v2(Uuid::nil()))
                })?,
            ),
            ("password_rehashed", 1) => (
                "password_rehashed",
                2,
                crate::upcast_payload(Domain::User, event_type, version, payload, |old: PasswordRehashedV1| {
                    Ok(old.into_v2(Uuid::nil()))
                })?,
            ),
            ("session_started", 1) => (
                "session_started",
                2,
                crate::upcast_payload(Domain::User, event_type, version, payload, |old: SessionStartedV1| {
                    Ok(old.into_v2(Uuid::nil()))
                })?,
            ),
            ("session_refreshed", 1) => (
                "session_refreshed",
                2,
                crate::upcast_payload(Domain::User, event_type, version, payload, |old: SessionRefreshedV1| {
                    Ok(old.into_v2(Uuid::nil()))
                })?,
            ),
            _ => (event_type, version, payload),
        };
        // Second step: v2 → v3, and plaintext → sealed personal fields (ADR 0025: same shape,
        // relabelled).
        match (event_type, version) {
            ("notification_preferences_changed", 2) => (
                "notification_preferences_changed",
                3,
                crate::upcast_payload(
                    Domain::User,
                    event_type,
                    version,
                    payload,
                    |old: NotificationPreferencesChangedV2| Ok(NotificationPreferencesChanged::from(old)),
                )?,
            ),
            ("username_claimed", 1) | ("profile_updated", 1) | ("registered", 2) => {
                (event_type, version + 1, payload)
            }
            _ => (event_type, version, payload),
        }
    }
    superseded {
        NotificationPreferencesChangedV1 = ("notification_preferences_changed", 1),
        NotificationPreferencesChangedV2 = ("notification_preferences_changed", 2),
        NotificationsReadV1 = ("notifications_read", 1),
        RegisteredV1 = ("registered", 1),
        PasswordChangedV1 = ("password_changed", 1),
        PasswordRehashedV1 = ("password_rehashed", 1),
        SessionStartedV1 = ("session_started", 1),
        SessionRefreshedV1 = ("session_refreshed", 1),
        UsernameClaimedV1 = ("username_claimed", 1),
        RegisteredV2 = ("registered", 2),
        ProfileUpdatedV1 = ("profile_updated", 1),
    }
}
