//! Password hashing (argon2id, legacy SHA-256 verification), access tokens (JWT, HS256) and
//! refresh tokens (random, stored only as SHA-256).
//!
//! Every argon2 run takes `memory_kib` of memory for its duration, so runs are bounded: at most
//! [`Argon2Config::max_concurrent`] at once, the rest wait in line for at most
//! [`Argon2Config::queue_timeout`] and are then refused with [`PasswordError::Busy`] (503).
//! Each run works in a memory buffer taken from a pool (at most one per slot, kept for reuse),
//! so the argon2 memory of the process is `slots × memory_kib` whatever the load, and it does
//! not depend on how the allocator caches freed blocks per thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// argon2id cost parameters (RFC 9106 / OWASP: m = 19 MiB, t = 2, p = 1 by default) and how
/// many runs may be in progress at once.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// argon2 runs in progress at once; 0 = the number of available cores.
    pub max_concurrent: usize,
    /// How long a password check waits for a free slot before it is refused as busy.
    pub queue_timeout: std::time::Duration,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
            queue_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// Why a password could not be hashed or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Every argon2 slot stayed taken for the whole queue timeout.
    #[error("too many password checks in progress")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// A hash of a random password, verified against when the user does not exist so that
    /// "unknown user" costs the same time as "wrong password".
    dummy_hash: String,
    slots: Arc<tokio::sync::Semaphore>,
    queue_timeout: std::time::Duration,
    runs: Arc<AtomicU64>,
    /// argon2 working memory, reused across runs: never more buffers than slots.
    buffers: Arc<std::sync::Mutex<Vec<Vec<Block>>>>,
}

impl Passwords {
    pub fn new(cfg: Argon2Config) -> Result<Self, String> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        let slots = match cfg.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut this = Passwords {
            params,
            dummy_hash: String::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            queue_timeout: cfg.queue_timeout,
            runs: Arc::default(),
            buffers: Arc::default(),
        };
        this.dummy_hash = this.hash_blocking(&Uuid::new_v4().to_string())?;
        this.runs.store(0, Ordering::Relaxed);
        Ok(this)
    }

    /// argon2 computations (hashes and verifications) run so far.
    pub fn argon2_runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs `f` on the blocking pool once a slot is free; the slot is held until `f` returns,
    /// also when the caller stops waiting.
    async fn bounded<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Passwords) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let slot = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!("nova_argon2_busy_total").increment(1);
                PasswordError::Busy
            })?
            .map_err(|_| PasswordError::Busy)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f(&this)
        })
        .await
        .map_err(|e| PasswordError::Failed(format!("hashing task failed: {e}")))
    }

    /// One argon2 computation into `out`, in a pooled buffer.
    fn compute(
        &self,
        argon2: &Argon2<'_>,
        block_count: usize,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        if buffer.len() < block_count {
            buffer.resize(block_count, Block::default());
        }
        let result =
            argon2.hash_password_into_with_memory(password, salt, out, &mut buffer[..block_count]);
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buffer);
        result
    }

    fn hash_blocking(&self, password: &str) -> Result<String, String> {
        let fail = |e: &dyn std::fmt::Display| format!("hashing failed: {e}");
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_bytes)
            .map_err(|e| fail(&e))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        self.compute(
            &argon2,
            self.params.block_count(),
            password.as_bytes(),
            salt_bytes,
            &mut out,
        )
        .map_err(|e| fail(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| fail(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Hashes off the async runtime (argon2 is deliberately slow).
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        self.bounded(move |this| this.hash_blocking(password.expose_secret()))
            .await?
            .map_err(PasswordError::Failed)
    }

    /// Checks `password` against `stored` (argon2 PHC string or legacy SHA-256 hex). `None`
    /// stands for "no such user" and still costs one argon2 verification.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verification, PasswordError> {
        self.bounded(move |this| this.verify_blocking(password.expose_secret(), stored))
            .await
    }

    fn verify_blocking(&self, password: &str, stored: Option<String>) -> Verification {
        let Some(stored) = stored else {
            let _ = self.argon2_matches(password, &self.dummy_hash);
            return Verification::Mismatch;
        };
        if is_legacy_sha256(&stored) {
            // Spend the same argon2 time as every other path, then compare in constant time.
            let _ = self.argon2_matches(password, &self.dummy_hash);
            let computed = hex::encode(Sha256::digest(password.as_bytes()));
            let ok: bool = computed
                .as_bytes()
                .ct_eq(stored.to_ascii_lowercase().as_bytes())
                .into();
            return if ok {
                Verification::MatchLegacy
            } else {
                Verification::Mismatch
            };
        }
        if self.argon2_matches(password, &stored) {
            Verification::Match
        } else {
            Verification::Mismatch
        }
    }

    /// Recomputes a stored PHC hash with its own parameters and compares in constant time.
    fn argon2_matches(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            self.runs.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) = (
            Algorithm::try_from(parsed.algorithm),
            Params::try_from(&parsed),
            parsed.hash,
            parsed.salt,
        ) else {
            self.runs.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        let argon2 = Argon2::new(algorithm, version, params.clone());
        if self
            .compute(
                &argon2,
                params.block_count(),
                password.as_bytes(),
                salt_bytes,
                &mut out,
            )
            .is_err()
        {
            return false;
        }
        out.ct_eq(expected.as_bytes()).into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Match,
    /// Matched a legacy SHA-256 hash: the caller re-hashes with argon2id.
    MatchLegacy,
    Mismatch,
}

pub use nova_aggregates::user::is_legacy_sha256;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &SecretString, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        Tokens {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now.timestamp(),
            exp: (now + self.access_ttl).timestamp(),
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| format!("cannot sign token: {e}"))
    }

    /// Verifies signature and expiry (no leeway: an expired token is expired).
    pub fn verify_access(&self, token: &str) -> Option<AccessClaims> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// A refresh token names its user and session so the server can find the session without
/// a lookup table: `nrt_<user>_<session>_<secret>`; only its SHA-256 is stored.
pub struct RefreshToken {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub token: SecretString,
}

impl RefreshToken {
    pub fn generate(user_id: Uuid, session_id: Uuid) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!(
            "nrt_{}_{}_{}",
            user_id.simple(),
            session_id.simple(),
            hex::encode(secret)
        );
        RefreshToken {
            user_id,
            session_id,
            token: SecretString::from(token),
        }
    }

    pub fn parse(token: &str) -> Option<(Uuid, Uuid)> {
        let rest = token.strip_prefix("nrt_")?;
        let mut parts = rest.split('_');
        let user = Uuid::try_parse(parts.next()?).ok()?;
        let session = Uuid::try_parse(parts.next()?).ok()?;
        let secret = parts.next()?;
        if parts.next().is_some() || secret.len() != 64 {
            return None;
        }
        Some((user, session))
    }

    pub fn hash(&self) -> String {
        hash_token(self.token.expose_secret())
    }
}

/// Refresh tokens carry 256 random bits, so a fast hash is enough to make the stored form
/// useless to a reader of the database.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(Argon2Config {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
            ..Argon2Config::default()
        })
        .unwrap()
    }

    #[test]
    fn hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let p = cheap();
        // Ours verifies with the reference implementation …
        let ours = p.hash_blocking("pooled memory").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"pooled memory", &parsed)
            .is_ok());
        // … and the reference implementation's (other parameters) verifies with ours.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(512, 2, 1, None).unwrap(),
        )
        .hash_password(b"reference", &salt)
        .unwrap()
        .to_string();
        assert_eq!(
            p.verify_blocking("reference", Some(reference.clone())),
            Verification::Match
        );
        assert_eq!(
            p.verify_blocking("Reference", Some(reference)),
            Verification::Mismatch
        );
        assert_eq!(
            p.verify_blocking("x", Some("$argon2id$garbage".into())),
            Verification::Mismatch
        );
        // Never more buffers than runs at once.
        assert_eq!(p.buffers.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_are_bounded_and_a_full_queue_is_refused_as_busy() {
        let p = Passwords::new(Argon2Config {
            memory_kib: 8 * 1024,
            iterations: 4,
            parallelism: 1,
            max_concurrent: 1,
            queue_timeout: std::time::Duration::from_millis(1),
        })
        .unwrap();
        let h = p.hash(SecretString::from("pw")).await.unwrap();
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let (p, h) = (p.clone(), h.clone());
                tokio::spawn(async move { p.verify(SecretString::from("pw"), Some(h)).await })
            })
            .collect();
        let mut results = Vec::new();
        for c in checks {
            results.push(c.await.unwrap());
        }
        assert!(results.contains(&Ok(Verification::Match)));
        assert!(results.contains(&Err(PasswordError::Busy)));
        // Only admitted checks ran argon2.
        let admitted = results.iter().filter(|r| r.is_ok()).count() as u64;
        assert_eq!(p.argon2_runs(), 1 + admitted);
    }

    #[tokio::test]
    async fn argon2_and_legacy_verification() {
        let p = cheap();
        let h = p.hash(SecretString::from("correct horse")).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(
            p.verify(SecretString::from("correct horse"), Some(h.clone()))
                .await,
            Ok(Verification::Match)
        );
        assert_eq!(
            p.verify(SecretString::from("wrong"), Some(h)).await,
            Ok(Verification::Mismatch)
        );
        let legacy = hex::encode(Sha256::digest(b"old secret"));
        assert_eq!(
            p.verify(SecretString::from("old secret"), Some(legacy.clone()))
                .await,
            Ok(Verification::MatchLegacy)
        );
        assert_eq!(
            p.verify(SecretString::from("old secreT"), Some(legacy))
                .await,
            Ok(Verification::Mismatch)
        );
        assert_eq!(
            p.verify(SecretString::from("x"), None).await,
            Ok(Verification::Mismatch)
        );
    }

    #[test]
    fn tokens_roundtrip_and_reject_tampering() {
        let t = Tokens::new(
            &SecretString::from("s3cret-s3cret-s3cret-s3cret-s3cret"),
            Duration::minutes(15),
            Duration::days(30),
        );
        let (u, s) = (Uuid::now_v7(), Uuid::now_v7());
        let tok = t.issue_access(u, s, Utc::now()).unwrap();
        let c = t.verify_access(&tok).unwrap();
        assert_eq!((c.sub, c.sid), (u, s));
        let mut tampered = tok.clone();
        tampered.pop();
        tampered.push(if tok.ends_with('A') { 'B' } else { 'A' });
        assert!(t.verify_access(&tampered).is_none());
        let old = t
            .issue_access(u, s, Utc::now() - Duration::minutes(16))
            .unwrap();
        assert!(t.verify_access(&old).is_none());
        let rt = RefreshToken::generate(u, s);
        assert_eq!(RefreshToken::parse(rt.token.expose_secret()), Some((u, s)));
        assert_eq!(RefreshToken::parse("nrt_x_y_z"), None);
    }
}
