//! Stream keys (ADR 0017): generated here, shown once, stored only as a SHA-256 hash in the
//! stream domain's `stream_keys` table under a random `key_id`, which is all an event names.
//!
//! A key is `nsk_` + 32 random bytes from the OS in URL-safe base64 (43 characters). A plain
//! hash is enough (no argon2): the key has 256 bits of entropy, so there is nothing to guess
//! offline. Lookup is by the hash (an index probe); the found row's hash is then compared in
//! constant time. The probe's timing reveals nothing useful: it depends on the hash of the
//! presented key, which an attacker cannot steer towards a stored one.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every key starts with this, so a leaked one is recognisable (e.g. by secret scanners).
pub const PREFIX: &str = "nsk_";
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Characters of a key: the prefix and the unpadded base64 of [`KEY_BYTES`].
pub const KEY_LEN: usize = PREFIX.len() + (KEY_BYTES * 4).div_ceil(3);

/// A fresh stream key and its hash.
pub fn generate() -> (SecretString, String) {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&key);
    (SecretString::from(key), hash)
}

/// SHA-256 hex of a key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `text` has the shape of a key (checked before any lookup).
pub fn well_formed(text: &str) -> bool {
    text.len() == KEY_LEN
        && text.starts_with(PREFIX)
        && text[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key table.
#[derive(Clone)]
pub struct Keys {
    pool: AnyPool,
}

impl Keys {
    pub fn new(pool: AnyPool) -> Self {
        Keys { pool }
    }

    /// Stores the hash of a new key of `stream_id`; its id goes into the event.
    pub async fn insert(
        &self,
        stream_id: Uuid,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO stream_keys (key_id, stream_id, key_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(stream_id.to_string())
        .bind(key_hash)
        .bind(nova_infra::readmodel::ts(now))
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The (key id, stream id) a presented key belongs to, if it was ever issued. Whether it is
    /// still the stream's current key is the aggregate's to say.
    pub async fn find(&self, key: &SecretString) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
        let key = key.expose_secret();
        if !well_formed(key) {
            return Ok(None);
        }
        let presented = hash(key);
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT key_id, stream_id, key_hash FROM stream_keys WHERE key_hash = $1",
        )
        .bind(&presented)
        .fetch_optional(&self.pool)
        .await?;
        let Some((key_id, stream_id, stored)) = row else {
            return Ok(None);
        };
        if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
            return Ok(None);
        }
        Ok(Uuid::parse_str(&key_id)
            .ok()
            .zip(Uuid::parse_str(&stream_id).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_url_safe() {
        let (a, ha) = generate();
        let (b, hb) = generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(ha, hb);
        assert_eq!(a.expose_secret().len(), KEY_LEN);
        assert!(well_formed(a.expose_secret()));
        assert_eq!(hash(a.expose_secret()), ha);
        assert!(!ha.contains(&a.expose_secret()[PREFIX.len()..]));
        for bad in [
            "",
            "nsk_",
            "nsk_short",
            &format!("xyz_{}", &a.expose_secret()[4..]),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
        let mut spaced = a.expose_secret().to_owned();
        spaced.replace_range(10..11, " ");
        assert!(!well_formed(&spaced));
    }
}
