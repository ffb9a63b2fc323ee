//! The user domain's credentials table (`user_credentials`, ADR 0016): where password hashes
//! and refresh-token hashes live, so that no event — and therefore no export, JetStream
//! message or replica of the history — ever carries one.
//!
//! Ordering instead of a shared transaction: a credential row is written *before* the append
//! of the event that names it, under a fresh random id. If the append then fails (conflict,
//! crash), the row is named by no event and is never read; if it succeeds, the row it names is
//! already durable. So every credential an event names exists, whatever crashes when, and the
//! event store's append path needs no hook into this table.

use chrono::Utc;
use nova_aggregates::user::{is_legacy_sha256, is_server_hash, UserError};
use nova_event_schemas::user::{v1_secret, UserEvent};
use nova_event_schemas::Domain;
use nova_infra::store::ReadFilter;
use secrecy::SecretString;
use sqlx::AnyPool;
use uuid::Uuid;

use super::{UserCommandError, UserWriter};
use crate::{CommandError, CommandStore};

const PASSWORD: &str = "password";
const REFRESH_TOKEN: &str = "refresh_token";

/// The credentials table.
#[derive(Clone)]
pub struct Vault {
    pool: AnyPool,
}

fn unavailable(e: sqlx::Error) -> UserCommandError {
    CommandError::Unavailable(format!("credentials: {e}"))
}

/// A password hash the table accepts: argon2id from this server, or — only for imported
/// accounts — unsalted SHA-256 hex, upgraded at the first login.
pub fn check_password_hash(hash: &str, legacy_allowed: bool) -> Result<(), UserError> {
    if is_server_hash(hash) || (legacy_allowed && is_legacy_sha256(hash)) {
        Ok(())
    } else {
        Err(UserError::InvalidPasswordHash)
    }
}

impl Vault {
    pub fn new(pool: AnyPool) -> Self {
        Vault { pool }
    }

    /// The read-model pool the user domain's tables live in.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn insert(&self, user_id: Uuid, kind: &str, secret: &str) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO user_credentials (credential_id, user_id, kind, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(user_id.to_string())
        .bind(kind)
        .bind(secret)
        .bind(nova_infra::readmodel::ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Stores a password hash of `user_id` (see [`check_password_hash`]); its id goes into
    /// the event.
    pub async fn store_password(
        &self,
        user_id: Uuid,
        hash: &str,
        legacy_allowed: bool,
    ) -> Result<Uuid, UserCommandError> {
        check_password_hash(hash, legacy_allowed).map_err(CommandError::Refused)?;
        self.insert(user_id, PASSWORD, hash)
            .await
            .map_err(unavailable)
    }

    /// Stores the hash of a refresh token of `user_id`; its id goes into the event.
    pub async fn store_refresh_token(
        &self,
        user_id: Uuid,
        token_hash: &str,
    ) -> Result<Uuid, UserCommandError> {
        self.insert(user_id, REFRESH_TOKEN, token_hash)
            .await
            .map_err(unavailable)
    }

    /// The password hash a credential id names (`None` for an unknown id).
    pub async fn password_hash(
        &self,
        credential_id: Uuid,
    ) -> Result<Option<SecretString>, UserCommandError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT secret FROM user_credentials WHERE credential_id = $1 AND kind = $2",
        )
        .bind(credential_id.to_string())
        .bind(PASSWORD)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|(s,)| SecretString::from(s)))
    }

    /// The id of `user_id`'s refresh token with this hash, if there is one.
    pub async fn refresh_token(
        &self,
        user_id: Uuid,
        token_hash: &str,
    ) -> Result<Option<Uuid>, UserCommandError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT credential_id FROM user_credentials \
             WHERE user_id = $1 AND kind = $2 AND secret = $3",
        )
        .bind(user_id.to_string())
        .bind(REFRESH_TOKEN)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.and_then(|(id,)| Uuid::parse_str(&id).ok()))
    }
}

/// What [`upgrade_credentials`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Upgraded {
    /// Events whose secret moved into the credentials table.
    pub rewritten: u64,
}

/// Moves the secrets that version 1 credential events carried (password hashes, legacy
/// SHA-256 hashes, refresh-token hashes) into the credentials table and rewrites those events
/// to version 2, which names the credential instead (ADR 0016). Idempotent and crash-safe: each
/// event's secret is stored first, then its payload is replaced only if it is still version 1;
/// a crash in between leaves an unnamed row and the event is upgraded on the next run. Run at
/// every start before anything serves (and by `nova admin upgrade-credentials`).
pub async fn upgrade_credentials(
    store: &CommandStore,
    vault: &Vault,
) -> Result<Upgraded, UserCommandError> {
    let mut done = Upgraded::default();
    for event_type in [
        "registered",
        "password_changed",
        "password_rehashed",
        "session_started",
        "session_refreshed",
    ] {
        let mut after = 0;
        loop {
            let page = store
                .read_raw(
                    Domain::User,
                    &ReadFilter {
                        after_position: after,
                        limit: 500,
                        aggregate_id: None,
                        event_type: Some(event_type.to_owned()),
                    },
                )
                .await
                .map_err(|e| CommandError::Unavailable(e.to_string()))?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for e in page.iter().filter(|e| e.schema_version == 1) {
                let Some(secret) = v1_secret(&e.event_type, 1, &e.payload) else {
                    continue;
                };
                let kind = if event_type.starts_with("session_") {
                    REFRESH_TOKEN
                } else {
                    PASSWORD
                };
                let id = vault
                    .insert(e.aggregate_id, kind, &secret)
                    .await
                    .map_err(unavailable)?;
                let v2 = upgraded_payload(&e.event_type, e.payload.clone(), id)?;
                if store
                    .rewrite::<UserEvent>(&UserWriter(()), e.position, 1, 2, &v2)
                    .await
                    .map_err(|e| CommandError::Unavailable(e.to_string()))?
                {
                    done.rewritten += 1;
                }
            }
        }
    }
    if done.rewritten > 0 {
        tracing::info!(
            events = done.rewritten,
            "credential secrets moved out of user events"
        );
    }
    Ok(done)
}

/// The version 2 payload of a version 1 credential event, naming `id`.
fn upgraded_payload(
    event_type: &str,
    v1: serde_json::Value,
    id: Uuid,
) -> Result<serde_json::Value, UserCommandError> {
    use nova_event_schemas::user::*;
    fn conv<Old: serde::de::DeserializeOwned, New: serde::Serialize>(
        v1: serde_json::Value,
        f: impl FnOnce(Old) -> New,
    ) -> Result<serde_json::Value, UserCommandError> {
        let old: Old = serde_json::from_value(v1)
            .map_err(|e| CommandError::Internal(format!("stored v1 credential event: {e}")))?;
        serde_json::to_value(f(old)).map_err(|e| CommandError::Internal(e.to_string()))
    }
    match event_type {
        "registered" => conv(v1, |o: RegisteredV1| o.into_v2(id)),
        "password_changed" => conv(v1, |o: PasswordChangedV1| o.into_v2(id)),
        "password_rehashed" => conv(v1, |o: PasswordRehashedV1| o.into_v2(id)),
        "session_started" => conv(v1, |o: SessionStartedV1| o.into_v2(id)),
        "session_refreshed" => conv(v1, |o: SessionRefreshedV1| o.into_v2(id)),
        other => Err(CommandError::Internal(format!(
            "{other} carries no credential"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_hashes_and_imported_legacy_hashes_are_stored() {
        // Moved from the aggregate's tests: the rule now belongs to the credentials table.
        for hash in [
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "$argon2d$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "argon2id$",
            "$ARGON2ID$v=19",
            "",
        ] {
            assert_eq!(
                check_password_hash(hash, true),
                Err(UserError::InvalidPasswordHash)
            );
        }
        let legacy = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        assert_eq!(check_password_hash(legacy, true), Ok(()));
        // A password change or a login's rehash must produce argon2id, never a legacy hash.
        assert_eq!(
            check_password_hash(legacy, false),
            Err(UserError::InvalidPasswordHash)
        );
        let argon = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        assert_eq!(check_password_hash(argon, false), Ok(()));
    }
}
