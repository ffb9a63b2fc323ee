//! The Redis store decides exactly like the in-process one (the Lua script is the same GCRA
//! as `limits::gcra`), and two handles on one Redis share their keys.

use std::time::Duration;

use nova_infra::limits::{test_redis_url, Limits, Quota};

fn prefix() -> String {
    format!("nova-test-{}:", uuid::Uuid::new_v4())
}

async fn redis(prefix: &str) -> Limits {
    let l = Limits::redis(&test_redis_url(), prefix).expect("redis url");
    l.ping()
        .await
        .expect("Redis reachable (NOVA_TEST_REDIS_URL)");
    l
}

#[tokio::test]
async fn redis_and_in_process_decide_alike() {
    let shared = redis(&prefix()).await;
    let local = Limits::in_process();
    let quotas = [
        Quota::per_minute(100, 20),
        Quota {
            limit: 7,
            window: Duration::from_millis(700),
            burst: 3,
        },
        Quota {
            limit: 1000,
            window: Duration::from_secs(1),
            burst: 1,
        },
    ];
    // A seeded walk of times and keys: irregular gaps, bursts, idle stretches.
    let mut now: i64 = 1_800_000_000_000;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now += match x % 10 {
            0..=5 => 0,
            6..=8 => (x >> 8) as i64 % 150,
            _ => (x >> 8) as i64 % 5_000,
        };
        let q = &quotas[(x >> 20) as usize % quotas.len()];
        let key = format!("k{}-{}", (x >> 24) % 3, q.limit);
        let a = shared.acquire(&key, q, now).await;
        let b = local.acquire(&key, q, now).await;
        assert_eq!(a, b, "step {i}: key {key} at {now}");
    }
}

#[tokio::test]
async fn two_handles_on_one_redis_share_a_limit_and_records() {
    let p = prefix();
    let (a, b) = (redis(&p).await, redis(&p).await);
    let q = Quota::per_minute(60, 2);
    let now = 1_800_000_000_000;
    assert!(a.acquire("user", &q, now).await.allowed);
    assert!(b.acquire("user", &q, now).await.allowed);
    let refused = a.acquire("user", &q, now).await;
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_ms, 1000);
    // Another prefix is another namespace.
    assert!(
        redis(&prefix())
            .await
            .acquire("user", &q, now)
            .await
            .allowed
    );

    let count = |v: Option<&str>| {
        let n = v.map_or(0, |s| s.parse::<u32>().unwrap()) + 1;
        (n.to_string(), n)
    };
    let ttl = Duration::from_secs(60);
    assert_eq!(a.update("n", ttl, now, count).await, 1);
    assert_eq!(b.update("n", ttl, now, count).await, 2);
    // Concurrent updates all land (compare-and-set retries).
    let updates = (0..10).map(|i| {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { l.update("n", ttl, now, count).await }
    });
    futures::future::join_all(updates).await;
    assert_eq!(a.update("n", ttl, now, count).await, 13);
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_this_process() {
    let l = Limits::redis("redis://127.0.0.1:1", &prefix()).unwrap();
    assert!(l.ping().await.is_err());
    let q = Quota::per_minute(60, 1);
    assert!(l.acquire("k", &q, 0).await.allowed);
    assert!(!l.acquire("k", &q, 0).await.allowed);
}
