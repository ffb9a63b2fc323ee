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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameClaimed {
    /// Lower-cased username.
    pub username: String,
    pub user_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    /// PHC string (argon2id) or, for imported legacy accounts, SHA-256 hex.
    pub password_hash: String,
    pub registered_at: DateTime<Utc>,
}

/// The profile after the update: every field carries its new value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdated {
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChanged {
    pub password_hash: String,
    pub changed_at: DateTime<Utc>,
}

/// A legacy hash was replaced by an argon2id hash of the same password after a login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRehashed {
    pub password_hash: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionStarted {
    pub session_id: Uuid,
    /// SHA-256 hex of the refresh token; the token itself is never stored.
    pub refresh_token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRefreshed {
    pub session_id: Uuid,
    pub refresh_token_hash: String,
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
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 5] = [
        NotificationKind::Follow,
        NotificationKind::Like,
        NotificationKind::Comment,
        NotificationKind::Mention,
        NotificationKind::Share,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Follow => "follow",
            NotificationKind::Like => "like",
            NotificationKind::Comment => "comment",
            NotificationKind::Mention => "mention",
            NotificationKind::Share => "share",
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

crate::domain_events! {
    /// Every event the `user` domain stores.
    pub enum UserEvent in Domain::User {
        UsernameClaimed(UsernameClaimed) = ("username_claimed", 1),
        Registered(Registered) = ("registered", 1),
        ProfileUpdated(ProfileUpdated) = ("profile_updated", 1),
        PasswordChanged(PasswordChanged) = ("password_changed", 1),
        PasswordRehashed(PasswordRehashed) = ("password_rehashed", 1),
        LoginFailed(LoginFailed) = ("login_failed", 1),
        Locked(Locked) = ("locked", 1),
        SessionStarted(SessionStarted) = ("session_started", 1),
        SessionRefreshed(SessionRefreshed) = ("session_refreshed", 1),
        SessionRevoked(SessionRevoked) = ("session_revoked", 1),
        Deactivated(Deactivated) = ("deactivated", 1),
        RoleGranted(RoleGranted) = ("role_granted", 1),
        NotificationPreferencesChanged(NotificationPreferencesChanged) =
            ("notification_preferences_changed", 1),
        NotificationsRead(NotificationsRead) = ("notifications_read", 2),
    }
    upcast(event_type, version, payload) {
        // Each arm brings one superseded version up by one. When a v3 comes, a second `match`
        // after this one takes v2 to v3, so stored v1 events pass through both.
        match (event_type, version) {
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
            _ => (event_type, version, payload),
        }
    }
    superseded {
        NotificationsReadV1 = ("notifications_read", 1),
    }
}
