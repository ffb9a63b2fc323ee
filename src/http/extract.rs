//! Request extractors whose rejections all go through [`AppError`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nova_commands::user::Authenticated;
use nova_commands::{CommandContext, Done};
use nova_event_schemas::Domain;
use nova_projections::checkpoint::Caught;
use nova_queries::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::AppError;
use super::AppState;

/// `axum::Json` with Nova's error format for bad bodies, accepting only a JSON object at the
/// top level (serde would otherwise read a struct from an array, positionally).
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == "application"
                    && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let OptionalJson(value) = OptionalJson::from_request(req, state).await?;
        value.map(Json).ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is empty; expected a JSON object",
            )
        })
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The body of a request, which must be a JSON object when present; `None` when it is empty
/// or the JSON `null` (what the document's optional body allows). White space alone is not
/// JSON: a 400, like any other text that is not an object.
async fn object_body<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> Result<Option<axum::body::Bytes>, AppError> {
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
            } else {
                AppError::new(StatusCode::BAD_REQUEST, "invalid_body", r.body_text())
            }
        })?;
    if bytes.is_empty() || bytes.trim_ascii() == b"null" {
        return Ok(None);
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is only white space; send a JSON object or nothing",
        )),
        Some(b'{') => Ok(Some(bytes)),
        Some(_) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        )),
    }
}

/// An optional JSON object body (e.g. a bookmark's collection): an empty body or `null` is
/// `None`; a present one is read like [`Json`], with the same errors.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        match object_body(req, state).await? {
            None => Ok(OptionalJson(None)),
            Some(bytes) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
                Ok(OptionalJson(Some(value)))
            }
        }
    }
}

/// `axum::extract::Path` with Nova's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const POSITION: HeaderName = HeaderName::from_static("x-nova-position");
pub const MIN_POSITION: HeaderName = HeaderName::from_static("x-nova-min-position");

/// Longest a read waits for `X-Nova-Min-Position` before answering 503.
pub const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(5);

/// Namespace for correlation ids derived from non-UUID request ids.
const REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7661_2d72_6571_7565_7374_2d69_6401);

/// The command context of a request: correlation id taken from `X-Request-Id` (set by the
/// request-id layer when the client sent none).
pub struct Ctx(pub CommandContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx(context_from_headers(&parts.headers, None)))
    }
}

pub fn context_from_headers(headers: &HeaderMap, actor: Option<Uuid>) -> CommandContext {
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect::<String>());
    let mut ctx = CommandContext::new(request_id.clone(), actor);
    if let Some(rid) = &request_id {
        ctx.correlation_id = Uuid::try_parse(rid)
            .unwrap_or_else(|_| Uuid::new_v5(&REQUEST_NAMESPACE, rid.as_bytes()));
    }
    ctx
}

/// The acting user of a request — a valid access token of a live session — and the command
/// context its commands carry (actor, correlation id from `X-Request-Id`). Derefs to the
/// [`Authenticated`] caller (`actor.user_id`, `actor.admin`, …).
pub struct Actor {
    pub who: Authenticated,
    pub ctx: CommandContext,
}

impl std::ops::Deref for Actor {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.who
    }
}

impl Actor {
    /// 403 unless the caller has the `admin` role.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.who.admin {
            return Ok(());
        }
        Err(AppError::forbidden("this route needs the admin role"))
    }

    /// 403 unless the caller has the `analyst` or the `admin` role.
    pub fn require_analyst(&self) -> Result<(), AppError> {
        if self.who.admin || self.who.analyst {
            return Ok(());
        }
        Err(AppError::forbidden(
            "this route needs the admin or analyst role",
        ))
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(&parts.headers)?.ok_or_else(AppError::unauthorized)?;
        let who = state.users.authenticate(&token).await?;
        let ctx = context_from_headers(&parts.headers, Some(who.user_id));
        Ok(Actor { who, ctx })
    }
}

/// `axum::extract::Query` with Nova's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// The query string of a list: `?limit=&cursor=`, validated the same way on every list (a bad
/// value is a 400 `invalid_field` naming `limit` or `cursor`), plus the list's own filter `F`
/// (none by default). Any other parameter is a 400 `invalid_query`.
pub struct PageQuery<F = NoFilter>(pub PageRequest, pub F);

/// A list's own query parameters besides `limit` and `cursor`.
pub trait ListFilter: serde::de::DeserializeOwned + Send {
    /// The parameter names the filter reads.
    const KEYS: &'static [&'static str];
    /// Whether the list's cursor is its own (read by the filter, which then lists `cursor` in
    /// its fields) rather than the shared `(timestamp, id)` [`nova_queries::Cursor`]; the
    /// [`PageRequest`] then carries no cursor.
    const OWN_CURSOR: bool = false;
}

/// A list without parameters of its own.
#[derive(Deserialize)]
pub struct NoFilter {}

impl ListFilter for NoFilter {
    const KEYS: &'static [&'static str] = &[];
}

/// The page parameters as documented in the OpenAPI document.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–100 (default 20); other values are a 400.
    #[param(schema_with = page_limit)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page of the same list.
    #[param(schema_with = page_cursor)]
    pub cursor: Option<String>,
}

/// The page size of a list whose cursor is its own (declared by its filter).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitParam {
    /// Page size, 1–100 (default 20); other values are a 400.
    #[param(schema_with = page_limit)]
    pub limit: Option<u32>,
}

/// `limit`: 1..=[`nova_queries::page::MAX_LIMIT`], as `PageRequest::parse` checks it.
pub fn page_limit() -> utoipa::openapi::schema::Object {
    super::openapi::integer(1, i64::from(nova_queries::page::MAX_LIMIT))
        .description(Some("page size (default 20); other values are a 400"))
        .build()
}

/// `cursor` of the lists that share [`nova_queries::Cursor`].
fn page_cursor() -> utoipa::openapi::schema::Object {
    super::openapi::cursor("nova-cursor").build()
}

impl<S: Send + Sync, F: ListFilter> FromRequestParts<S> for PageQuery<F> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        use axum::extract::Query as Q;
        let Q(pairs) = Q::<Vec<(String, String)>>::try_from_uri(&parts.uri)?;
        let (mut limit, mut cursor) = (None, None);
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => limit = Some(value),
                "cursor" => cursor = Some(value),
                k if F::KEYS.contains(&k) => {}
                k => {
                    return Err(AppError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("unknown query parameter `{k}`"),
                    ))
                }
            }
        }
        let shared_cursor = if F::OWN_CURSOR { None } else { cursor };
        let page = PageRequest::parse(limit.as_deref(), shared_cursor.as_deref())
            .map_err(|e| AppError::invalid_field(e.field(), e.to_string()))?;
        let Q(filter) = Q::<F>::try_from_uri(&parts.uri)?;
        Ok(PageQuery(page, filter))
    }
}

/// A page of a list as the API answers it: `{items, next_cursor}`.
#[derive(Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to read the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T, R: Into<T>> From<Page<R>> for PageBody<T> {
    fn from(page: Page<R>) -> Self {
        PageBody {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// A JSON integer field as JSON Schema's `integer` means it: any number without a fractional
/// part (`83.0`, `1e2`), within `i64`. serde would refuse `83.0` for an `i64`, although the
/// document (`type: integer`) calls it valid.
pub fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    // 2^63 is exactly representable: anything below it (and at least -2^63) fits an i64.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {n}, expected an integer"
        ))),
    }
}

/// `{"version": n}`: the aggregate's version after a command.
#[derive(Serialize, ToSchema)]
pub struct Version {
    pub version: i64,
}

/// A command's answer: its status, `X-Nova-Position: <domain>:<position>` when it appended,
/// and a JSON body.
pub struct Answer<T> {
    status: StatusCode,
    position: Option<(HeaderName, HeaderValue)>,
    body: T,
}

impl Answer<Version> {
    /// 200 `{"version": n}`.
    pub fn version(domain: Domain, done: Done) -> Self {
        Answer::ok(
            domain,
            done.position,
            Version {
                version: done.version,
            },
        )
    }
}

impl<T: Serialize> Answer<T> {
    /// 200 with `body`.
    pub fn ok(domain: Domain, position: Option<i64>, body: T) -> Self {
        Answer {
            status: StatusCode::OK,
            position: position_header(domain, position),
            body,
        }
    }

    /// 201 with `body` (the new resource's id).
    pub fn created(domain: Domain, position: Option<i64>, body: T) -> Self {
        Answer {
            status: StatusCode::CREATED,
            position: position_header(domain, position),
            body,
        }
    }
}

impl<T: Serialize> axum::response::IntoResponse for Answer<T> {
    fn into_response(self) -> axum::response::Response {
        (
            self.status,
            axum::response::AppendHeaders(self.position),
            Json(self.body),
        )
            .into_response()
    }
}

/// The bearer token of a request, if any; a malformed Authorization header is a 401.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AppError::invalid_token())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(AppError::invalid_token()),
    }
}

/// `X-Nova-Min-Position: <domain>:<position>` — the read waits until the view has applied that
/// position (read-your-writes on demand), and the client that sent it. `V` names the views the
/// read is answered from: the header is checked against them, and the OpenAPI parameter lists
/// exactly their domains (`params(MinPosition<V>)`).
pub struct MinPosition<V> {
    pub wanted: Option<(Domain, i64)>,
    client: IpAddr,
    views: std::marker::PhantomData<V>,
}

/// The views a read is answered from, as a type (see [`MinPosition`]); declared with
/// [`views!`](crate::views).
pub trait Views: Send + Sync + 'static {
    const VIEWS: &'static [View<'static>];

    /// The domains the views read, each once, in order.
    fn domains() -> Vec<Domain> {
        let mut out: Vec<Domain> = Vec::new();
        for (_, ds) in Self::VIEWS {
            for d in *ds {
                if !out.contains(d) {
                    out.push(*d);
                }
            }
        }
        out
    }
}

/// `views!(Name: (projection, domains), …)` declares a [`Views`] type.
#[macro_export]
macro_rules! views {
    ($(#[$meta:meta])* $name:ident: $(($projection:expr, $domains:expr)),+ $(,)?) => {
        $(#[$meta])*
        pub struct $name;
        impl $crate::http::extract::Views for $name {
            const VIEWS: &'static [$crate::http::extract::View<'static>] =
                &[$(($projection, $domains)),+];
        }
    };
}

/// The header's name as the OpenAPI document declares it.
pub const MIN_POSITION_HEADER: &str = "X-Nova-Min-Position";

impl<V: Views> IntoParams for MinPosition<V> {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        let domains = V::domains();
        let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
        vec![ParameterBuilder::new()
            .name(MIN_POSITION_HEADER)
            .parameter_in(ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some(format!(
                "`<domain>:<position>` from a command's `X-Nova-Position` ({}): the read waits \
                 (at most 5 s, then 503) until its view has applied it. A domain this read is \
                 not answered from, or a position not yet written, is a 400.",
                names.join(", ")
            )))
            .schema(Some(super::openapi::min_position(&domains)))
            .build()]
    }
}

/// Most reads one client address may hold waiting for a projection at once; more answer 429.
/// A wait costs little, but without a bound one client could park thousands of requests.
pub const MAX_WAITS_PER_CLIENT: usize = 16;

/// The waits in progress per client address.
#[derive(Clone, Default)]
pub struct Waits(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// A claimed wait slot; released when dropped.
struct WaitSlot {
    waits: Waits,
    client: IpAddr,
}

impl Waits {
    fn enter(&self, client: IpAddr) -> Option<WaitSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(client).or_insert(0);
        if *n >= MAX_WAITS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(WaitSlot {
            waits: self.clone(),
            client,
        })
    }

    /// Waits in progress for `client` (for tests and metrics).
    pub fn of(&self, client: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut map = self.waits.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// The address the request came from (the socket peer); unspecified when the router is driven
/// without a socket.
pub fn client_addr(parts: &Parts) -> IpAddr {
    client_addr_of(&parts.extensions)
}

/// [`client_addr`] from a request's extensions.
pub fn client_addr_of(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip())
}

impl<S: Send + Sync, V: Views> FromRequestParts<S> for MinPosition<V> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let client = client_addr(parts);
        let views = std::marker::PhantomData;
        let Some(v) = parts.headers.get(MIN_POSITION) else {
            return Ok(MinPosition {
                wanted: None,
                client,
                views,
            });
        };
        Ok(MinPosition {
            wanted: Some(parse_min_position(v)?),
            client,
            views,
        })
    }
}

/// `<domain>:<position>`, exactly as the OpenAPI pattern says: a domain name, a colon and 1–18
/// digits, nothing around them.
fn parse_min_position(v: &HeaderValue) -> Result<(Domain, i64), AppError> {
    let s = v.to_str().map_err(|_| bad_min_position())?;
    let (d, p) = s.split_once(':').ok_or_else(bad_min_position)?;
    let domain = Domain::parse(d).ok_or_else(bad_min_position)?;
    if p.is_empty() || p.len() > 18 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_min_position());
    }
    let position = p.parse::<i64>().map_err(|_| bad_min_position())?;
    Ok((domain, position))
}

fn bad_min_position() -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        "invalid_header",
        "X-Nova-Min-Position must look like <domain>:<position>, e.g. user:42",
    )
}

/// A view a read is answered from: the projection and the domains it consumes.
pub type View<'a> = (&'a str, &'a [Domain]);

impl<V: Views> MinPosition<V> {
    /// Waits until the view of `V` that consumes the header's domain has applied the
    /// position. Checked before any wait: the domain must be one these views read, and the
    /// position must have been written (a position beyond the domain's head could never be
    /// reached, so waiting for it would only hold a request for 5 s); each client address may
    /// hold at most [`MAX_WAITS_PER_CLIENT`] waits at once. Handlers take their caller
    /// ([`Actor`]) before this, so an anonymous caller of a protected route never waits.
    pub async fn wait(&self, state: &AppState) -> Result<(), AppError> {
        let views = V::VIEWS;
        let Some((domain, position)) = self.wanted else {
            return Ok(());
        };
        let Some((projection, _)) = views.iter().find(|(_, ds)| ds.contains(&domain)) else {
            let read: Vec<&str> = views
                .iter()
                .flat_map(|(_, ds)| ds.iter().map(|d| d.as_str()))
                .collect();
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!(
                    "X-Nova-Min-Position names {domain}, but this read is answered from {}",
                    read.join(", ")
                ),
            ));
        };
        if state.checkpoints.cached(projection, domain) >= position {
            return Ok(());
        }
        let head = state
            .db
            .store
            .head(domain)
            .await
            .map_err(AppError::unavailable)?;
        if position > head {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!(
                    "X-Nova-Min-Position {domain}:{position} has not been written (head {head})"
                ),
            ));
        }
        let Some(_slot) = state.waits.enter(self.client) else {
            return Err(AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_waits",
                format!("at most {MAX_WAITS_PER_CLIENT} reads may wait for a projection at once"),
            )
            .retry_after(1));
        };
        wait_for(state, projection, domain, position).await
    }
}

pub async fn wait_for(
    state: &AppState,
    projection: &str,
    domain: Domain,
    position: i64,
) -> Result<(), AppError> {
    match state
        .checkpoints
        .wait_for(
            &state.db.any,
            projection,
            domain,
            position,
            MAX_CONSISTENCY_WAIT,
        )
        .await
    {
        Ok(Caught::Up) => Ok(()),
        Ok(Caught::TimedOut) => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "projection_lagging",
            format!("{projection} has not reached {domain}:{position} yet"),
        )
        .retry_after(1)),
        Err(e) => Err(AppError::unavailable(e)),
    }
}

/// The `X-Nova-Position` header value of a command's result.
pub fn position_header(domain: Domain, position: Option<i64>) -> Option<(HeaderName, HeaderValue)> {
    let p = position?;
    HeaderValue::from_str(&format!("{domain}:{p}"))
        .ok()
        .map(|v| (POSITION, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct N {
        #[serde(deserialize_with = "integer")]
        n: i64,
    }

    fn n(json: &str) -> Option<i64> {
        serde_json::from_str::<N>(json).ok().map(|v| v.n)
    }

    #[test]
    fn integers_are_what_json_schema_calls_integers() {
        assert_eq!(n(r#"{"n": 83}"#), Some(83));
        assert_eq!(n(r#"{"n": 83.0}"#), Some(83));
        assert_eq!(n(r#"{"n": 1e2}"#), Some(100));
        assert_eq!(
            n(r#"{"n": 3866827788523042.0}"#),
            Some(3_866_827_788_523_042)
        );
        assert_eq!(n(r#"{"n": -9223372036854775808}"#), Some(i64::MIN));
        assert_eq!(n(r#"{"n": 83.5}"#), None);
        assert_eq!(n(r#"{"n": 9223372036854775808}"#), None);
        assert_eq!(n(r#"{"n": 1e300}"#), None);
        assert_eq!(n(r#"{"n": "1"}"#), None);
    }

    #[test]
    fn min_positions_parse_exactly_as_documented() {
        let parse = |s: &str| parse_min_position(&HeaderValue::from_str(s).unwrap()).ok();
        assert_eq!(parse("post:42"), Some((Domain::Post, 42)));
        assert_eq!(parse("user:0"), Some((Domain::User, 0)));
        for bad in [
            "post: 42", "post:+42", "post:-1", "Post:1", "post:", "post", "post:1:2",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(parse(&format!("post:{}", "9".repeat(19))), None);
    }
}
