//! Rate limits at the edge (ADR 0022): every `/v1` request takes one unit of a GCRA quota —
//! per user when it carries a valid access token, else per client address (registration,
//! login, refresh, and any call without a usable token). Over quota it is answered 429
//! `rate_limited` with `Retry-After`; every limited response carries `RateLimit-Policy` and
//! `RateLimit` as draft-ietf-httpapi-ratelimit-headers describes. The quotas are kept in
//! [`nova_infra::limits::Limits`]: Redis when `NOVA_REDIS_URL` is set (shared by all API
//! processes), else this process.
//!
//! The layer sits on the router, so a route a new domain adds is limited without a line here.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nova_infra::limits::{Decision, Limits, Quota};

use super::error::AppError;
use super::extract::{bearer, client_addr_of};
use super::AppState;

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The time the limits decide by, in milliseconds since the epoch: the system clock, or (in
/// tests) a manual one that only moves when told.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock standing at `start_ms` until [`Clock::advance`] moves it.
    pub fn manual(start_ms: i64) -> Self {
        Clock(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    pub fn advance(&self, by: std::time::Duration) {
        if let Some(t) = &self.0 {
            t.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(t) => t.load(Ordering::SeqCst),
            None => chrono::Utc::now().timestamp_millis(),
        }
    }
}

/// The limits an API process enforces. A quota of `None` is off.
#[derive(Clone)]
pub struct RateLimits {
    /// Per authenticated user.
    pub user: Option<Quota>,
    /// Per client address, for requests without a valid token.
    pub anonymous: Option<Quota>,
    /// Where quotas (and failed-login counts) are kept.
    pub limits: Limits,
    pub clock: Clock,
}

impl RateLimits {
    /// No limits, kept in process (tools and tests that drive the router directly).
    pub fn off() -> Self {
        RateLimits {
            user: None,
            anonymous: None,
            limits: Limits::in_process(),
            clock: Clock::system(),
        }
    }
}

/// Whose quota a request takes.
enum Partition {
    User(uuid::Uuid),
    Address(IpAddr),
}

impl Partition {
    fn key(&self) -> String {
        match self {
            Partition::User(id) => format!("user:{id}"),
            Partition::Address(ip) => format!("addr:{ip}"),
        }
    }

    fn policy(&self) -> &'static str {
        match self {
            Partition::User(_) => "user",
            Partition::Address(_) => "address",
        }
    }
}

/// The address a quota is kept for: an IPv6 client is limited by its /64 (one host usually
/// holds a whole /64, so per address it could mint quotas at will).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    // The token's signature is enough to name the user here (the session is checked by the
    // handler's `Actor`); an invalid or absent token counts against the address.
    let user = bearer(req.headers())
        .ok()
        .flatten()
        .and_then(|t| state.users.token_subject(&t));
    let (partition, quota) = match user {
        Some(id) => (Partition::User(id), limits.user),
        None => (
            Partition::Address(address_key(client_addr_of(req.extensions()))),
            limits.anonymous,
        ),
    };
    let Some(quota) = quota else {
        return next.run(req).await;
    };
    let now = limits.clock.now_ms();
    let decision = limits.limits.acquire(&partition.key(), &quota, now).await;
    let mut res = if decision.allowed {
        next.run(req).await
    } else {
        metrics::counter!("nova_rate_limited_total", "policy" => partition.policy()).increment(1);
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests: at most {} per {} s ({} at once) per {}",
                quota.limit,
                quota.window.as_secs_f64(),
                quota.burst,
                partition.policy()
            ),
        )
        .retry_after(secs_up(decision.retry_after_ms))
        .into_response()
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy_header(partition.policy(), &quota)) {
        headers.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ratelimit_header(partition.policy(), &decision)) {
        headers.insert(RATELIMIT, v);
    }
    res
}

/// Whole seconds, rounded up (a client that waits `Retry-After` must not be early).
fn secs_up(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// `RateLimit-Policy: "<name>";q=<quota units>;w=<window seconds>`.
fn policy_header(name: &str, quota: &Quota) -> String {
    format!(
        "\"{name}\";q={};w={}",
        quota.limit,
        quota.window.as_secs().max(1)
    )
}

/// `RateLimit: "<name>";r=<remaining units>;t=<seconds until the quota is fully restored>`.
fn ratelimit_header(name: &str, d: &Decision) -> String {
    format!(
        "\"{name}\";r={};t={}",
        d.remaining,
        d.reset_ms.div_ceil(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(
            address_key(a),
            address_key("2001:db8:1:3::1".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn headers_follow_the_draft() {
        let q = Quota::per_minute(100, 20);
        assert_eq!(policy_header("user", &q), "\"user\";q=100;w=60");
        let d = Decision {
            allowed: true,
            remaining: 19,
            reset_ms: 600,
            retry_after_ms: 0,
        };
        assert_eq!(ratelimit_header("user", &d), "\"user\";r=19;t=1");
        assert_eq!(secs_up(1), 1);
        assert_eq!(secs_up(1000), 1);
        assert_eq!(secs_up(1001), 2);
    }
}
