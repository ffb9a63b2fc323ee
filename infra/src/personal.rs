//! Personal data in events, sealed under its owner's data key (crypto-shredding, ADR 0025).
//!
//! The fields listed in `nova_event_schemas::personal::PERSONAL` are encrypted when the store
//! appends an event ([`seal_request`]) and decrypted wherever events are read ([`open_events`]:
//! the store's `load` and `read`, and the JetStream source for what it receives) — one piece
//! for every consumer, so aggregates, projectors, policies, the export and time travel see
//! plain values and no domain decrypts on its own. The keys come from a [`DataKeys`] source,
//! handed to the store once where the application is assembled; the user domain implements
//! it over its own table, and no key ever enters an event, a log line or JetStream.
//!
//! Erasure destroys a person's key. From then on each of their sealed fields opens to
//! [`ERASED`] — never an error, so no projector stalls on history it can no longer read.
//!
//! A sealed field is one JSON string, `sealed:1:<key id>:<nonce>:<ciphertext>` (nonce and
//! ciphertext with its Poly1305 tag in unpadded base64url): ChaCha20-Poly1305 under the
//! owner's 256-bit key, a random 96-bit nonce per field, the key id as associated data.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
pub use nova_event_schemas::personal::{is_erased, ERASED};
use nova_event_schemas::personal::{sealed_fields, Owner, PersonalFields};
use nova_event_schemas::{Domain, EventMetadata};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use uuid::Uuid;

use crate::store::{AppendRequest, RecordedEvent, StoreError};

/// What every sealed string starts with (format version 1).
const PREFIX: &str = "sealed:1:";
/// Length of a data key in bytes.
pub const KEY_LEN: usize = 32;

/// One person's data key. The bytes never reach `Debug` or a log.
#[derive(Clone)]
pub struct DataKey {
    pub id: Uuid,
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub fn new(id: Uuid, bytes: [u8; KEY_LEN]) -> Self {
        DataKey { id, bytes }
    }

    /// A key from its stored bytes; `None` if they are not a key.
    pub fn from_slice(id: Uuid, bytes: &[u8]) -> Option<Self> {
        Some(DataKey {
            id,
            bytes: bytes.try_into().ok()?,
        })
    }

    /// A fresh random key under a fresh id.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Unavailable("no randomness for a data key".into()))?;
        Ok(DataKey {
            id: Uuid::now_v7(),
            bytes,
        })
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.bytes)
            .ok()
            .map(LessSafeKey::new)
    }
}

/// Where data keys come from: implemented by the user domain over its own table
/// (`nova_commands::user::data_keys`), handed to the store with `EventStore::set_data_keys`.
#[async_trait]
pub trait DataKeys: Send + Sync + 'static {
    /// The key that seals `owner`'s new personal data, created on first use; `None` once the
    /// owner was erased (their data is then not stored at all).
    async fn sealing_key(&self, owner: Uuid) -> Result<Option<DataKey>, StoreError>;
    /// Those of the keys `ids` that still exist; an id missing from the answer was destroyed.
    async fn opening_keys(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, DataKey>, StoreError>;
}

/// Encrypts one value under `key`.
pub fn seal_text(key: &DataKey, plaintext: &str) -> Result<String, StoreError> {
    let failed = || StoreError::Invalid("sealing failed".into());
    let aead = key.aead().ok_or_else(failed)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| failed())?;
    let mut data = plaintext.as_bytes().to_vec();
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key.id.as_bytes()),
            &mut data,
        )
        .map_err(|_| failed())?;
    data.extend_from_slice(tag.as_ref());
    Ok(format!(
        "{PREFIX}{}:{}:{}",
        key.id.simple(),
        URL_SAFE_NO_PAD.encode(nonce),
        URL_SAFE_NO_PAD.encode(&data)
    ))
}

/// A sealed string taken apart.
struct Sealed {
    key_id: Uuid,
    nonce: [u8; NONCE_LEN],
    data: Vec<u8>,
}

fn parse(value: &str) -> Option<Sealed> {
    let rest = value.strip_prefix(PREFIX)?;
    let mut parts = rest.split(':');
    let key_id = Uuid::parse_str(parts.next()?).ok()?;
    let nonce = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let data = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Sealed {
        key_id,
        nonce: nonce.try_into().ok()?,
        data,
    })
}

/// Decrypts one value: the plaintext, or [`ERASED`] when its key is not in `keys` (destroyed)
/// or the value does not open under it. A string that is not a sealed value is returned as it
/// is (a store without a key source keeps personal fields in plaintext).
pub fn open_text(keys: &HashMap<Uuid, DataKey>, value: &str) -> String {
    if !value.starts_with(PREFIX) {
        return value.to_owned();
    }
    let opened = parse(value).and_then(|mut s| {
        let aead = keys.get(&s.key_id)?.aead()?;
        let plain = aead
            .open_in_place(
                Nonce::assume_unique_for_key(s.nonce),
                Aad::from(s.key_id.as_bytes()),
                &mut s.data,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    });
    opened.unwrap_or_else(|| ERASED.to_owned())
}

/// The strings of one personal field (a string, null, or an array of strings), mutably.
fn strings_of<'a>(payload: &'a mut Value, field: &str) -> Vec<&'a mut String> {
    match payload.get_mut(field) {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter_mut()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn owner_of(
    personal: &PersonalFields,
    payload: &Value,
    aggregate_id: Uuid,
    metadata: &EventMetadata,
) -> Option<Uuid> {
    match personal.owner {
        Owner::Field(field) => payload
            .get(field)
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok()),
        Owner::Aggregate => Some(aggregate_id),
        Owner::Actor => metadata.actor_id,
    }
}

/// Seals `personal`'s fields of `payload` in place under `key`, or writes [`ERASED`] for an
/// erased owner (`None`).
fn seal_fields(
    personal: &PersonalFields,
    payload: &mut Value,
    key: Option<&DataKey>,
) -> Result<(), StoreError> {
    for field in personal.fields {
        for value in strings_of(payload, field) {
            *value = match key {
                Some(key) => seal_text(key, value)?,
                None => ERASED.to_owned(),
            };
        }
    }
    Ok(())
}

/// The sealed form of a stored event written before its personal fields were sealed (the
/// version just before `sealed_from`, same shape): `(from version, to version, payload)`, or
/// `None` if the event has nothing to seal. For the upgrade of existing stores (ADR 0025).
pub async fn sealed_form(
    keys: &dyn DataKeys,
    event: &RecordedEvent,
) -> Result<Option<(i32, i32, Value)>, StoreError> {
    let to = event.schema_version + 1;
    let Some(personal) = sealed_fields(event.domain, &event.event_type, to) else {
        return Ok(None);
    };
    if personal.sealed_from != to {
        return Ok(None);
    }
    let owner = owner_of(
        personal,
        &event.payload,
        event.aggregate_id,
        &event.metadata,
    )
    .ok_or_else(|| {
        StoreError::Invalid(format!(
            "{}.{} at {} names no owner of its personal data",
            event.domain, event.event_type, event.position
        ))
    })?;
    let key = keys.sealing_key(owner).await?;
    let mut payload = event.payload.clone();
    seal_fields(personal, &mut payload, key.as_ref())?;
    Ok(Some((event.schema_version, to, payload)))
}

/// Seals the personal fields of every event of an append request in place, each under its
/// owner's key. The fields of an erased owner are stored as [`ERASED`]; an event whose owner
/// cannot be told is refused (a bug in the command code, never stored in plaintext).
pub async fn seal_request(
    keys: &dyn DataKeys,
    domain: Domain,
    request: &mut AppendRequest,
) -> Result<(), StoreError> {
    let mut owners: HashMap<Uuid, Option<DataKey>> = HashMap::new();
    for stream in &mut request.streams {
        for event in &mut stream.events {
            let Some(personal) = sealed_fields(domain, &event.event_type, event.schema_version)
            else {
                continue;
            };
            let owner = owner_of(
                personal,
                &event.payload,
                stream.aggregate_id,
                &request.metadata,
            )
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{domain}.{} names no owner of its personal data",
                    event.event_type
                ))
            })?;
            let key = match owners.get(&owner) {
                Some(key) => key.clone(),
                None => {
                    let key = keys.sealing_key(owner).await?;
                    owners.insert(owner, key.clone());
                    key
                }
            };
            seal_fields(personal, &mut event.payload, key.as_ref())?;
        }
    }
    Ok(())
}

/// Opens the personal fields of `events` in place: one key lookup for the whole batch, then
/// each sealed value replaced by its plaintext or [`ERASED`].
pub async fn open_events(
    keys: &dyn DataKeys,
    events: &mut [RecordedEvent],
) -> Result<(), StoreError> {
    let mut wanted = HashSet::new();
    for e in events.iter_mut() {
        if let Some(personal) = sealed_fields(e.domain, &e.event_type, e.schema_version) {
            for field in personal.fields {
                for value in strings_of(&mut e.payload, field) {
                    if let Some(s) = parse(value) {
                        wanted.insert(s.key_id);
                    }
                }
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let wanted: Vec<Uuid> = wanted.into_iter().collect();
    let found = keys.opening_keys(&wanted).await?;
    for e in events.iter_mut() {
        if let Some(personal) = sealed_fields(e.domain, &e.event_type, e.schema_version) {
            for field in personal.fields {
                for value in strings_of(&mut e.payload, field) {
                    *value = open_text(&found, value);
                }
            }
        }
    }
    Ok(())
}

/// Data keys held in memory: for tests and benchmarks.
#[derive(Default)]
pub struct MemoryKeys {
    keys: std::sync::Mutex<HashMap<Uuid, Option<DataKey>>>,
}

impl MemoryKeys {
    /// Destroys `owner`'s key (as erasure does).
    pub fn shred(&self, owner: Uuid) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner, None);
    }
}

#[async_trait]
impl DataKeys for MemoryKeys {
    async fn sealing_key(&self, owner: Uuid) -> Result<Option<DataKey>, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = keys.get(&owner) {
            return Ok(key.clone());
        }
        let key = DataKey::generate()?;
        keys.insert(owner, Some(key.clone()));
        Ok(Some(key))
    }

    async fn opening_keys(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, DataKey>, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .values()
            .flatten()
            .filter(|k| ids.contains(&k.id))
            .map(|k| (k.id, k.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEvent, StreamAppend};
    use chrono::Utc;
    use nova_event_schemas::post::{PostCreated, PostEvent};
    use nova_event_schemas::DomainEvent;

    fn created(author: Uuid, content: &str) -> PostEvent {
        PostEvent::Created(PostCreated {
            post_id: Uuid::now_v7(),
            author_id: author,
            content: content.into(),
            media_urls: vec!["https://img.example/cat.png".into()],
            mentions: vec![],
            created_at: Utc::now(),
        })
    }

    fn request(event: &PostEvent) -> AppendRequest {
        AppendRequest {
            streams: vec![StreamAppend {
                aggregate_id: Uuid::now_v7(),
                aggregate_type: "post".into(),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: event.event_type().into(),
                    schema_version: event.schema_version(),
                    payload: event.to_payload(),
                }],
            }],
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
            command_key: None,
        }
    }

    fn recorded(req: &AppendRequest) -> RecordedEvent {
        let e = &req.streams[0].events[0];
        RecordedEvent {
            domain: Domain::Post,
            position: 1,
            event_id: e.event_id,
            aggregate_id: req.streams[0].aggregate_id,
            aggregate_type: "post".into(),
            version: 1,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_only() {
        let key = DataKey::generate().unwrap();
        let sealed = seal_text(&key, "hello @bob").unwrap();
        assert!(!sealed.contains("hello"));
        let keys = HashMap::from([(key.id, key.clone())]);
        assert_eq!(open_text(&keys, &sealed), "hello @bob");
        assert_eq!(open_text(&HashMap::new(), &sealed), ERASED);
        // A tampered ciphertext does not open either.
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(open_text(&keys, &tampered), ERASED);
        // Plaintext (an old version's value) passes through.
        assert_eq!(open_text(&keys, "plain words"), "plain words");
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.bytes())));
    }

    #[tokio::test]
    async fn encrypt_then_shred_then_decode_reads_erased() {
        let keys = MemoryKeys::default();
        let author = Uuid::now_v7();
        let event = created(author, "my secret diary");
        let mut req = request(&event);
        seal_request(&keys, Domain::Post, &mut req).await.unwrap();
        let stored = req.streams[0].events[0].payload.to_string();
        assert!(!stored.contains("secret diary"), "{stored}");
        assert!(!stored.contains("cat.png"), "{stored}");

        let mut live = [recorded(&req)];
        open_events(&keys, &mut live).await.unwrap();
        assert_eq!(live[0].decode::<PostEvent>().unwrap(), event);

        keys.shred(author);
        let mut after = [recorded(&req)];
        open_events(&keys, &mut after).await.unwrap();
        let PostEvent::Created(p) = after[0].decode::<PostEvent>().unwrap() else {
            panic!("not a post");
        };
        assert_eq!(p.content, ERASED);
        assert_eq!(p.media_urls, vec![ERASED.to_owned()]);
        assert_eq!(p.author_id, author);

        // New data of an erased owner is not stored at all.
        let mut late = request(&created(author, "after erasure"));
        seal_request(&keys, Domain::Post, &mut late).await.unwrap();
        assert_eq!(late.streams[0].events[0].payload["content"], ERASED);
    }

    #[tokio::test]
    async fn the_upgrade_seals_plaintext_of_the_version_before() {
        let keys = MemoryKeys::default();
        let author = Uuid::now_v7();
        let event = created(author, "written in plaintext");
        let mut v1 = recorded(&request(&event));
        v1.schema_version = 1;
        let Some((1, 2, payload)) = sealed_form(&keys, &v1).await.unwrap() else {
            panic!("a v1 post is sealed to v2");
        };
        assert!(!payload.to_string().contains("plaintext"));
        let mut upgraded = v1.clone();
        upgraded.schema_version = 2;
        upgraded.payload = payload;
        // Already sealed: nothing more to do.
        assert!(sealed_form(&keys, &upgraded).await.unwrap().is_none());
        let mut batch = [upgraded];
        open_events(&keys, &mut batch).await.unwrap();
        assert_eq!(batch[0].decode::<PostEvent>().unwrap(), event);
    }

    #[tokio::test]
    async fn version_1_plaintext_events_still_load() {
        let keys = MemoryKeys::default();
        let author = Uuid::now_v7();
        let event = created(author, "written before sealing");
        let mut v1 = recorded(&request(&event));
        v1.schema_version = 1;
        let mut batch = [v1];
        open_events(&keys, &mut batch).await.unwrap();
        assert_eq!(batch[0].decode::<PostEvent>().unwrap(), event);
        // Even a v1 text that looks sealed is plaintext of its time.
        let mut odd = recorded(&request(&created(author, "sealed:1:x:y:z")));
        odd.schema_version = 1;
        let mut batch = [odd];
        open_events(&keys, &mut batch).await.unwrap();
        let PostEvent::Created(p) = batch[0].decode::<PostEvent>().unwrap() else {
            panic!("not a post");
        };
        assert_eq!(p.content, "sealed:1:x:y:z");
    }
}
