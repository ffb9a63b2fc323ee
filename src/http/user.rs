//! Routes of the `user` domain (API.md "Identity"): accounts, profiles and sessions.
//! Handlers are thin: parse, build the command context, call the command service or a query,
//! map the result.

use axum::extract::State;
use axum::response::{AppendHeaders, IntoResponse};
use nova_commands::user::{
    IssuedTokens, ProfilePatch, DISPLAY_NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, STATUS_MAX,
    USERNAME_MAX, USERNAME_MIN,
};
use nova_event_schemas::Domain;
use nova_projections::{follow_graph, user_directory};
use nova_queries::user::{self as users, ProfileRow};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{
    position_header, wait_for, Actor, Answer, Ctx, Json, MinPosition, Path, Version,
};
use super::openapi::{self as doc, Text};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(me, update_me, deactivate_me))
        .routes(routes!(profile))
        .routes(routes!(change_password))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters of `[A-Za-z0-9_]`, unique regardless of case.
    #[schema(schema_with = username)]
    username: String,
    /// 8–128 characters.
    #[schema(schema_with = password)]
    password: String,
    /// At most 64 characters, trimmed; blank or `null`: none.
    #[schema(schema_with = display_name)]
    display_name: Option<String>,
}

fn username() -> Object {
    doc::pattern(USERNAME_MIN, USERNAME_MAX, "^[A-Za-z0-9_]*$").build()
}

fn password() -> Object {
    doc::string(PASSWORD_MIN, PASSWORD_MAX).build()
}

fn display_name() -> Object {
    doc::nullable(doc::text(0, DISPLAY_NAME_MAX, Text::Profile)).build()
}

fn status() -> Object {
    doc::nullable(doc::text(0, STATUS_MAX, Text::Profile)).build()
}

fn picture_url() -> Object {
    doc::nullable(doc::url_or_blank()).build()
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    user_id: Uuid,
}

/// Register an account. A taken name answers 409 `username_taken`: this tells that the name
/// exists, which is accepted (a sign-up form must say so, and names are public anyway); login
/// does not reveal it (ADR 0011). Display names refuse control and invisible formatting
/// characters.
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = RegisterRequest,
    responses(
        (status = 201, description = "registered", body = Registered),
        (status = 400, description = "malformed body or invalid field", body = ErrorBody),
        (status = 409, description = "username_taken (reveals that the name exists; accepted)", body = ErrorBody),
        (status = 503, description = "busy: too many password hashes in progress; retry after Retry-After", body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Json(req): Json<RegisterRequest>,
) -> Result<Answer<Registered>, AppError> {
    let (user_id, position) = state
        .users
        .register(
            &ctx,
            &req.username,
            SecretString::from(req.password),
            req.display_name,
        )
        .await?;
    Ok(Answer::created(
        Domain::User,
        Some(position),
        Registered { user_id },
    ))
}

/// A user's public profile.
#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub status: Option<String>,
    pub profile_picture_url: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Follower and following counts, from the follow domain's `follow_graph` projection.
    pub followers: i64,
    pub following: i64,
}

impl From<ProfileRow> for Profile {
    fn from(r: ProfileRow) -> Self {
        Profile {
            user_id: r.user_id,
            username: r.username,
            display_name: r.display_name,
            status: r.status,
            profile_picture_url: r.profile_picture_url,
            created_at: r.created_at.to_string(),
            updated_at: r.updated_at.to_string(),
            followers: r.followers,
            following: r.following,
        }
    }
}

/// The caller's own profile. Always reflects the caller's own latest writes.
#[utoipa::path(get, path = "/v1/users/me", tag = "identity", security(("bearer" = [])),
    responses(
        (status = 200, body = Profile),
        (status = 503, description = "the directory is lagging", body = ErrorBody),
    ))]
async fn me(State(state): State<AppState>, actor: Actor) -> Result<Json<Profile>, AppError> {
    wait_for(
        &state,
        user_directory::NAME,
        Domain::User,
        actor.last_position,
    )
    .await?;
    users::active_profile(&state.db.any, actor.user_id)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| AppError::not_found("user"))
}

crate::views!(
    /// A profile: the user directory and the follow graph's counts.
    ProfileReads: (user_directory::NAME, &[Domain::User]), (follow_graph::NAME, &[Domain::Follow])
);

/// A user's public profile. Deactivated users are not found. `followers`/`following` come
/// from the follow graph (`X-Nova-Min-Position: follow:<n>` waits for it).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "identity",
    params(("id" = Uuid, Path, description = "user id"),
           MinPosition<ProfileReads>),
    responses(
        (status = 200, body = Profile),
        (status = 404, body = ErrorBody),
    ))]
async fn profile(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    min: MinPosition<ProfileReads>,
) -> Result<Json<Profile>, AppError> {
    min.wait(&state).await?;
    users::active_profile(&state.db.any, id)
        .await?
        .map(|p| Json(p.into()))
        .ok_or_else(|| AppError::not_found("user"))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    /// Absent: unchanged; `null` or blank: cleared. At most 64 characters, trimmed.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = display_name)]
    display_name: Option<Option<String>>,
    /// At most 280 characters, trimmed; `null` or blank: cleared.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = status)]
    status: Option<Option<String>>,
    /// An http(s) URL (`format: uri` as `URL_PATTERN` narrows it); `null` or blank: cleared.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = picture_url)]
    profile_picture_url: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdatedProfile {
    user_id: Uuid,
    username: String,
    display_name: Option<String>,
    status: Option<String>,
    profile_picture_url: Option<String>,
    version: i64,
}

/// Update the caller's profile.
#[utoipa::path(patch, path = "/v1/users/me", tag = "identity", security(("bearer" = [])),
    request_body = UpdateProfileRequest,
    responses(
        (status = 200, body = UpdatedProfile),
    ))]
async fn update_me(
    State(state): State<AppState>,
    actor: Actor,
    Json(req): Json<UpdateProfileRequest>,
) -> Result<Answer<UpdatedProfile>, AppError> {
    let (s, done) = state
        .users
        .update_profile(
            &actor.ctx,
            actor.who,
            ProfilePatch {
                display_name: req.display_name,
                status: req.status,
                profile_picture_url: req.profile_picture_url,
            },
        )
        .await?;
    Ok(Answer::ok(
        Domain::User,
        done.position,
        UpdatedProfile {
            user_id: actor.user_id,
            username: s.username,
            display_name: s.display_name,
            status: s.status,
            profile_picture_url: s.profile_picture_url,
            version: done.version,
        },
    ))
}

/// Deactivate the caller's account (soft delete). All sessions end; the profile disappears
/// from public reads; other domains clean up through the `user.deactivated` event.
#[utoipa::path(delete, path = "/v1/users/me", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Version)))]
async fn deactivate_me(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Answer<Version>, AppError> {
    let done = state.users.deactivate(&actor.ctx, actor.who).await?;
    Ok(Answer::version(Domain::User, done))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(schema_with = any_password)]
    current_password: String,
    /// 8–128 characters.
    #[schema(schema_with = password)]
    new_password: String,
}

/// A password as login takes it: at most 128 characters (no account has a longer one).
fn any_password() -> Object {
    doc::string(0, PASSWORD_MAX).build()
}

/// A username as login takes it: at most 32 characters (no account has a longer one).
fn any_username() -> Object {
    doc::string(0, USERNAME_MAX).build()
}

/// Change the caller's password; every other session is revoked. A wrong current password
/// counts toward the login lockout: the fifth within 15 minutes, and any change while locked,
/// answer 429 `account_locked`.
#[utoipa::path(post, path = "/v1/users/me/password", tag = "identity", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, body = Version),
        (status = 403, description = "wrong current password", body = ErrorBody),
        (status = 429, description = "account_locked", body = ErrorBody),
        (status = 503, description = "busy", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<AppState>,
    actor: Actor,
    Json(req): Json<ChangePasswordRequest>,
) -> Result<Answer<Version>, AppError> {
    let done = state
        .users
        .change_password(
            &actor.ctx,
            actor.who,
            SecretString::from(req.current_password),
            SecretString::from(req.new_password),
        )
        .await?;
    Ok(Answer::version(Domain::User, done))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(schema_with = any_username)]
    username: String,
    #[schema(schema_with = any_password)]
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    access_token: String,
    refresh_token: String,
    /// Seconds until the access token expires.
    expires_in: i64,
    user_id: Uuid,
}

fn token_response(t: IssuedTokens) -> impl IntoResponse {
    (
        AppendHeaders(position_header(Domain::User, t.position)),
        // Tokens must never be cached by intermediaries.
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(TokenPair {
            access_token: t.access_token,
            refresh_token: t.refresh_token.expose_secret().to_owned(),
            expires_in: t.expires_in,
            user_id: t.user_id,
        }),
    )
}

/// Log in. Unknown, deactivated and active names get the same answers in the same time; five
/// failures within 15 minutes lock the name for 15 minutes. A username over 32 or a password
/// over 128 characters is refused with 400 before any hashing.
#[utoipa::path(post, path = "/v1/sessions", tag = "identity", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
        (status = 429, description = "account_locked", body = ErrorBody),
        (status = 503, description = "busy: too many password checks in progress; retry after Retry-After", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Json(req): Json<LoginRequest>,
) -> Result<impl IntoResponse, AppError> {
    let t = state
        .users
        .login(&ctx, &req.username, SecretString::from(req.password))
        .await?;
    Ok(token_response(t))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// Exchange a refresh token for a new pair. The old refresh token stops working; presenting it
/// again revokes the whole session.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "identity", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "invalid_refresh_token or refresh_token_reused", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    Json(req): Json<RefreshRequest>,
) -> Result<impl IntoResponse, AppError> {
    let t = state.users.refresh(&ctx, &req.refresh_token).await?;
    Ok(token_response(t))
}

/// Log out: revokes this session's refresh token and access.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Version)))]
async fn logout(State(state): State<AppState>, actor: Actor) -> Result<Answer<Version>, AppError> {
    let done = state.users.logout(&actor.ctx, actor.who).await?;
    Ok(Answer::version(Domain::User, done))
}
