//! Experiments over HTTP: assignment reads/s at N concurrent clients beside `GET /healthz` at
//! the same concurrency (the raw limit of the HTTP stack in this run), and the p99 of results
//! reads with 1,000,000 exposures in the view beside the p99 of `GET /healthz` read the same
//! way.
//!
//! The exposures are written into the `experiment_results` tables in bulk (one SQL statement),
//! not appended as events: projecting a million events would measure the projector, which the
//! `project` scenario does; what this measures is that a results read is a handful of counter
//! rows, whatever the number of exposures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nova::app::{Application, Components, MetricsAccess, Settings};
use nova_commands::experiment::{ExperimentCommands, NewExperiment};
use nova_commands::user::credentials::Argon2Config;
use nova_commands::{CommandContext, CommandStore};
use nova_event_schemas::experiment::Variant;
use nova_infra::db::{Database, Engine};
use nova_infra::testing::TestDb;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::stats::{ratio, Percentiles};
use crate::target::{engine_name, BackendChoice};
use crate::Error;

#[derive(Parser)]
pub struct Args {
    #[arg(long, value_enum, default_value = "postgres")]
    backend: BackendChoice,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Exposures in the results view.
    #[arg(long, default_value_t = 1_000_000)]
    exposures: u64,
    /// Results reads timed (sequential).
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
}

const KEY: &str = "bench";

pub async fn run(args: Args) -> Result<(), Error> {
    for engine in args.backend.engines() {
        bench_backend(engine, &args).await?;
    }
    Ok(())
}

pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn serve(testdb: &TestDb) -> Result<Server, Error> {
    let settings = Settings {
        database_url: testdb.url.clone(),
        nats_url: None,
        nats_names: nova_infra::nats::Names::default(),
        components: Components::all(),
        listen: "127.0.0.1:0".into(),
        jwt_secret: SecretString::from("bench-secret-bench-secret-bench-secret-0"),
        argon2: Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            ..Argon2Config::default()
        },
        max_body_bytes: 64 * 1024,
        access_ttl: chrono::Duration::minutes(60),
        refresh_ttl: chrono::Duration::days(1),
        metrics: MetricsAccess::default(),
        idempotency_takeover: nova::http::idempotency::DEFAULT_TAKEOVER,
        search_dir: std::env::temp_dir()
            .join(format!("nova-bench-search-{}", uuid::Uuid::new_v4())),
        search_consumer: nova_projections::search::NAME.to_owned(),
    };
    let app = Application::build(settings).await?;
    let addr = app.local_addr().ok_or("the API did not bind")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Server {
        base: format!("http://{addr}"),
        stop: Some(tx),
        task,
    })
}

/// Requests/s of `GET path` at `clients` concurrent clients (each with its own token) for
/// `seconds`; every answer must be 200.
async fn throughput(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    seconds: u64,
) -> Result<f64, Error> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for token in tokens {
        let (client, url, token) = (client.clone(), url.to_owned(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let res = client.get(&url).bearer_auth(&token).send().await?;
                if !res.status().is_success() {
                    return Err(format!("{url}: {}", res.status()).into());
                }
                let _ = res.bytes().await?;
                n += 1;
            }
            Ok::<u64, Error>(n)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn latencies(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
) -> Result<Percentiles, Error> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let res = client.get(url).bearer_auth(token).send().await?;
        if !res.status().is_success() {
            return Err(format!("{url}: {}", res.status()).into());
        }
        let _ = res.bytes().await?;
        samples.push(t.elapsed());
    }
    Ok(Percentiles::new(samples))
}

pub(crate) async fn user(
    client: &reqwest::Client,
    base: &str,
    name: &str,
) -> Result<String, Error> {
    let body = json!({"username": name, "password": "bench password 0123"});
    let res = client
        .post(format!("{base}/v1/users"))
        .json(&body)
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("register: {}", res.status()).into());
    }
    let res = client
        .post(format!("{base}/v1/sessions"))
        .json(&body)
        .send()
        .await?;
    let v: Value = res.json().await?;
    Ok(v["access_token"]
        .as_str()
        .ok_or("no access token")?
        .to_owned())
}

/// Writes `n` exposures (half per variant, a tenth of each converting) into the view.
async fn bulk_exposures(db: &Database, n: u64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO experiment_participants (experiment_key, user_id, variant, excluded) \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1) \
         SELECT 'bench', 'bench-user-' || CAST(i AS TEXT), \
                CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END, 0 FROM s",
    )
    .bind(n as i64)
    .execute(&db.any)
    .await?;
    let half = (n / 2) as i64;
    for (variant, users, conversions) in [
        ("control", half, half / 10),
        ("treatment", n as i64 - half, (n as i64 - half) / 9),
    ] {
        sqlx::query(
            "INSERT INTO experiment_variant_users (experiment_key, variant, users) \
             VALUES ('bench', $1, $2) ON CONFLICT (experiment_key, variant) \
             DO UPDATE SET users = experiment_variant_users.users + excluded.users",
        )
        .bind(variant)
        .bind(users)
        .execute(&db.any)
        .await?;
        sqlx::query(
            "INSERT INTO experiment_metric_conversions \
                 (experiment_key, variant, metric, conversions) VALUES ('bench', $1, 'buy', $2)",
        )
        .bind(variant)
        .bind(conversions)
        .execute(&db.any)
        .await?;
    }
    Ok(())
}

async fn bench_backend(engine: Engine, args: &Args) -> Result<(), Error> {
    let testdb = TestDb::new(engine).await;
    let server = serve(&testdb).await?;
    let db = Database::connect(&testdb.url).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    let base = server.base.clone();

    let experiments = ExperimentCommands::new(CommandStore::new(db.store.clone()));
    let ctx = CommandContext::new(None, None);
    experiments
        .create(
            &ctx,
            NewExperiment {
                key: KEY.into(),
                variants: vec![
                    Variant {
                        name: "control".into(),
                        weight: 50.0,
                    },
                    Variant {
                        name: "treatment".into(),
                        weight: 50.0,
                    },
                ],
                coverage: None,
                seed: None,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    experiments
        .start(&ctx, KEY)
        .await
        .map_err(|e| e.to_string())?;

    let mut tokens = Vec::new();
    for i in 0..args.clients {
        tokens.push(user(&client, &base, &format!("bench_{i}")).await?);
    }
    let tokens = Arc::new(tokens);
    let assign_url = format!("{base}/v1/experiments/{KEY}/assignment");
    let health_url = format!("{base}/healthz");
    // Warm-up: every client's first read (its exposure), and the connections.
    throughput(&client, &assign_url, &tokens, 1).await?;
    let raw = throughput(&client, &health_url, &tokens, args.seconds).await?;
    let assign = throughput(&client, &assign_url, &tokens, args.seconds).await?;

    // Results at `exposures` exposures.
    let results_url = format!("{base}/v1/experiments/{KEY}/results");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = client
            .get(&results_url)
            .bearer_auth(&tokens[0])
            .send()
            .await?;
        if res.status().is_success() {
            break;
        }
        if Instant::now() > deadline {
            return Err("the results view never listed the experiment".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    bulk_exposures(&db, args.exposures).await?;
    let load_secs = t.elapsed().as_secs_f64();
    let check: Value = client
        .get(&results_url)
        .bearer_auth(&tokens[0])
        .send()
        .await?
        .json()
        .await?;
    let users: i64 = check["variants"]
        .as_array()
        .map(|vs| vs.iter().filter_map(|v| v["users"].as_i64()).sum())
        .unwrap_or(0);
    let raw_lat = latencies(&client, &health_url, &tokens[0], args.reads).await?;
    let results_lat = latencies(&client, &results_url, &tokens[0], args.reads).await?;

    println!(
        "experiment [{}] clients={}",
        engine_name(engine),
        args.clients
    );
    println!(
        "  assignment reads/s     {:>10.1}   raw GET /healthz/s {:>10.1}   ratio {}",
        assign,
        raw,
        fmt_ratio(ratio(assign, raw))
    );
    println!(
        "  results read p99 (ms)  {:>10.3}   raw GET /healthz p99 {:>8.3}   ratio {}   \
         (p50 {:.3} / {:.3}; {} users in the view, {} reads; bulk load {:.1}s)",
        results_lat.p99_ms,
        raw_lat.p99_ms,
        fmt_ratio(ratio(results_lat.p99_ms, raw_lat.p99_ms)),
        results_lat.p50_ms,
        raw_lat.p50_ms,
        users,
        args.reads,
        load_secs
    );
    let mut server = server;
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    db.close().await;
    drop(testdb);
    Ok(())
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"))
}
