//! The key server and the to-device queue of the `conversation` domain (API.md "Messaging",
//! ADR 0020): device identity keys, signed one-time and fallback keys, and opaque per-device
//! messages. Matrix key semantics where the contract is silent.
//!
//! Invariants kept here:
//! - **blind**: only public keys (32-byte curve25519 / ed25519, unpadded base64) and opaque
//!   client payloads are stored; every signature is verified (ed25519 over canonical JSON —
//!   sorted keys, no spaces) before anything is written;
//! - **a one-time key is handed out at most once, ever, in upload order**: a claim marks the
//!   oldest unclaimed key in one atomic step (PostgreSQL: `UPDATE … WHERE seq = (SELECT … FOR
//!   UPDATE SKIP LOCKED)`; SQLite: a `BEGIN IMMEDIATE` transaction, SQLite's one write lock,
//!   which also serializes other processes on the same file); a claimed key keeps its row, so
//!   its id can never be uploaded and handed out again while the device exists;
//! - **to-device messages are neither lost nor duplicated**: positions are per device and
//!   taken from the device row inside the sending transaction (its row lock on PostgreSQL, the
//!   write lock on SQLite), so they commit in order and an acknowledgement up to a position
//!   never deletes a message the device has not been able to fetch.
//!
//! Nothing here logs a key, a signature or a payload; errors name fields, never values.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use nova_infra::db::Engine;
use nova_infra::readmodel::{is_decode_error, ts, Timestamp};
use serde_json::Value;
use sqlx::{Any, AnyPool, Row, Transaction};
use uuid::Uuid;

use crate::CommandError;

/// Longest device id and key id.
pub const MAX_ID_LEN: usize = 64;
/// Most one-time keys in one upload.
pub const MAX_KEYS_PER_UPLOAD: usize = 100;
/// Most unclaimed one-time keys a device may hold.
pub const MAX_UNCLAIMED_KEYS: i64 = 1000;
/// Most messages in one to-device request.
pub const MAX_MESSAGES_PER_REQUEST: usize = 100;
/// Largest `content` of one to-device message, serialized (an Olm envelope carrying a Megolm
/// room key is about 1 KiB).
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;
/// Most messages one fetch answers.
pub const MAX_FETCH: i64 = 100;

/// Why the key server said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The named signature does not verify with the device's ed25519 key.
    #[error("{0} does not verify with the device's ed25519 key")]
    BadSignature(&'static str),
    #[error("no such device")]
    UnknownDevice,
    #[error("the device has no one-time key left and no fallback key")]
    NoOneTimeKey,
    /// A device id is registered already with other identity keys (a device's identity never
    /// changes; a new identity is a new device).
    #[error("the device is registered with other identity keys")]
    DeviceExists,
    /// A one-time key id was uploaded before with another key.
    #[error("one-time key {0} was uploaded before with another key")]
    KeyIdReused(String),
    #[error("the device holds too many unclaimed one-time keys (at most {MAX_UNCLAIMED_KEYS})")]
    TooManyKeys,
    /// A field is larger than its bound (413).
    #[error("{0}")]
    TooLarge(String),
}

pub type KeyCommandError = CommandError<KeyError>;

fn db(e: sqlx::Error) -> KeyCommandError {
    if is_decode_error(&e) {
        CommandError::Internal(format!("key server: {e}"))
    } else {
        CommandError::Unavailable(format!("key server: {e}"))
    }
}

/// A public key with its signature (both unpadded base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKey {
    pub key: String,
    pub signature: String,
}

/// A registered device as `GET /v1/users/{id}/devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Device {
    pub device_id: String,
    pub curve25519: String,
    pub ed25519: String,
    pub signature: String,
    pub created_at: Timestamp,
}

/// The key a claim handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub key_id: String,
    pub key: String,
    pub signature: String,
    /// The device's fallback key (no one-time key was left).
    pub fallback: bool,
}

/// One message for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub user_id: Uuid,
    pub device_id: String,
    pub content: Value,
}

/// A pending message as its device fetches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub position: i64,
    pub sender_user_id: Uuid,
    pub sender_device_id: Option<String>,
    pub content: Value,
}

/// The canonical JSON of a map of strings: keys sorted, no white space (what clients sign).
pub fn canonical_json(fields: &[(&str, &str)]) -> String {
    let map: BTreeMap<&str, &str> = fields.iter().copied().collect();
    // A map of strings always serializes.
    serde_json::to_string(&map).unwrap_or_default()
}

/// A device id or key id: 1–64 characters of A–Z, a–z, 0–9, `_ - . + / = :`.
pub fn check_id(field: &'static str, id: &str) -> Result<(), KeyCommandError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.+/=:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CommandError::invalid(
            field,
            format!("must be 1–{MAX_ID_LEN} characters of A-Z, a-z, 0-9 and _-.+/=:"),
        ))
    }
}

/// Decodes unpadded standard base64 of exactly `len` bytes.
fn decode(field: &'static str, text: &str, len: usize) -> Result<Vec<u8>, KeyCommandError> {
    match STANDARD_NO_PAD.decode(text) {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        Ok(_) => Err(CommandError::invalid(
            field,
            format!("must encode exactly {len} bytes"),
        )),
        Err(_) => Err(CommandError::invalid(
            field,
            "must be unpadded standard base64",
        )),
    }
}

/// Checks an ed25519 `signature` (base64) of `message` by `public_key` (raw 32 bytes).
fn verify(
    field: &'static str,
    public_key: &[u8],
    message: &str,
    signature: &str,
) -> Result<(), KeyCommandError> {
    let sig = decode(field, signature, 64)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message.as_bytes(), &sig)
        .map_err(|_| CommandError::Refused(KeyError::BadSignature(field)))
}

/// Checks an uploaded one-time or fallback key: its id, a 32-byte key, and its signature over
/// canonical `{"key": <key>}` by the device's ed25519 key.
fn check_signed_key(ed25519: &[u8], key_id: &str, k: &SignedKey) -> Result<(), KeyCommandError> {
    check_id("key_id", key_id)?;
    decode("key", &k.key, 32)?;
    verify(
        "signature",
        ed25519,
        &canonical_json(&[("key", &k.key)]),
        &k.signature,
    )
}

/// The key server: the conversation domain's key and to-device tables.
#[derive(Clone)]
pub struct KeyServer {
    pool: AnyPool,
    engine: Engine,
}

impl KeyServer {
    pub fn new(pool: AnyPool, engine: Engine) -> Self {
        KeyServer { pool, engine }
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// transaction that read first could not upgrade once another connection wrote, and the
    /// lock is what makes a claim or a position allocation atomic across processes.
    async fn begin(&self) -> Result<Transaction<'static, Any>, KeyCommandError> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db),
            Engine::Postgres => self.pool.begin().await.map_err(db),
        }
    }

    /// Registers `device_id` of `user` with its identity keys. `Ok(true)` when it was created,
    /// `Ok(false)` when the same keys were registered already (a retried upload).
    pub async fn register_device(
        &self,
        user: Uuid,
        device_id: &str,
        curve25519: &str,
        ed25519: &str,
        signature: &str,
    ) -> Result<bool, KeyCommandError> {
        check_id("device_id", device_id)?;
        decode("curve25519", curve25519, 32)?;
        let ed = decode("ed25519", ed25519, 32)?;
        let message = canonical_json(&[("curve25519", curve25519), ("ed25519", ed25519)]);
        verify("signature", &ed, &message, signature)?;
        let inserted = sqlx::query(
            "INSERT INTO conversation_devices \
             (user_id, device_id, curve25519, ed25519, signature, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id) DO NOTHING",
        )
        .bind(user.to_string())
        .bind(device_id)
        .bind(curve25519)
        .bind(ed25519)
        .bind(signature)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let existing = sqlx::query(
            "SELECT curve25519, ed25519 FROM conversation_devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.to_string())
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        match existing {
            Some(row) => {
                let (c, e): (String, String) = (
                    row.try_get("curve25519").map_err(db)?,
                    row.try_get("ed25519").map_err(db)?,
                );
                if c == curve25519 && e == ed25519 {
                    Ok(false)
                } else {
                    Err(CommandError::Refused(KeyError::DeviceExists))
                }
            }
            // Removed between the two statements: the caller may simply retry.
            None => Err(CommandError::Conflict),
        }
    }

    /// The devices of `user`, oldest first.
    pub async fn devices(&self, user: Uuid) -> Result<Vec<Device>, KeyCommandError> {
        sqlx::query_as::<_, Device>(
            "SELECT device_id, curve25519, ed25519, signature, created_at \
             FROM conversation_devices WHERE user_id = $1 ORDER BY created_at, device_id",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Removes a device with its one-time and fallback keys and its pending messages.
    pub async fn remove_device(&self, user: Uuid, device_id: &str) -> Result<(), KeyCommandError> {
        check_id("device_id", device_id)?;
        let mut tx = self.begin().await?;
        let removed =
            sqlx::query("DELETE FROM conversation_devices WHERE user_id = $1 AND device_id = $2")
                .bind(user.to_string())
                .bind(device_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
        if removed == 0 {
            return Err(CommandError::Refused(KeyError::UnknownDevice));
        }
        for table in [
            "conversation_one_time_keys",
            "conversation_fallback_keys",
            "conversation_to_device",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
            ))
            .bind(user.to_string())
            .bind(device_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Removes every device of `user` (deactivation).
    pub async fn remove_all_devices(&self, user: Uuid) -> Result<u64, KeyCommandError> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM conversation_devices WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        for table in [
            "conversation_one_time_keys",
            "conversation_fallback_keys",
            "conversation_to_device",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(user.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    /// The device's ed25519 key (raw), inside `tx`; `UnknownDevice` when it is not registered.
    async fn device_ed25519(
        tx: &mut Transaction<'static, Any>,
        user: Uuid,
        device_id: &str,
    ) -> Result<Vec<u8>, KeyCommandError> {
        let row = sqlx::query(
            "SELECT ed25519 FROM conversation_devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.to_string())
        .bind(device_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?
        .ok_or(CommandError::Refused(KeyError::UnknownDevice))?;
        let ed: String = row.try_get("ed25519").map_err(db)?;
        STANDARD_NO_PAD
            .decode(ed)
            .map_err(|_| CommandError::Internal("a stored ed25519 key does not decode".into()))
    }

    async fn unclaimed(
        tx: &mut Transaction<'static, Any>,
        user: Uuid,
        device_id: &str,
    ) -> Result<i64, KeyCommandError> {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM conversation_one_time_keys \
             WHERE user_id = $1 AND device_id = $2 AND claimed_at IS NULL",
        )
        .bind(user.to_string())
        .bind(device_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)
    }

    /// Stores signed one-time keys (in the order given: that is the order claims hand them
    /// out) and optionally replaces the fallback key; answers how many unclaimed one-time keys
    /// the device now holds. Every signature is checked before anything is stored; a key id
    /// uploaded before with the same key is skipped (a retried upload), with another key it is
    /// refused.
    pub async fn upload_keys(
        &self,
        user: Uuid,
        device_id: &str,
        keys: &[(String, SignedKey)],
        fallback: Option<&(String, SignedKey)>,
    ) -> Result<i64, KeyCommandError> {
        check_id("device_id", device_id)?;
        if keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(CommandError::invalid(
                "keys",
                format!("holds at most {MAX_KEYS_PER_UPLOAD} keys per upload"),
            ));
        }
        let mut tx = self.begin().await?;
        let ed = Self::device_ed25519(&mut tx, user, device_id).await?;
        for (key_id, k) in keys.iter().chain(fallback) {
            check_signed_key(&ed, key_id, k)?;
        }
        let now = ts(Utc::now());
        let mut added = 0;
        for (key_id, k) in keys {
            let inserted = sqlx::query(
                "INSERT INTO conversation_one_time_keys \
                 (user_id, device_id, key_id, key, signature, uploaded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
            )
            .bind(user.to_string())
            .bind(device_id)
            .bind(key_id)
            .bind(&k.key)
            .bind(&k.signature)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 1 {
                added += 1;
                continue;
            }
            let stored: String = sqlx::query_scalar(
                "SELECT key FROM conversation_one_time_keys \
                 WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
            )
            .bind(user.to_string())
            .bind(device_id)
            .bind(key_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if stored != k.key {
                return Err(CommandError::Refused(KeyError::KeyIdReused(key_id.clone())));
            }
        }
        if let Some((key_id, k)) = fallback {
            sqlx::query(
                "INSERT INTO conversation_fallback_keys \
                 (user_id, device_id, key_id, key, signature, uploaded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET key_id = excluded.key_id, \
                 key = excluded.key, signature = excluded.signature, \
                 uploaded_at = excluded.uploaded_at",
            )
            .bind(user.to_string())
            .bind(device_id)
            .bind(key_id)
            .bind(&k.key)
            .bind(&k.signature)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let count = Self::unclaimed(&mut tx, user, device_id).await?;
        if added > 0 && count > MAX_UNCLAIMED_KEYS {
            return Err(CommandError::Refused(KeyError::TooManyKeys));
        }
        tx.commit().await.map_err(db)?;
        Ok(count)
    }

    /// How many unclaimed one-time keys the device holds.
    pub async fn one_time_key_count(
        &self,
        user: Uuid,
        device_id: &str,
    ) -> Result<i64, KeyCommandError> {
        check_id("device_id", device_id)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        Self::device_ed25519(&mut tx, user, device_id).await?;
        let n = Self::unclaimed(&mut tx, user, device_id).await?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    /// Hands out the device's oldest unclaimed one-time key — at most once, ever — or, when
    /// none is left, its fallback key.
    pub async fn claim(&self, user: Uuid, device_id: &str) -> Result<Claimed, KeyCommandError> {
        check_id("device_id", device_id)?;
        let now = ts(Utc::now());
        let claimed = match self.engine {
            // One statement: the row lock taken by the subquery (skipping rows other claims
            // hold) is kept by the update; a row another claim marked meanwhile fails the
            // re-checked `claimed_at IS NULL` and is skipped, so no key goes out twice.
            Engine::Postgres => sqlx::query(
                "UPDATE conversation_one_time_keys SET claimed_at = $3 WHERE seq = (\
                     SELECT seq FROM conversation_one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 AND claimed_at IS NULL \
                     ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING key_id, key, signature",
            )
            .bind(user.to_string())
            .bind(device_id)
            .bind(&now)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?,
            // The write lock is held from BEGIN IMMEDIATE to COMMIT, across processes.
            Engine::Sqlite => {
                let mut tx = self.begin().await?;
                let row = sqlx::query(
                    "UPDATE conversation_one_time_keys SET claimed_at = $3 WHERE seq = (\
                         SELECT seq FROM conversation_one_time_keys \
                         WHERE user_id = $1 AND device_id = $2 AND claimed_at IS NULL \
                         ORDER BY seq LIMIT 1) \
                     RETURNING key_id, key, signature",
                )
                .bind(user.to_string())
                .bind(device_id)
                .bind(&now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                row
            }
        };
        let (row, fallback) = match claimed {
            Some(row) => (row, false),
            None => {
                let row = sqlx::query(
                    "SELECT key_id, key, signature FROM conversation_fallback_keys \
                     WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user.to_string())
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
                match row {
                    Some(row) => (row, true),
                    None => return Err(self.no_key(user, device_id).await),
                }
            }
        };
        Ok(Claimed {
            key_id: row.try_get("key_id").map_err(db)?,
            key: row.try_get("key").map_err(db)?,
            signature: row.try_get("signature").map_err(db)?,
            fallback,
        })
    }

    /// Why a claim found nothing: an unknown device, or one without keys.
    async fn no_key(&self, user: Uuid, device_id: &str) -> KeyCommandError {
        let known = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM conversation_devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.to_string())
        .bind(device_id)
        .fetch_one(&self.pool)
        .await;
        match known {
            Ok(0) => CommandError::Refused(KeyError::UnknownDevice),
            Ok(_) => CommandError::Refused(KeyError::NoOneTimeKey),
            Err(e) => db(e),
        }
    }

    /// Whether `user` has registered `device_id`.
    async fn require_device(&self, user: Uuid, device_id: &str) -> Result<(), KeyCommandError> {
        match self.no_key(user, device_id).await {
            CommandError::Refused(KeyError::NoOneTimeKey) => Ok(()),
            other => Err(other),
        }
    }

    /// Queues `messages` from `sender` (optionally naming the sending device, which must be
    /// theirs), all or none; answers how many were queued. Each recipient device's messages get
    /// the next positions of that device, in the order given.
    pub async fn send_to_device(
        &self,
        sender: Uuid,
        sender_device: Option<&str>,
        messages: Vec<Outgoing>,
    ) -> Result<usize, KeyCommandError> {
        if messages.is_empty() || messages.len() > MAX_MESSAGES_PER_REQUEST {
            return Err(CommandError::invalid(
                "messages",
                format!("must hold 1–{MAX_MESSAGES_PER_REQUEST} messages"),
            ));
        }
        if let Some(d) = sender_device {
            check_id("sender_device_id", d)?;
            self.require_device(sender, d).await?;
        }
        // Grouped per device (in a sorted order, so two senders lock devices in the same order
        // and cannot deadlock), each group in the order given.
        let mut groups: BTreeMap<(Uuid, String), Vec<String>> = BTreeMap::new();
        for m in &messages {
            check_id("device_id", &m.device_id)?;
            let content = serde_json::to_string(&m.content)
                .map_err(|_| CommandError::invalid("content", "must be JSON"))?;
            if content.len() > MAX_CONTENT_BYTES {
                return Err(CommandError::Refused(KeyError::TooLarge(format!(
                    "a message's content is at most {MAX_CONTENT_BYTES} bytes"
                ))));
            }
            groups
                .entry((m.user_id, m.device_id.clone()))
                .or_default()
                .push(content);
        }
        let now = ts(Utc::now());
        let mut tx = self.begin().await?;
        for ((user, device), contents) in &groups {
            let n = contents.len() as i64;
            let next: Option<i64> = sqlx::query_scalar(
                "UPDATE conversation_devices SET to_device_next = to_device_next + $3 \
                 WHERE user_id = $1 AND device_id = $2 RETURNING to_device_next",
            )
            .bind(user.to_string())
            .bind(device)
            .bind(n)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let Some(next) = next else {
                return Err(CommandError::Refused(KeyError::UnknownDevice));
            };
            for (i, content) in contents.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO conversation_to_device (user_id, device_id, position, \
                     sender_user_id, sender_device_id, content, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(user.to_string())
                .bind(device)
                .bind(next - n + i as i64)
                .bind(sender.to_string())
                .bind(sender_device)
                .bind(content)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(messages.len())
    }

    /// The device's pending messages in arrival order, at most `limit` (1–[`MAX_FETCH`]).
    pub async fn pending(
        &self,
        user: Uuid,
        device_id: &str,
        limit: i64,
    ) -> Result<Vec<Pending>, KeyCommandError> {
        check_id("device_id", device_id)?;
        if !(1..=MAX_FETCH).contains(&limit) {
            return Err(CommandError::invalid(
                "limit",
                format!("must be 1–{MAX_FETCH}"),
            ));
        }
        self.require_device(user, device_id).await?;
        let rows = sqlx::query(
            "SELECT position, sender_user_id, sender_device_id, content \
             FROM conversation_to_device WHERE user_id = $1 AND device_id = $2 \
             ORDER BY position LIMIT $3",
        )
        .bind(user.to_string())
        .bind(device_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                let sender: String = row.try_get("sender_user_id").map_err(db)?;
                let content: String = row.try_get("content").map_err(db)?;
                Ok(Pending {
                    position: row.try_get("position").map_err(db)?,
                    sender_user_id: Uuid::try_parse(&sender)
                        .map_err(|_| CommandError::Internal("a stored sender id".into()))?,
                    sender_device_id: row.try_get("sender_device_id").map_err(db)?,
                    content: serde_json::from_str(&content)
                        .map_err(|_| CommandError::Internal("a stored content".into()))?,
                })
            })
            .collect()
    }

    /// Deletes the device's messages up to and including position `up_to`; answers how many.
    /// A position the device was never sent is refused, so a mistyped number cannot delete
    /// messages the device has not seen.
    pub async fn ack(
        &self,
        user: Uuid,
        device_id: &str,
        up_to: i64,
    ) -> Result<u64, KeyCommandError> {
        check_id("device_id", device_id)?;
        let mut tx = self.begin().await?;
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT to_device_next FROM conversation_devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.to_string())
        .bind(device_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let next = next.ok_or(CommandError::Refused(KeyError::UnknownDevice))?;
        if up_to < 0 || up_to >= next {
            return Err(CommandError::invalid(
                "up_to",
                "must be a position this device was sent",
            ));
        }
        let deleted = sqlx::query(
            "DELETE FROM conversation_to_device \
             WHERE user_id = $1 AND device_id = $2 AND position <= $3",
        )
        .bind(user.to_string())
        .bind(device_id)
        .bind(up_to)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_without_spaces() {
        assert_eq!(
            canonical_json(&[("ed25519", "b"), ("curve25519", "a")]),
            r#"{"curve25519":"a","ed25519":"b"}"#
        );
    }

    #[test]
    fn ids_and_base64_are_checked() {
        assert!(check_id("device_id", "ABCDEF_1").is_ok());
        assert!(check_id("device_id", "").is_err());
        assert!(check_id("device_id", "a b").is_err());
        assert!(check_id("device_id", &"x".repeat(65)).is_err());
        let key = STANDARD_NO_PAD.encode([7u8; 32]);
        assert!(decode("k", &key, 32).is_ok());
        assert!(
            decode("k", &format!("{key}="), 32).is_err(),
            "padding refused"
        );
        assert!(decode("k", "not base64!", 32).is_err());
        assert!(decode("k", &STANDARD_NO_PAD.encode([7u8; 31]), 32).is_err());
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let msg = canonical_json(&[("key", "abc")]);
        let sig = STANDARD_NO_PAD.encode(pair.sign(msg.as_bytes()).as_ref());
        assert!(verify("signature", pair.public_key().as_ref(), &msg, &sig).is_ok());
        assert!(verify("signature", &[1u8; 32], &msg, &sig).is_err());
        assert!(verify("signature", pair.public_key().as_ref(), "other", &sig).is_err());
    }
}
