//! Messaging over HTTP, beside the raw limit of the same database in the same run (one-row
//! INSERT+COMMIT at the same concurrency, `append::raw_baseline`):
//! - **messages/s** through `POST /v1/conversations/{id}/messages` at N concurrent senders,
//!   each in its own group conversation (a conversation is one stream; its messages serialize);
//! - **claims/s** of `POST /v1/keys/claim` with N clients contending for one device's
//!   one-time keys (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: `BEGIN IMMEDIATE`).
//!
//! The one-time keys are written into the key server's table in bulk (one SQL statement): the
//! claim path does not re-check signatures, and signing 100,000 keys would measure the bench.

use std::time::Duration;

use clap::Parser;
use nova_infra::db::{Database, Engine};
use nova_infra::testing::TestDb;
use serde_json::{json, Value};

use crate::harness::{measure, Plan, Worker};
use crate::stats::ratio;
use crate::target::{engine_name, BackendChoice};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    backend: BackendChoice,
    /// Concurrent senders (and claimers).
    #[arg(long, default_value_t = 32)]
    senders: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// One-time keys stocked for the claims.
    #[arg(long, default_value_t = 200_000)]
    keys: i64,
}

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

struct Sender {
    client: reqwest::Client,
    url: String,
    token: String,
    n: u64,
}

impl Worker for Sender {
    async fn op(&mut self) -> Result<(), Error> {
        self.n += 1;
        let body = json!({
            "ciphertext": "A".repeat(256),
            "sender_device_id": "BENCH",
            "session_id": "bench-session",
            "client_message_id": format!("m{}", self.n),
        });
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        if res.status() != reqwest::StatusCode::CREATED {
            return Err(format!("send: {}", res.status()).into());
        }
        let _ = res.bytes().await?;
        Ok(())
    }
}

struct Claimer {
    client: reqwest::Client,
    url: String,
    token: String,
    body: Value,
}

impl Worker for Claimer {
    async fn op(&mut self) -> Result<(), Error> {
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&self.body)
            .send()
            .await?;
        if !res.status().is_success() {
            return Err(format!("claim: {}", res.status()).into());
        }
        let v: Value = res.json().await?;
        if v["fallback"] != false {
            return Err("the one-time keys ran out; raise --keys".into());
        }
        Ok(())
    }
}

async fn me(client: &reqwest::Client, base: &str, token: &str) -> Result<String, Error> {
    let v: Value = client
        .get(format!("{base}/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["user_id"].as_str().ok_or("no user id")?.to_owned())
}

/// Creates a group of `token`'s user with `other`, retrying while the user directory has not
/// caught up with the registrations.
async fn group(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    other: &str,
) -> Result<String, Error> {
    for _ in 0..200 {
        let res = client
            .post(format!("{base}/v1/conversations"))
            .bearer_auth(token)
            .json(&json!({"kind": "group", "member_ids": [other], "name": "bench"}))
            .send()
            .await?;
        if res.status() == reqwest::StatusCode::CREATED {
            let v: Value = res.json().await?;
            return Ok(v["conversation_id"].as_str().ok_or("no id")?.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("cannot create a group".into())
}

/// One device of `owner` with `n` one-time keys, written in bulk.
async fn stock(db: &Database, owner: &str, n: i64) -> Result<(), Error> {
    let key = "A".repeat(43);
    sqlx::query(
        "INSERT INTO conversation_devices (user_id, device_id, curve25519, ed25519, signature, \
         created_at) VALUES ($1, 'BENCH', $2, $2, $2, '2026-01-01T00:00:00.000000Z')",
    )
    .bind(owner)
    .bind(&key)
    .execute(&db.any)
    .await?;
    sqlx::query(
        "INSERT INTO conversation_one_time_keys (user_id, device_id, key_id, key, signature, \
         uploaded_at) \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $2) \
         SELECT $1, 'BENCH', 'K' || CAST(i AS TEXT), $3, $3, '2026-01-01T00:00:00.000000Z' FROM s",
    )
    .bind(owner)
    .bind(n)
    .bind(&key)
    .execute(&db.any)
    .await?;
    Ok(())
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let name = engine_name(engine);
    let testdb = TestDb::new(engine).await;
    let server = crate::http::serve(&testdb, |_| {}).await?;
    let db = Database::connect(&testdb.url).await?;
    let plan = Plan {
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(args.seconds),
        progress: true,
    };
    let (raw, raw_operation) =
        crate::append::raw_baseline(engine, &db, args.senders, &plan).await?;

    let client = reqwest::Client::new();
    let base = server.base.clone();
    let peer = crate::http::user(&client, &base, "bench_peer").await?;
    let peer_id = me(&client, &base, &peer).await?;
    let mut senders = Vec::new();
    for i in 0..args.senders {
        let token = crate::http::user(&client, &base, &format!("bench_sender_{i}")).await?;
        let g = group(&client, &base, &token, &peer_id).await?;
        senders.push(Sender {
            client: client.clone(),
            url: format!("{base}/v1/conversations/{g}/messages"),
            token,
            n: 0,
        });
    }
    let tokens: Vec<String> = senders.iter().map(|s| s.token.clone()).collect();
    let messages = measure(&format!("{name} messages"), &plan, senders).await?;

    stock(&db, &peer_id, args.keys).await?;
    let claimers = tokens
        .into_iter()
        .map(|token| Claimer {
            client: client.clone(),
            url: format!("{base}/v1/keys/claim"),
            token,
            body: json!({"user_id": peer_id, "device_id": "BENCH"}),
        })
        .collect();
    let claims = measure(&format!("{name} claims"), &plan, claimers).await?;

    println!("{name}: raw {raw_operation} at {} tasks", args.senders);
    println!(
        "{:<10}{:>14}{:>10}{:>10}{:>12}",
        "path", "per s", "p50 ms", "p99 ms", "÷ raw"
    );
    for (label, m) in [("raw", &raw), ("messages", &messages), ("claims", &claims)] {
        println!(
            "{:<10}{:>14.0}{:>10.2}{:>10.2}{:>12}",
            label,
            m.per_sec,
            m.latency.p50_ms,
            m.latency.p99_ms,
            ratio(m.per_sec, raw.per_sec).map_or("-".into(), |r| format!("{r:.2}"))
        );
    }
    server.stop().await;
    db.close().await;
    Ok(())
}
