//! The real server under a realistic mix at N connections, on each engine:
//!
//! - **mix**: every client loops over weighted random requests as one of the users — create a
//!   post (25 %), like a recent post (20 %), follow someone (10 %), read the home feed (30 %),
//!   read notifications (15 %); every answer must be 2xx. Requests/s and p50/p99 per route,
//!   beside `GET /healthz` at the same concurrency measured in the same run (the raw limit of
//!   the HTTP stack and the client) as a ratio, and p99/p50 per route (the tail).
//! - **commit-to-visible lag** under that load: a probe posts every 100 ms and reads the feed
//!   with `X-Nova-Min-Position` set to the post's position; the lag is the time from the write's
//!   answer to the read's answer minus a plain feed read's round trip measured just before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nova_infra::db::Engine;
use nova_infra::testing::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::{fmt_ratio, serve, throughput, user};
use crate::stats::{ratio, Percentiles};
use crate::target::{engine_name, BackendChoice};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendChoice,
    /// Concurrent HTTP connections (one user each).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of mixed load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Follows per user set up before the run.
    #[arg(long, default_value_t = 10)]
    follows: usize,
}

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

/// The routes of the mix, as they are reported.
const ROUTES: [&str; 5] = [
    "POST /v1/posts",
    "PUT /v1/posts/{id}/like",
    "PUT /v1/users/{id}/follow",
    "GET /v1/feed",
    "GET /v1/notifications",
];

struct Shared {
    base: String,
    client: reqwest::Client,
    users: Vec<(Uuid, String)>,
    /// Recently created posts, for likes.
    recent: Mutex<Vec<Uuid>>,
    samples: Mutex<BTreeMap<&'static str, Vec<Duration>>>,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, route: &'static str, took: Duration) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route)
            .or_default()
            .push(took);
    }

    fn recent_post(&self, rng: &mut StdRng) -> Option<Uuid> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        (!recent.is_empty()).then(|| recent[rng.gen_range(0..recent.len())])
    }

    fn remember(&self, post: Uuid) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push(post);
        if recent.len() > 512 {
            recent.drain(..256);
        }
    }
}

async fn expect_ok(res: reqwest::Response, what: &str) -> Result<reqwest::Response, Error> {
    if res.status().is_success() {
        Ok(res)
    } else {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        Err(format!("{what}: {status} {body}").into())
    }
}

/// One client: `me` sends weighted random requests until the run stops.
async fn client_loop(shared: Arc<Shared>, me: usize, seed: u64) -> Result<(), Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (my_id, token) = shared.users[me].clone();
    let base = &shared.base;
    let http = &shared.client;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let pick = rng.gen_range(0..100);
        let started = Instant::now();
        let route = match pick {
            0..=24 => {
                let res = http
                    .post(format!("{base}/v1/posts"))
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("bench post {me} {n} about nothing much")}))
                    .send()
                    .await?;
                let v: Value = expect_ok(res, ROUTES[0]).await?.json().await?;
                if let Some(id) = v["post_id"].as_str().and_then(|s| s.parse().ok()) {
                    shared.remember(id);
                }
                ROUTES[0]
            }
            25..=44 => {
                let Some(post) = shared.recent_post(&mut rng) else {
                    continue;
                };
                let res = http
                    .put(format!("{base}/v1/posts/{post}/like"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                expect_ok(res, ROUTES[1]).await?.bytes().await?;
                ROUTES[1]
            }
            45..=54 => {
                let other = shared.users[rng.gen_range(0..shared.users.len())].0;
                if other == my_id {
                    continue;
                }
                let res = http
                    .put(format!("{base}/v1/users/{other}/follow"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                expect_ok(res, ROUTES[2]).await?.bytes().await?;
                ROUTES[2]
            }
            55..=84 => {
                let res = http
                    .get(format!("{base}/v1/feed"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                expect_ok(res, ROUTES[3]).await?.bytes().await?;
                ROUTES[3]
            }
            _ => {
                let res = http
                    .get(format!("{base}/v1/notifications"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                expect_ok(res, ROUTES[4]).await?.bytes().await?;
                ROUTES[4]
            }
        };
        shared.record(route, started.elapsed());
    }
    Ok(())
}

/// Commit-to-visible lag samples: post, then read the feed with the post's position.
async fn lag_probe(shared: Arc<Shared>) -> Result<Vec<Duration>, Error> {
    let (_, token) = shared.users[0].clone();
    let base = &shared.base;
    let http = &shared.client;
    let mut lags = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let res = http
            .get(format!("{base}/v1/feed?limit=1"))
            .bearer_auth(&token)
            .send()
            .await?;
        expect_ok(res, "probe feed").await?.bytes().await?;
        let round_trip = t.elapsed();
        let res = http
            .post(format!("{base}/v1/posts"))
            .bearer_auth(&token)
            .json(&json!({"content": "lag probe"}))
            .send()
            .await?;
        let res = expect_ok(res, "probe post").await?;
        let position = res
            .headers()
            .get("x-nova-position")
            .and_then(|v| v.to_str().ok())
            .ok_or("no X-Nova-Position")?
            .to_owned();
        let written = Instant::now();
        let res = http
            .get(format!("{base}/v1/feed?limit=1"))
            .bearer_auth(&token)
            .header("X-Nova-Min-Position", position)
            .send()
            .await?;
        expect_ok(res, "probe read").await?.bytes().await?;
        lags.push(written.elapsed().saturating_sub(round_trip));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(lags)
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let testdb = TestDb::new(engine).await;
    let server = serve(&testdb, |_| {}).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    let base = server.base.clone();
    let mut users = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let name = format!("http_bench_{i}");
        let token = user(&client, &base, &name).await?;
        let me: Value = client
            .get(format!("{base}/v1/users/me"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let id: Uuid = me["user_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("no user id")?;
        users.push((id, token));
    }
    let mut rng = StdRng::seed_from_u64(7);
    for (me, (_, token)) in users.iter().enumerate() {
        for _ in 0..args.follows.min(args.clients.saturating_sub(1)) {
            let other = rng.gen_range(0..users.len());
            if other == me {
                continue;
            }
            let res = client
                .put(format!("{base}/v1/users/{}/follow", users[other].0))
                .bearer_auth(token)
                .send()
                .await?;
            expect_ok(res, "setup follow").await?;
        }
    }
    let tokens: Vec<String> = users.iter().map(|(_, t)| t.clone()).collect();
    let raw = throughput(
        &client,
        reqwest::Method::GET,
        &format!("{base}/healthz"),
        &tokens,
        5,
    )
    .await?;

    let shared = Arc::new(Shared {
        base: base.clone(),
        client: client.clone(),
        users,
        recent: Mutex::new(Vec::new()),
        samples: Mutex::new(BTreeMap::new()),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for me in 0..args.clients {
        workers.push(tokio::spawn(client_loop(shared.clone(), me, me as u64)));
    }
    let probe = tokio::spawn(lag_probe(shared.clone()));
    let bar = crate::harness::count_bar("mixed load (s)", args.seconds, true);
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lags = Percentiles::new(probe.await??);
    let samples = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(|p| p.into_inner()));
    server.stop().await;
    drop(testdb);

    let total: usize = samples.values().map(Vec::len).sum();
    let total_rate = total as f64 / elapsed;
    println!(
        "http mix [{}] clients={} seconds={:.0}",
        engine_name(engine),
        args.clients,
        elapsed
    );
    println!(
        "  all routes req/s {:>9.1}   raw GET /healthz req/s {:>9.1}   ratio {}",
        total_rate,
        raw,
        fmt_ratio(ratio(total_rate, raw))
    );
    println!(
        "  {:<26} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "route", "count", "req/s", "p50 ms", "p99 ms", "p99/p50"
    );
    for (route, s) in samples {
        let count = s.len();
        let p = Percentiles::new(s);
        println!(
            "  {:<26} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9}",
            route,
            count,
            count as f64 / elapsed,
            p.p50_ms,
            p.p99_ms,
            fmt_ratio(ratio(p.p99_ms, p.p50_ms))
        );
    }
    println!(
        "  commit-to-visible lag (feed, {} probes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lags.samples, lags.p50_ms, lags.p99_ms, lags.max_ms
    );
    Ok(())
}
