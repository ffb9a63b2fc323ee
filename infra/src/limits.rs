//! Shared limits (ADR 0022): GCRA rate limits and small counters (failed logins of names
//! without an account) that every API process must see alike. With a Redis URL they live in
//! Redis — each rate decision is one atomic Lua script call (`EVALSHA`, `EVAL` on a cold
//! cache), each counter update an atomic compare-and-set script — otherwise in this process.
//!
//! The caller passes the time (milliseconds since the epoch) into every decision, so both
//! stores decide from the same arguments and tests can move a clock instead of sleeping.
//!
//! Redis trouble never fails a request: a call that errs or times out (250 ms) is decided by
//! the in-process store instead (the limits then hold per process), logged and counted in
//! `nova_limits_store_errors_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A rate: `limit` requests per `window`, at most `burst` of them back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
    pub burst: u32,
}

impl Quota {
    /// `limit` requests a minute, `burst` at once.
    pub fn per_minute(limit: u32, burst: u32) -> Self {
        Quota {
            limit,
            window: Duration::from_secs(60),
            burst,
        }
    }

    /// The GCRA's emission interval: one request is worth this many milliseconds.
    fn emission_ms(&self) -> i64 {
        (self.window.as_millis() as i64 / i64::from(self.limit.max(1))).max(1)
    }

    /// How far ahead of now the theoretical arrival time may run: the burst.
    fn capacity_ms(&self) -> i64 {
        self.emission_ms() * i64::from(self.burst.max(1))
    }
}

/// One rate decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that may follow at once.
    pub remaining: u32,
    /// Milliseconds until the full burst is available again.
    pub reset_ms: u64,
    /// When refused: milliseconds until one request is allowed.
    pub retry_after_ms: u64,
}

/// GCRA over a stored theoretical arrival time (`tat`, ms): the decision and the new `tat` to
/// store (`None` when refused: a refusal does not use up quota). The Lua script in
/// [`GCRA_SCRIPT`] is the same arithmetic; `infra/tests/limits.rs` holds them to it.
pub fn gcra(tat: Option<i64>, now: i64, quota: &Quota) -> (Decision, Option<i64>) {
    let t = quota.emission_ms();
    let cap = quota.capacity_ms();
    let tat = tat.unwrap_or(now).max(now);
    let next = tat + t;
    let ahead = next - now;
    if ahead > cap {
        let d = Decision {
            allowed: false,
            remaining: 0,
            reset_ms: (tat - now) as u64,
            retry_after_ms: (ahead - cap) as u64,
        };
        return (d, None);
    }
    let d = Decision {
        allowed: true,
        remaining: ((cap - ahead) / t) as u32,
        reset_ms: ahead as u64,
        retry_after_ms: 0,
    };
    (d, Some(next))
}

/// [`gcra`] in Lua, run atomically by Redis. KEYS[1] = the key; ARGV = now, emission interval,
/// capacity (ms). Returns {allowed (0/1), remaining, reset, retry_after}. The key expires a
/// minute after its burst is full again, so idle keys cost nothing; the minute keeps the expiry
/// (Redis's clock) from ever running ahead of the callers' clocks, which decide.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local nxt = tat + t
local ahead = nxt - now
if ahead > cap then
  return {0, 0, tat - now, ahead - cap}
end
redis.call('SET', KEYS[1], nxt, 'PX', ahead + 60000)
return {1, math.floor((cap - ahead) / t), ahead, 0}
";

/// Compare-and-set of a counter record: KEYS[1]; ARGV = expected value ('' = absent), new
/// value, time to live (ms). Returns 1 when it was set.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// A counter update lost its compare-and-set this many times in a row: the store is too
/// contended for this key, decided in process instead. Between attempts it backs off a little
/// longer each time (records are failed logins of one name: contention is rare and short).
const CAS_ATTEMPTS: u64 = 32;

/// Memory budget of the in-process counter records (about 30,000 failed-login names).
pub const LOCAL_RECORDS_MAX_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
#[error("limits store: {0}")]
struct StoreError(String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

/// Where limits are kept; cheap to clone (shared).
#[derive(Clone)]
pub struct Limits {
    local: Arc<Local>,
    redis: Option<RedisStore>,
}

#[derive(Clone)]
struct RedisStore {
    conn: redis::aio::ConnectionManager,
    prefix: Arc<str>,
    gcra: Arc<redis::Script>,
    cas: Arc<redis::Script>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::in_process()
    }
}

impl Limits {
    /// Limits kept in this process only.
    pub fn in_process() -> Self {
        Limits {
            local: Arc::new(Local::new(LOCAL_RECORDS_MAX_BYTES)),
            redis: None,
        }
    }

    /// Limits kept in Redis under keys starting with `prefix`. Connects lazily: a Redis that is
    /// down at start is the same as one that goes down later (decided in process meanwhile).
    pub fn redis(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("NOVA_REDIS_URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(Duration::from_millis(250)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("NOVA_REDIS_URL: {e}"))?;
        Ok(Limits {
            local: Arc::new(Local::new(LOCAL_RECORDS_MAX_BYTES)),
            redis: Some(RedisStore {
                conn,
                prefix: prefix.into(),
                gcra: Arc::new(redis::Script::new(GCRA_SCRIPT)),
                cas: Arc::new(redis::Script::new(CAS_SCRIPT)),
            }),
        })
    }

    /// `redis` or `in_process`.
    pub fn backend(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "in_process"
        }
    }

    /// Whether the shared store answers (always `Ok` in process); for readiness and tests.
    pub async fn ping(&self) -> Result<(), String> {
        let Some(r) = &self.redis else {
            return Ok(());
        };
        let mut conn = r.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Takes one request of `quota` for `key` at `now` (ms since the epoch).
    pub async fn acquire(&self, key: &str, quota: &Quota, now: i64) -> Decision {
        if let Some(r) = &self.redis {
            match r.acquire(key, quota, now).await {
                Ok(d) => return d,
                Err(e) => store_failed(&e),
            }
        }
        self.local.acquire(key, quota, now)
    }

    /// Reads and replaces the record `key` atomically: `f` gets the current value (`None` when
    /// absent or expired) and returns the value to store (kept for `ttl`) and an answer.
    pub async fn update<R>(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
        f: impl Fn(Option<&str>) -> (String, R),
    ) -> R {
        if let Some(r) = &self.redis {
            match r.update(key, ttl, &f).await {
                Ok(answer) => return answer,
                Err(e) => store_failed(&e),
            }
        }
        self.local.update(key, ttl, now, f)
    }
}

fn store_failed(e: &StoreError) {
    metrics::counter!("nova_limits_store_errors_total").increment(1);
    tracing::warn!(error = %e, "limits store unavailable; deciding in this process");
}

impl RedisStore {
    async fn acquire(&self, key: &str, quota: &Quota, now: i64) -> Result<Decision, StoreError> {
        let mut conn = self.conn.clone();
        let (allowed, remaining, reset, retry): (i64, i64, i64, i64) = self
            .gcra
            .key(format!("{}rl:{key}", self.prefix))
            .arg(now)
            .arg(quota.emission_ms())
            .arg(quota.capacity_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u32,
            reset_ms: reset.max(0) as u64,
            retry_after_ms: retry.max(0) as u64,
        })
    }

    async fn update<R>(
        &self,
        key: &str,
        ttl: Duration,
        f: &impl Fn(Option<&str>) -> (String, R),
    ) -> Result<R, StoreError> {
        let mut conn = self.conn.clone();
        let key = format!("{}rec:{key}", self.prefix);
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_micros(200 * attempt)).await;
            }
            let current: Option<String> =
                redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let (next, answer) = f(current.as_deref());
            let set: i64 = self
                .cas
                .key(&key)
                .arg(current.as_deref().unwrap_or(""))
                .arg(&next)
                .arg(ttl.as_millis().max(1) as u64)
                .invoke_async(&mut conn)
                .await?;
            if set == 1 {
                return Ok(answer);
            }
        }
        Err(StoreError(format!("{key}: too contended")))
    }
}

/// The in-process store: rate keys (dropped once their burst is full again) and counter
/// records (bounded in bytes, least recently used evicted first).
struct Local {
    rates: Mutex<Rates>,
    records: Mutex<Records>,
}

#[derive(Default)]
struct Rates {
    tats: HashMap<String, i64>,
    /// Size at which the map is next swept of keys whose burst is full again.
    sweep_at: usize,
}

struct Records {
    entries: HashMap<String, (String, i64, u64)>,
    bytes: usize,
    max_bytes: usize,
    /// Use counter: the entry with the lowest is evicted first.
    clock: u64,
}

impl Local {
    fn new(max_bytes: usize) -> Self {
        Local {
            rates: Mutex::default(),
            records: Mutex::new(Records {
                entries: HashMap::new(),
                bytes: 0,
                max_bytes,
                clock: 0,
            }),
        }
    }

    fn acquire(&self, key: &str, quota: &Quota, now: i64) -> Decision {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let (decision, next) = gcra(rates.tats.get(key).copied(), now, quota);
        if let Some(next) = next {
            rates.tats.insert(key.to_owned(), next);
            if rates.tats.len() >= rates.sweep_at {
                rates.tats.retain(|_, tat| *tat > now);
                rates.sweep_at = (rates.tats.len() * 2).max(1024);
            }
        }
        decision
    }

    fn update<R>(
        &self,
        key: &str,
        ttl: Duration,
        now: i64,
        f: impl Fn(Option<&str>) -> (String, R),
    ) -> R {
        let mut rec = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let current = rec
            .entries
            .get(key)
            .filter(|(_, expires, _)| *expires > now)
            .map(|(v, _, _)| v.clone());
        let (next, answer) = f(current.as_deref());
        rec.put(key, next, now + ttl.as_millis() as i64);
        answer
    }
}

impl Records {
    fn cost(key: &str, value: &str) -> usize {
        const OVERHEAD: usize = 96;
        key.len() + value.len() + OVERHEAD
    }

    fn put(&mut self, key: &str, value: String, expires: i64) {
        self.clock += 1;
        let cost = Self::cost(key, &value);
        if let Some((old, _, _)) = self.entries.remove(key) {
            self.bytes -= Self::cost(key, &old);
        }
        while self.bytes + cost > self.max_bytes && !self.entries.is_empty() {
            // Evicting scans the map; it happens only once the budget is full, and frees the
            // oldest eighth at once so the scan is paid rarely.
            let mut ages: Vec<u64> = self.entries.values().map(|(_, _, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[(ages.len() / 8).min(ages.len() - 1)];
            let mut freed = 0;
            self.entries.retain(|k, (v, _, at)| {
                let keep = *at > cut;
                if !keep {
                    freed += Self::cost(k, v);
                }
                keep
            });
            self.bytes -= freed;
        }
        self.bytes += cost;
        self.entries
            .insert(key.to_owned(), (value, expires, self.clock));
    }
}

/// The Redis URL tests use: `NOVA_TEST_REDIS_URL`, default the local server.
pub fn test_redis_url() -> String {
    std::env::var("NOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quota {
        Quota {
            limit: 10,
            window: Duration::from_secs(1),
            burst: 3,
        }
    }

    #[test]
    fn a_burst_then_one_per_emission_interval() {
        let l = Local::new(1 << 20);
        let q = quota(); // 100 ms per request, 3 at once
        let remaining: Vec<_> = (0..3).map(|_| l.acquire("k", &q, 1000)).collect();
        assert!(remaining.iter().all(|d| d.allowed));
        assert_eq!(
            remaining.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        let refused = l.acquire("k", &q, 1000);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 100);
        assert_eq!(refused.reset_ms, 300);
        assert!(!l.acquire("k", &q, 1099).allowed);
        assert!(l.acquire("k", &q, 1100).allowed);
        // Other keys are untouched; after a full reset the burst is back.
        assert_eq!(l.acquire("other", &q, 1100).remaining, 2);
        assert_eq!(l.acquire("k", &q, 5000).remaining, 2);
    }

    #[test]
    fn records_stay_within_their_byte_budget() {
        let budget = 64 * 1024;
        let l = Local::new(budget);
        for i in 0..20_000 {
            l.update(
                &format!("name_{i:0>26}"),
                Duration::from_secs(60),
                0,
                |_| ("[1,2,3,4,5]".to_owned(), ()),
            );
            assert!(l.records.lock().unwrap().bytes <= budget);
        }
        // The most recent record is still there; expired ones read as absent.
        let last = "name_00000000000000000000019999";
        let seen = l.update(last, Duration::from_secs(60), 1, |v| {
            (String::new(), v.map(str::to_owned))
        });
        assert_eq!(seen.as_deref(), Some("[1,2,3,4,5]"));
        let expired = l.update(last, Duration::from_secs(60), 120_000, |v| {
            (String::new(), v.is_some())
        });
        assert!(!expired);
    }
}
