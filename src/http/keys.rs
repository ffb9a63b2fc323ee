//! Routes of the `keys` area (API.md "Messaging … and keys"): device identity keys, signed
//! one-time and fallback keys, claims, and the to-device queue. The server is blind: it
//! checks signatures and relays public keys and opaque payloads, nothing it could decrypt
//! with. Handlers are thin over `nova_commands::conversation::keys` (ADR 0020); nothing here
//! logs a body.

use std::collections::HashSet;
use std::fmt;

use axum::extract::State;
use nova_commands::conversation::keys::{
    self as ks, Outgoing, SignedKey, MAX_FETCH, MAX_ID_LEN, MAX_KEYS_PER_UPLOAD,
    MAX_MESSAGES_PER_REQUEST,
};
use nova_event_schemas::Domain;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::{Actor, Answer, Json, Path, Query};
use super::openapi as doc;
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_device, delete_device))
        .routes(routes!(devices))
        .routes(routes!(upload))
        .routes(routes!(claim))
        .routes(routes!(send, fetch))
        .routes(routes!(ack))
}

/// A device's identity keys, signed by its own ed25519 key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeys {
    /// Unpadded base64 of the 32-byte curve25519 identity key.
    #[schema(schema_with = key32)]
    pub curve25519: String,
    /// Unpadded base64 of the 32-byte ed25519 signing key.
    #[schema(schema_with = key32)]
    pub ed25519: String,
    /// Unpadded base64 ed25519 signature over the canonical JSON (sorted keys, no spaces) of
    /// `{"curve25519": …, "ed25519": …}`.
    #[schema(schema_with = signature64)]
    pub signature: String,
}

/// Device and key ids, as `check_id` takes them.
fn key_id() -> Object {
    doc::pattern(1, MAX_ID_LEN, "^[A-Za-z0-9_.+/=:-]*$").build()
}

/// Unpadded standard base64 of 32 bytes, as the server decodes it: 43 characters, the last
/// carrying no stray bits.
fn key32() -> Object {
    doc::pattern(43, 43, "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$").build()
}

/// Unpadded standard base64 of a 64-byte ed25519 signature: 86 characters.
fn signature64() -> Object {
    doc::pattern(86, 86, "^[A-Za-z0-9+/]{85}[AQgw]$").build()
}

/// `{key_id: {key, signature}}`: `max` keys at most, `null` for none.
fn key_map(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property_names(Some(key_id()))
        .additional_properties(Some(<SignedKeyBody as utoipa::PartialSchema>::schema()))
        .min_properties((min > 0).then_some(min))
        .max_properties(Some(max))
}

fn one_time_keys() -> Object {
    key_map(0, MAX_KEYS_PER_UPLOAD).build()
}

fn fallback_key() -> Object {
    key_map(1, 1).build()
}

/// 1–100 messages.
fn messages() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .items(<OutgoingBody as utoipa::PartialSchema>::schema())
            .min_items(Some(1))
            .max_items(Some(MAX_MESSAGES_PER_REQUEST))
            .build(),
    )
}

fn key_id_or_null() -> Object {
    doc::nullable(doc::pattern(1, MAX_ID_LEN, "^[A-Za-z0-9_.+/=:-]*$")).build()
}

fn fetch_limit() -> Object {
    doc::integer(1, MAX_FETCH).build()
}

fn position() -> Object {
    doc::integer(i64::MIN, i64::MAX).build()
}

/// A device id in a path.
struct DevicePath;

impl utoipa::IntoParams for DevicePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![doc::path("device_id", "the caller's device id", key_id())]
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeviceId {
    pub device_id: String,
}

/// Register a device's identity keys (201; 200 when the same keys were registered already).
#[utoipa::path(put, path = "/v1/keys/devices/{device_id}", tag = "keys",
    security(("bearer" = [])),
    params(DevicePath),
    request_body = DeviceKeys,
    responses(
        (status = 201, body = DeviceId),
        (status = 200, description = "already registered with these keys", body = DeviceId),
        (status = 400, description = "malformed base64 or id, bad signature", body = ErrorBody),
        (status = 409, description = "device_exists: registered with other keys", body = ErrorBody),
    ))]
async fn put_device(
    State(state): State<AppState>,
    actor: Actor,
    Path(device_id): Path<String>,
    Json(body): Json<DeviceKeys>,
) -> Result<Answer<DeviceId>, AppError> {
    let created = state
        .keys
        .register_device(
            actor.user_id,
            &device_id,
            &body.curve25519,
            &body.ed25519,
            &body.signature,
        )
        .await?;
    let body = DeviceId { device_id };
    Ok(if created {
        Answer::created(Domain::Conversation, None, body)
    } else {
        Answer::ok(Domain::Conversation, None, body)
    })
}

/// Remove one of the caller's devices with its keys and pending messages.
#[utoipa::path(delete, path = "/v1/keys/devices/{device_id}", tag = "keys",
    security(("bearer" = [])),
    params(DevicePath),
    responses(
        (status = 200, body = DeviceId),
        (status = 404, description = "unknown_device", body = ErrorBody),
    ))]
async fn delete_device(
    State(state): State<AppState>,
    actor: Actor,
    Path(device_id): Path<String>,
) -> Result<Answer<DeviceId>, AppError> {
    state.keys.remove_device(actor.user_id, &device_id).await?;
    Ok(Answer::ok(
        Domain::Conversation,
        None,
        DeviceId { device_id },
    ))
}

/// A registered device and its signed identity keys.
#[derive(Serialize, ToSchema)]
pub struct DeviceItem {
    pub device_id: String,
    pub curve25519: String,
    pub ed25519: String,
    pub signature: String,
    #[schema(value_type = String)]
    pub created_at: nova_infra::readmodel::Timestamp,
}

#[derive(Serialize, ToSchema)]
pub struct Devices {
    pub items: Vec<DeviceItem>,
}

/// A user's devices, oldest first, so that a sender can find and verify their keys.
#[utoipa::path(get, path = "/v1/users/{id}/devices", tag = "keys",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "user id")),
    responses(
        (status = 200, body = Devices),
    ))]
async fn devices(
    State(state): State<AppState>,
    _actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Json<Devices>, AppError> {
    let items = state
        .keys
        .devices(id)
        .await?
        .into_iter()
        .map(|d| DeviceItem {
            device_id: d.device_id,
            curve25519: d.curve25519,
            ed25519: d.ed25519,
            signature: d.signature,
            created_at: d.created_at,
        })
        .collect();
    Ok(Json(Devices { items }))
}

/// A signed public key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedKeyBody {
    /// Unpadded base64 of a 32-byte curve25519 key.
    #[schema(schema_with = key32)]
    pub key: String,
    /// Unpadded base64 ed25519 signature of canonical `{"key": <key>}` by the device's key.
    #[schema(schema_with = signature64)]
    pub signature: String,
}

/// `{key_id: {key, signature}}` in the order the client wrote it (that is the upload order
/// claims follow); a key id given twice is refused.
pub struct KeyMap(pub Vec<(String, SignedKey)>);

impl<'de> Deserialize<'de> for KeyMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of key id → {key, signature}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyMap, A::Error> {
                let mut seen = HashSet::new();
                let mut keys = Vec::new();
                while let Some((id, k)) = map.next_entry::<String, SignedKeyBody>()? {
                    if !seen.insert(id.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "key id {id} is given twice"
                        )));
                    }
                    keys.push((
                        id,
                        SignedKey {
                            key: k.key,
                            signature: k.signature,
                        },
                    ));
                }
                Ok(KeyMap(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// One-time keys (and optionally the fallback key) of one of the caller's devices.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadKeys {
    #[schema(schema_with = key_id)]
    pub device_id: String,
    /// `{key_id: {key, signature}}`, at most 100; claimed in the order given.
    #[schema(schema_with = one_time_keys)]
    pub keys: Option<KeyMap>,
    /// Exactly one `{key_id: {key, signature}}`; replaces the device's fallback key.
    #[schema(schema_with = fallback_key)]
    pub fallback: Option<KeyMap>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCounts {
    /// Unclaimed one-time keys the device now holds.
    pub one_time_key_counts: i64,
}

/// Upload signed one-time keys and/or the fallback key; answers the remaining count.
#[utoipa::path(post, path = "/v1/keys/one-time", tag = "keys",
    security(("bearer" = [])),
    request_body = UploadKeys,
    responses(
        (status = 200, body = KeyCounts),
        (status = 400, description = "malformed key, id or base64, bad signature", body = ErrorBody),
        (status = 404, description = "unknown_device", body = ErrorBody),
        (status = 409, description = "key_exists: an id uploaded before with another key", body = ErrorBody),
        (status = 422, description = "too_many_one_time_keys", body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<UploadKeys>,
) -> Result<Answer<KeyCounts>, AppError> {
    let keys = body.keys.map(|k| k.0).unwrap_or_default();
    let fallback = match body.fallback {
        None => None,
        Some(KeyMap(mut f)) if f.len() == 1 => f.pop(),
        Some(_) => {
            return Err(AppError::invalid_field(
                "fallback",
                "fallback holds exactly one key",
            ))
        }
    };
    let n = state
        .keys
        .upload_keys(actor.user_id, &body.device_id, &keys, fallback.as_ref())
        .await?;
    Ok(Answer::ok(
        Domain::Conversation,
        None,
        KeyCounts {
            one_time_key_counts: n,
        },
    ))
}

/// Whose key to claim.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimKey {
    pub user_id: Uuid,
    #[schema(schema_with = key_id)]
    pub device_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ClaimedKey {
    pub device_id: String,
    pub key_id: String,
    pub key: String,
    pub signature: String,
    /// The device's fallback key: no one-time key was left.
    pub fallback: bool,
}

/// Claim a device's oldest unclaimed one-time key (handed out at most once, ever), else its
/// fallback key.
#[utoipa::path(post, path = "/v1/keys/claim", tag = "keys",
    security(("bearer" = [])),
    request_body = ClaimKey,
    responses(
        (status = 200, body = ClaimedKey),
        (status = 404, description = "unknown_device, no_one_time_key", body = ErrorBody),
    ))]
async fn claim(
    State(state): State<AppState>,
    _actor: Actor,
    Json(body): Json<ClaimKey>,
) -> Result<Answer<ClaimedKey>, AppError> {
    let c = state.keys.claim(body.user_id, &body.device_id).await?;
    Ok(Answer::ok(
        Domain::Conversation,
        None,
        ClaimedKey {
            device_id: body.device_id,
            key_id: c.key_id,
            key: c.key,
            signature: c.signature,
            fallback: c.fallback,
        },
    ))
}

/// One message for one device.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutgoingBody {
    pub user_id: Uuid,
    #[schema(schema_with = key_id)]
    pub device_id: String,
    /// Opaque JSON (e.g. an Olm envelope), at most 16 KiB serialized.
    #[schema(value_type = Object)]
    pub content: Value,
}

/// Messages for devices, queued all or none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendToDevice {
    /// 1–100 messages.
    #[schema(schema_with = messages)]
    pub messages: Vec<OutgoingBody>,
    /// The sending device (one of the caller's), shown to the recipients.
    #[schema(schema_with = key_id_or_null)]
    pub sender_device_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Sent {
    pub sent: usize,
}

/// Queue opaque messages for devices, in arrival order per device.
#[utoipa::path(post, path = "/v1/to-device", tag = "keys",
    security(("bearer" = [])),
    request_body = SendToDevice,
    responses(
        (status = 200, body = Sent),
        (status = 404, description = "unknown_device", body = ErrorBody),
        (status = 413, description = "a content or the body is too large", body = ErrorBody),
    ))]
async fn send(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<SendToDevice>,
) -> Result<Answer<Sent>, AppError> {
    let messages = body
        .messages
        .into_iter()
        .map(|m| Outgoing {
            user_id: m.user_id,
            device_id: m.device_id,
            content: m.content,
        })
        .collect();
    let sent = state
        .keys
        .send_to_device(actor.user_id, body.sender_device_id.as_deref(), messages)
        .await?;
    Ok(Answer::ok(Domain::Conversation, None, Sent { sent }))
}

/// Which device's queue to read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    /// One of the caller's devices.
    pub device_id: String,
    /// 1–100 (default 100).
    pub limit: Option<i64>,
}

impl utoipa::IntoParams for FetchParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            doc::query("device_id", true, "one of the caller's devices", key_id()),
            doc::query("limit", false, "1–100 (default 100)", fetch_limit()),
        ]
    }
}

/// A pending message.
#[derive(Serialize, ToSchema)]
pub struct PendingItem {
    pub position: i64,
    pub sender_user_id: Uuid,
    pub sender_device_id: Option<String>,
    #[schema(value_type = Object)]
    pub content: Value,
}

#[derive(Serialize, ToSchema)]
pub struct PendingItems {
    pub items: Vec<PendingItem>,
}

/// The caller's device's pending messages in arrival order (they stay until acknowledged).
#[utoipa::path(get, path = "/v1/to-device", tag = "keys",
    security(("bearer" = [])),
    params(FetchParams),
    responses(
        (status = 200, body = PendingItems),
        (status = 404, description = "unknown_device (not one of the caller's)", body = ErrorBody),
    ))]
async fn fetch(
    State(state): State<AppState>,
    actor: Actor,
    Query(q): Query<FetchParams>,
) -> Result<Json<PendingItems>, AppError> {
    let items = state
        .keys
        .pending(
            actor.user_id,
            &q.device_id,
            q.limit.unwrap_or(ks::MAX_FETCH),
        )
        .await?
        .into_iter()
        .map(|p| PendingItem {
            position: p.position,
            sender_user_id: p.sender_user_id,
            sender_device_id: p.sender_device_id,
            content: p.content,
        })
        .collect();
    Ok(Json(PendingItems { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[schema(schema_with = key_id)]
    pub device_id: String,
    /// The last position the device has processed.
    #[serde(deserialize_with = "super::extract::integer")]
    #[schema(schema_with = position)]
    pub up_to: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Acked {
    pub deleted: u64,
}

/// Delete the caller's device's messages up to and including `up_to`.
#[utoipa::path(post, path = "/v1/to-device/ack", tag = "keys",
    security(("bearer" = [])),
    request_body = Ack,
    responses(
        (status = 200, body = Acked),
        (status = 400, description = "up_to beyond what the device was sent", body = ErrorBody),
        (status = 404, description = "unknown_device", body = ErrorBody),
    ))]
async fn ack(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<Ack>,
) -> Result<Answer<Acked>, AppError> {
    let deleted = state
        .keys
        .ack(actor.user_id, &body.device_id, body.up_to)
        .await?;
    Ok(Answer::ok(Domain::Conversation, None, Acked { deleted }))
}
