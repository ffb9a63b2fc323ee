//! The user domain's data keys (`user_data_keys`, ADR 0025): one key per user, sealing that
//! user's personal data wherever it is stored in events. The event store asks for keys through
//! [`nova_infra::personal::DataKeys`], which this table implements; no key ever enters an
//! event, a log line or JetStream (events carry the key id beside the ciphertext).
//!
//! Erasure ([`DataKeyVault::shred`]) sets the key to NULL and keeps the row as a tombstone, so
//! no new key is made for that user: whatever of theirs is appended later is stored as
//! `"[erased]"`.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use nova_infra::personal::{DataKey, DataKeys};
use nova_infra::store::StoreError;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

/// Sealing keys cached per process (owners writing now); cleared when it grows past this.
const CACHE_MAX: usize = 10_000;
/// Key ids asked for in one query.
const CHUNK: usize = 500;

/// The data keys table.
pub struct DataKeyVault {
    pool: AnyPool,
    /// Keys of owners who wrote recently, for the append path. (A process may still *seal*
    /// under a key another process destroyed, until its cache forgets it: erasure needs a
    /// deactivated user, who writes nothing more.)
    sealing: Mutex<HashMap<Uuid, DataKey>>,
    /// Keys found by recent reads, by key id, each with the instant it was read: every
    /// projector and policy of a process reads the same new events, and one query answers them
    /// all. Kept for [`OPENING_TTL`] only and dropped at once by this process's own
    /// [`DataKeyVault::shred`]; another process's erasure is seen within that time.
    opening: Mutex<HashMap<Uuid, (std::time::Instant, DataKey)>>,
}

/// How long a key read for opening is trusted without asking the table again.
pub const OPENING_TTL: std::time::Duration = std::time::Duration::from_secs(1);

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("data keys: {e}"))
}

fn parse_key(key_id: &str, secret: &str) -> Result<DataKey, StoreError> {
    let corrupt = || StoreError::Invalid("a stored data key is unreadable".into());
    let id = Uuid::parse_str(key_id).map_err(|_| corrupt())?;
    let bytes = hex::decode(secret).map_err(|_| corrupt())?;
    DataKey::from_slice(id, &bytes).ok_or_else(corrupt)
}

impl DataKeyVault {
    pub fn new(pool: AnyPool) -> Self {
        DataKeyVault {
            pool,
            sealing: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, owner: Uuid) -> Option<DataKey> {
        self.sealing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&owner)
            .cloned()
    }

    fn remember(&self, owner: Uuid, key: &DataKey) {
        let mut cache = self.sealing.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(owner, key.clone());
    }

    /// The owner's row: `None` = no row; `Some(None)` = erased.
    async fn row(&self, owner: Uuid) -> Result<Option<Option<DataKey>>, StoreError> {
        let row = sqlx::query("SELECT key_id, secret FROM user_data_keys WHERE user_id = $1")
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key_id: String = row.try_get("key_id").map_err(unavailable)?;
        let secret: Option<String> = row.try_get("secret").map_err(unavailable)?;
        match secret {
            Some(secret) => Ok(Some(Some(parse_key(&key_id, &secret)?))),
            None => Ok(Some(None)),
        }
    }

    /// Destroys `user_id`'s key for good (idempotent). Afterwards every sealed field of theirs
    /// reads as erased, and no key is made for them again. True if a key was destroyed now.
    pub async fn shred(&self, user_id: Uuid) -> Result<bool, StoreError> {
        self.sealing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&user_id);
        let now = nova_infra::readmodel::ts(Utc::now());
        let destroyed = sqlx::query(
            "UPDATE user_data_keys SET secret = NULL, erased_at = $2 \
             WHERE user_id = $1 AND secret IS NOT NULL",
        )
        .bind(user_id.to_string())
        .bind(&now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        // A user who never wrote anything personal has no row: a tombstone keeps a key from
        // being made for them later.
        sqlx::query(
            "INSERT INTO user_data_keys (user_id, key_id, secret, created_at, erased_at) \
             VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id.to_string())
        .bind(Uuid::now_v7().to_string())
        .bind(&now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        // Forget every key this process read lately (the opening cache is by key id and does
        // not know owners), now that a read cannot find the destroyed one again.
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(destroyed > 0)
    }

    /// True if `user_id`'s key was destroyed.
    pub async fn is_shredded(&self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(matches!(self.row(user_id).await?, Some(None)))
    }
}

#[async_trait]
impl DataKeys for DataKeyVault {
    async fn sealing_key(&self, owner: Uuid) -> Result<Option<DataKey>, StoreError> {
        if let Some(key) = self.cached(owner) {
            return Ok(Some(key));
        }
        // One statement on a miss: a fresh key is inserted unless the owner has a row, and the
        // row that stands (whichever insert won, or a tombstone) is answered. The no-op update
        // makes `RETURNING` answer an existing row too.
        let fresh = DataKey::generate()?;
        let row = sqlx::query(
            "INSERT INTO user_data_keys (user_id, key_id, secret, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id \
             RETURNING key_id, secret",
        )
        .bind(owner.to_string())
        .bind(fresh.id.to_string())
        .bind(hex::encode(fresh.bytes()))
        .bind(nova_infra::readmodel::ts(Utc::now()))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let key_id: String = row.try_get("key_id").map_err(unavailable)?;
        let secret: Option<String> = row.try_get("secret").map_err(unavailable)?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        let key = parse_key(&key_id, &secret)?;
        self.remember(owner, &key);
        Ok(Some(key))
    }

    async fn opening_keys(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, DataKey>, StoreError> {
        let mut keys = HashMap::new();
        let mut missing = Vec::new();
        {
            let now = std::time::Instant::now();
            let mut cache = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (at, _)| now.duration_since(*at) < OPENING_TTL);
            for id in ids {
                match cache.get(id) {
                    Some((_, key)) => {
                        keys.insert(*id, key.clone());
                    }
                    None => missing.push(*id),
                }
            }
        }
        let read_at = std::time::Instant::now();
        let mut found = Vec::new();
        for chunk in missing.chunks(CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT key_id, secret FROM user_data_keys \
                 WHERE secret IS NOT NULL AND key_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await.map_err(unavailable)? {
                let key_id: String = row.try_get("key_id").map_err(unavailable)?;
                let secret: Option<String> = row.try_get("secret").map_err(unavailable)?;
                if let Some(secret) = secret {
                    let key = parse_key(&key_id, &secret)?;
                    found.push(key);
                }
            }
        }
        if !found.is_empty() {
            let mut cache = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            for key in found {
                cache.insert(key.id, (read_at, key.clone()));
                keys.insert(key.id, key);
            }
        }
        Ok(keys)
    }
}
