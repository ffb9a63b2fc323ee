//! Measurements of the benchmarks that go through the real server (`target::serve`): requests/s
//! of a route at N clients — `GET /healthz` this way is the raw limit every HTTP figure is put
//! beside — and sequential latencies.

use std::time::{Duration, Instant};

use crate::stats::Percentiles;
use crate::Error;

/// Requests/s of `GET path` at `clients` concurrent clients (each with its own token) for
/// `seconds`; every answer must be 200.
pub async fn throughput(
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

pub fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"))
}
