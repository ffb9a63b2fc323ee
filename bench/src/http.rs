//! HTTP plumbing of the benchmarks that drive a real Nova server: start one on a fresh
//! database, concurrent clients with their own tokens, sequential latencies.

use std::time::{Duration, Instant};

use nova::app::{Application, Components, MetricsAccess, Settings};
use nova_commands::user::credentials::Argon2Config;
use nova_infra::testing::TestDb;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::stats::Percentiles;
use crate::Error;

pub struct Server {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn serve(
    testdb: &TestDb,
    configure: impl FnOnce(&mut Settings),
) -> Result<Server, Error> {
    let mut settings = Settings {
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
        rate_limits: Default::default(),
        ingest_secret: None,
        clock: nova_infra::clock::Clock::system(),
        search_dir: std::env::temp_dir()
            .join(format!("nova-bench-search-{}", uuid::Uuid::new_v4())),
        search_consumer: nova_projections::search::NAME.to_owned(),
    };
    configure(&mut settings);
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

/// Requests/s of `method url` at `tokens.len()` concurrent clients (each with its own token)
/// for `seconds`; every answer must be a success.
pub async fn throughput(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    tokens: &[String],
    seconds: u64,
) -> Result<f64, Error> {
    let tokens: Vec<String> = tokens.to_vec();
    let (client, url) = (client.clone(), url.to_owned());
    rate(tokens.len(), seconds, move |i| {
        let request = client.request(method.clone(), &url).bearer_auth(&tokens[i]);
        let url = url.clone();
        async move {
            let res = request.send().await?;
            if !res.status().is_success() {
                return Err(format!("{url}: {}", res.status()).into());
            }
            let _ = res.bytes().await?;
            Ok(())
        }
    })
    .await
}

/// Operations/s of `clients` concurrent workers, each calling `op(its index)` back to back for
/// `seconds`; the first failure ends the run.
pub async fn rate<Op, Fut>(clients: usize, seconds: u64, op: Op) -> Result<f64, Error>
where
    Op: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let op = std::sync::Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for i in 0..clients {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                op(i).await?;
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

/// A served Nova on a fresh copy of `testdb`, a connection of the benchmark's own to the same
/// database, and an HTTP client for `clients` concurrent clients.
pub async fn setup(
    testdb: &TestDb,
    clients: usize,
) -> Result<(Server, nova_infra::db::Database, reqwest::Client), Error> {
    let server = serve(testdb, |_| {}).await?;
    let db = nova_infra::db::Database::connect(&testdb.url).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .build()?;
    Ok((server, db, client))
}

/// Latencies of `n` sequential `GET url`.
pub async fn latencies(
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

/// Registers `name` and logs in; the access token.
pub async fn user(client: &reqwest::Client, base: &str, name: &str) -> Result<String, Error> {
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

impl Server {
    /// Stops the server and waits (bounded) for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A ratio as printed.
pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"))
}
