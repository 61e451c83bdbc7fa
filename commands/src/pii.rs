//! Personal data in the event log: sealed per customer, erasable by deleting one key.
//!
//! The domain declares which stored fields are personal ([`domain::PERSONAL_DATA`]). This module
//! keeps them out of storage in clear:
//!
//! - [`KeyStore`] is the port of the customers' data keys (AES-256): a SQLite table embedded, a
//!   DynamoDB table on AWS, optionally wrapped with KMS. [`CachedKeyStore`] is its cache.
//! - [`Pii`] seals the personal fields of a commit before it is written, and reveals them on
//!   every read: decrypted while the owner's key exists, in the erased form
//!   ([`domain::ERASED`]) once it is gone.
//! - [`PersonalDataStore`] is the event-store decorator that applies [`Pii`] on every path, so
//!   loads, feeds, replays, rebuilds, time travel and the export all see the same thing.
//! - [`Erasure`] is the use case: delete the key, then record `CustomerErased`.
//! - [`Pseudonyms`] masks personal data for readers without the `pii` scope.
//!
//! A sealed field is self-describing JSON in place of the value:
//! `{"enc":"AES-256-GCM","kid":"<key id>","iv":"<base64 nonce>","ct":"<base64 ciphertext+tag>"}`.
//! The plaintext is the field's JSON; the associated data binds it to the key id and field name.
//! Histories written before sealing existed hold personal fields in clear: they still load, and
//! read as erased once their owner is erased (the bytes stay in those old events).

use crate::service::{CommandContext, CommandService, Executed};
use crate::store::{
    Commit, EventEnvelope, EventMapper, MappedStore, Snapshot, StoreError, StreamRef,
};
use crate::{CommandError, Payload};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use domain::{CustomerCommand, CustomerId, ErasedAs, PersonalData, PersonalField, StreamType};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The algorithm every sealed field names.
pub const ALGORITHM: &str = "AES-256-GCM";
/// The scope a token needs to read personal data through the analysts' endpoints.
pub const PII_SCOPE: &str = "pii";
/// What a masked personal text reads for a reader without the `pii` scope.
pub const MASKED: &str = "[masked]";
/// The payload field that names a customer, in every event that has one.
pub const CUSTOMER_ID_FIELD: &str = "customer_id";

/// One customer's data key: 32 random bytes and a random id that sealed fields name.
#[derive(Clone)]
pub struct DataKey {
    id: String,
    material: Arc<[u8; 32]>,
    cipher: Arc<LessSafeKey>,
}

impl DataKey {
    pub fn new(id: impl Into<String>, material: [u8; 32]) -> Self {
        // AES-256 takes any 32 bytes, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, &material).unwrap_or_else(|_| unreachable!());
        Self {
            id: id.into(),
            material: Arc::new(material),
            cipher: Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, StoreError> {
        let mut material = [0u8; 32];
        SystemRandom::new()
            .fill(&mut material)
            .map_err(|_| StoreError::Internal("no randomness for a data key".into()))?;
        Ok(Self::new(
            uuid::Uuid::new_v4().simple().to_string(),
            material,
        ))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw key, for a key store to keep (or wrap).
    pub fn material(&self) -> &[u8; 32] {
        &self.material
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({}, <redacted>)", self.id)
    }
}

/// What a key store knows of one customer.
#[derive(Debug, Clone, Default)]
pub struct CustomerKeys {
    /// The current data key; `None` when they never had one or were erased since.
    pub key: Option<DataKey>,
    /// Whether they were ever erased (their older data then reads as erased).
    pub erased: bool,
}

/// The customers' data keys.
///
/// Contract (checked by [`crate::conformance::key_store_contract`]): `key_for` returns the customer's current key,
/// creating it (durably, before it returns) when they have none, and concurrent calls agree on
/// one key; `lookup` reads without creating; `erase` deletes the key so that nothing can recover
/// it, remembers the erasure, and is idempotent. After an erasure `key_for` creates a new key.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError>;
    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError>;
    async fn erase(&self, customer: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError> {
        (**self).key_for(customer).await
    }
    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        (**self).lookup(customer).await
    }
    async fn erase(&self, customer: &str) -> Result<(), StoreError> {
        (**self).erase(customer).await
    }
}

/// Keys in memory, for tests and in-memory compositions.
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<std::collections::HashMap<String, CustomerKeys>>,
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys.entry(customer.to_owned()).or_default();
        if let Some(key) = &entry.key {
            return Ok(key.clone());
        }
        let key = DataKey::generate()?;
        entry.key = Some(key.clone());
        Ok(key)
    }
    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.get(customer).cloned().unwrap_or_default())
    }
    async fn erase(&self, customer: &str) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(
            customer.to_owned(),
            CustomerKeys {
                key: None,
                erased: true,
            },
        );
        Ok(())
    }
}

/// A key-store decorator that keeps recent answers in memory (at most `capacity` customers).
///
/// An erasure through this cache forgets the customer at once. Another process's erasure is seen
/// when the entry expires: `ttl` `None` is for a store only this process writes (the embedded
/// data directory is locked to one process); on AWS it bounds how long a deleted key may still
/// decrypt elsewhere.
pub struct CachedKeyStore<K> {
    inner: K,
    ttl: Option<Duration>,
    writes: Entries<DataKey>,
    reads: Entries<CustomerKeys>,
}

/// One of the cache's two maps: customer → (answer, when it was fetched).
type Entries<T> = Mutex<hashlink::LruCache<String, (T, Instant)>>;

fn entries<T>(
    map: &Entries<T>,
) -> std::sync::MutexGuard<'_, hashlink::LruCache<String, (T, Instant)>> {
    // The map holds no invariant a panicking holder could break.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: KeyStore> CachedKeyStore<K> {
    pub fn new(inner: K, capacity: usize, ttl: Option<Duration>) -> Self {
        Self {
            inner,
            ttl,
            writes: Mutex::new(hashlink::LruCache::new(capacity)),
            reads: Mutex::new(hashlink::LruCache::new(capacity)),
        }
    }

    /// The cached answer for `customer`, unless it expired.
    fn cached<T: Clone>(&self, map: &Entries<T>, customer: &str) -> Option<T> {
        let (value, at) = entries(map).get(customer).cloned()?;
        self.ttl
            .is_none_or(|ttl| at.elapsed() < ttl)
            .then_some(value)
    }

    fn forget(&self, customer: &str) {
        entries(&self.writes).remove(customer);
        entries(&self.reads).remove(customer);
    }
}

#[async_trait]
impl<K: KeyStore> KeyStore for CachedKeyStore<K> {
    async fn key_for(&self, customer: &str) -> Result<DataKey, StoreError> {
        if let Some(key) = self.cached(&self.writes, customer) {
            return Ok(key);
        }
        let key = self.inner.key_for(customer).await?;
        // A read cached before the key existed is stale now.
        entries(&self.reads).remove(customer);
        entries(&self.writes).insert(customer.to_owned(), (key.clone(), Instant::now()));
        Ok(key)
    }

    async fn lookup(&self, customer: &str) -> Result<CustomerKeys, StoreError> {
        if let Some(keys) = self.cached(&self.reads, customer) {
            return Ok(keys);
        }
        let keys = self.inner.lookup(customer).await?;
        entries(&self.reads).insert(customer.to_owned(), (keys.clone(), Instant::now()));
        Ok(keys)
    }

    async fn erase(&self, customer: &str) -> Result<(), StoreError> {
        self.forget(customer);
        let erased = self.inner.erase(customer).await;
        // A lookup racing the erasure may have cached the old key meanwhile.
        self.forget(customer);
        erased
    }
}

/// Seals and reveals the personal fields of stored events and snapshots.
#[derive(Clone)]
pub struct Pii {
    keys: Arc<dyn KeyStore>,
}

/// What reading one personal field gives.
enum Revealed<T> {
    /// Sealed, and opened with its owner's key.
    Opened(T),
    /// Sealed with a key that is gone, or in clear while its owner is erased.
    Erased,
    /// Written in clear before sealing existed, its owner not erased: left as it is.
    InClear,
}

/// One owner's keys, looked up when the first of their fields needs them.
struct SubjectKeys<'a> {
    store: &'a dyn KeyStore,
    subject: &'a str,
    keys: Option<CustomerKeys>,
}

impl<'a> SubjectKeys<'a> {
    fn new(store: &'a dyn KeyStore, subject: &'a str) -> Self {
        Self {
            store,
            subject,
            keys: None,
        }
    }

    async fn reveal<T>(
        &mut self,
        sealed: Option<Sealed>,
        open: impl FnOnce(&DataKey, &Sealed) -> Option<T>,
    ) -> Result<Revealed<T>, StoreError> {
        let keys = match &self.keys {
            Some(keys) => keys,
            None => self.keys.insert(self.store.lookup(self.subject).await?),
        };
        Ok(match sealed {
            Some(sealed) => match keys.key.as_ref().and_then(|key| open(key, &sealed)) {
                Some(opened) => Revealed::Opened(opened),
                None => Revealed::Erased,
            },
            None if keys.erased => Revealed::Erased,
            None => Revealed::InClear,
        })
    }
}

/// A sealed field as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    enc: String,
    kid: String,
    iv: String,
    ct: String,
}

fn aad(kid: &str, field: &str) -> String {
    format!("{kid}|{field}")
}

/// Seals one field's JSON text under `key`: the sealed object's JSON text.
fn seal_text(key: &DataKey, field: &str, json: &str) -> Result<String, StoreError> {
    // A random 96-bit nonce per field, from the thread's CSPRNG (seeded by the OS).
    let iv: [u8; NONCE_LEN] = rand::random();
    let mut text = json.as_bytes().to_vec();
    key.cipher
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(aad(&key.id, field).as_bytes()),
            &mut text,
        )
        .map_err(|_| StoreError::Internal("sealing a personal field failed".into()))?;
    // Key ids and base64 need no JSON escaping.
    Ok(format!(
        r#"{{"enc":"{ALGORITHM}","kid":"{}","iv":"{}","ct":"{}"}}"#,
        key.id,
        B64.encode(iv),
        B64.encode(text)
    ))
}

fn seal_value(key: &DataKey, field: &str, value: &Value) -> Result<Value, StoreError> {
    serde_json::from_str(&seal_text(key, field, &value.to_string())?)
        .map_err(|e| StoreError::Internal(e.to_string()))
}

fn as_sealed(value: &Value) -> Option<Sealed> {
    let object = value.as_object()?;
    if object.get("enc").and_then(Value::as_str) != Some(ALGORITHM) {
        return None;
    }
    serde_json::from_value(value.clone()).ok()
}

/// A field's stored text as a sealed value, when it is one (whatever the order of its members).
fn raw_sealed(raw: &RawValue) -> Option<Sealed> {
    if !raw.get().trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Sealed>(raw.get())
        .ok()
        .filter(|sealed| sealed.enc == ALGORITHM)
}

/// Opens a sealed field with `key` into its JSON text; `None` when it was sealed with another
/// key or is damaged.
fn open_text(key: &DataKey, field: &str, sealed: &Sealed) -> Option<Box<RawValue>> {
    if sealed.kid != key.id {
        return None;
    }
    let iv: [u8; NONCE_LEN] = B64.decode(&sealed.iv).ok()?.try_into().ok()?;
    let mut text = B64.decode(&sealed.ct).ok()?;
    let plain = key
        .cipher
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::from(aad(&sealed.kid, field).as_bytes()),
            &mut text,
        )
        .ok()?;
    RawValue::from_string(String::from_utf8(plain.to_vec()).ok()?).ok()
}

fn open_value(key: &DataKey, field: &str, sealed: &Sealed) -> Option<Value> {
    serde_json::from_str(open_text(key, field, sealed)?.get()).ok()
}

/// A stored JSON object that names its owner, and the personal fields its shape declares.
struct Owned<'v> {
    fields: &'static [PersonalField],
    object: &'v mut Map<String, Value>,
    subject: String,
}

/// `value` with its owner's customer id, when it is an object that names one.
fn owned<'v>(shape: &'static PersonalData, value: &'v mut Value) -> Option<Owned<'v>> {
    let object = value.as_object_mut()?;
    let subject = object.get(shape.subject)?.as_str()?.to_owned();
    Some(Owned {
        fields: shape.fields,
        object,
        subject,
    })
}

impl Pii {
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Seals every personal field of the commit's events and snapshots, in place.
    pub async fn seal_commit(&self, commit: &mut Commit) -> Result<(), StoreError> {
        for append in &mut commit.streams {
            let stream_type = append.stream.stream_type;
            for event in &mut append.events {
                let Some(shape) = domain::personal_event(stream_type, &event.event_type) else {
                    continue;
                };
                if shape.fields.is_empty() {
                    // The subject's first event: their key is made ready, nothing is sealed.
                    if let Some(subject) = event.payload.value().get(shape.subject) {
                        if let Some(subject) = subject.as_str() {
                            self.keys.key_for(subject).await?;
                        }
                    }
                    continue;
                }
                event.payload = self.seal_event(shape, &event.payload).await?;
            }
            if let (Some(snapshot), Some(shape)) = (
                append.snapshot.as_mut(),
                domain::personal_snapshot(stream_type),
            ) {
                if let Some(state) = owned(shape, &mut snapshot.state) {
                    self.seal_snapshot(state).await?;
                }
            }
        }
        Ok(())
    }

    /// Seals an event's personal fields with its owner's key (created when they have none).
    /// Works on the payload's text: only the owner and the personal fields are parsed.
    async fn seal_event(
        &self,
        shape: &PersonalData,
        payload: &Payload,
    ) -> Result<Payload, StoreError> {
        let malformed = |e: serde_json::Error| StoreError::InvalidCommit(format!("payload: {e}"));
        let mut fields: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(payload.json()).map_err(malformed)?;
        let Some(subject) = fields
            .get(shape.subject)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        else {
            return Ok(payload.clone());
        };
        let key = self.keys.key_for(&subject).await?;
        for field in shape.fields {
            let Some(raw) = fields.get_mut(field.name) else {
                continue;
            };
            if raw.get() == "null" || raw_sealed(raw).is_some() {
                continue;
            }
            let sealed = seal_text(&key, field.name, raw.get())?;
            *raw = RawValue::from_string(sealed).map_err(malformed)?;
        }
        Payload::from_json(serde_json::to_string(&fields).map_err(malformed)?).map_err(malformed)
    }

    /// Seals a snapshot state's personal fields with its owner's key. The state may predate an
    /// erasure (a cached state), so an owner erased before gets the erased form instead, never
    /// a new key.
    async fn seal_snapshot(&self, state: Owned<'_>) -> Result<(), StoreError> {
        let known = self.keys.lookup(&state.subject).await?;
        let key = match (known.key, known.erased) {
            (_, true) => None,
            (Some(key), false) => Some(key),
            (None, false) => Some(self.keys.key_for(&state.subject).await?),
        };
        for field in state.fields {
            let Some(current) = state.object.get_mut(field.name) else {
                continue;
            };
            if current.is_null() || as_sealed(current).is_some() {
                continue;
            }
            *current = match &key {
                Some(key) => seal_value(key, field.name, current)?,
                None => field.erased_as.value(),
            };
        }
        Ok(())
    }

    /// Reveals an object's personal fields: opened with the owner's key, or erased.
    async fn reveal_object(&self, owned: Owned<'_>) -> Result<(), StoreError> {
        let mut keys = SubjectKeys::new(&*self.keys, &owned.subject);
        for field in owned.fields {
            let Some(current) = owned.object.get(field.name).filter(|v| !v.is_null()) else {
                continue;
            };
            let open = |key: &DataKey, sealed: &Sealed| open_value(key, field.name, sealed);
            let revealed = match keys.reveal(as_sealed(current), open).await? {
                Revealed::Opened(value) => value,
                Revealed::Erased => field.erased_as.value(),
                Revealed::InClear => continue,
            };
            owned.object.insert(field.name.to_owned(), revealed);
        }
        Ok(())
    }

    /// Reveals the personal fields of one event, in place. Works on the payload's text, like
    /// sealing: only the owner and the personal fields are parsed, and a payload that needs no
    /// change (in clear, its owner not erased) is kept as it is.
    pub async fn reveal(&self, event: &mut EventEnvelope) -> Result<(), StoreError> {
        let shape = domain::personal_event(event.stream_type, &event.event_type);
        let Some(shape) = shape.filter(|s| !s.fields.is_empty()) else {
            return Ok(());
        };
        // A payload that is not an object is left to the reader that decodes it.
        let Ok(mut fields) = serde_json::from_str::<
            std::collections::BTreeMap<String, Box<RawValue>>,
        >(event.payload.json()) else {
            return Ok(());
        };
        let Some(subject) = fields
            .get(shape.subject)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        else {
            return Ok(());
        };
        let mut keys = SubjectKeys::new(&*self.keys, &subject);
        let mut changed = false;
        for field in shape.fields {
            let Some(raw) = fields.get_mut(field.name).filter(|r| r.get() != "null") else {
                continue;
            };
            let open = |key: &DataKey, sealed: &Sealed| open_text(key, field.name, sealed);
            *raw = match keys.reveal(raw_sealed(raw), open).await? {
                Revealed::Opened(text) => text,
                Revealed::Erased => serde_json::value::to_raw_value(&field.erased_as.value())
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                Revealed::InClear => continue,
            };
            changed = true;
        }
        if changed {
            let text =
                serde_json::to_string(&fields).map_err(|e| StoreError::Internal(e.to_string()))?;
            event.payload =
                Payload::from_json(text).map_err(|e| StoreError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Reveals the personal fields of every event, in place.
    pub async fn reveal_all(&self, events: &mut [EventEnvelope]) -> Result<(), StoreError> {
        for event in events {
            self.reveal(event).await?;
        }
        Ok(())
    }

    async fn reveal_snapshot(
        &self,
        stream: StreamType,
        snapshot: &mut Snapshot,
    ) -> Result<(), StoreError> {
        let shape = domain::personal_snapshot(stream);
        if let Some(state) = shape.and_then(|shape| owned(shape, &mut snapshot.state)) {
            self.reveal_object(state).await?;
        }
        Ok(())
    }
}

/// An event-store decorator that seals personal data on the way in and reveals it on every way
/// out (see the module docs).
pub type PersonalDataStore<S> = MappedStore<S, Pii>;

#[async_trait]
impl EventMapper for Pii {
    async fn before_append(&self, commit: &mut Commit) -> Result<(), StoreError> {
        self.seal_commit(commit).await
    }
    async fn map(&self, mut events: Vec<EventEnvelope>) -> Result<Vec<EventEnvelope>, StoreError> {
        self.reveal_all(&mut events).await?;
        Ok(events)
    }
    async fn map_snapshot(
        &self,
        stream: &StreamRef,
        snapshot: &mut Snapshot,
    ) -> Result<(), StoreError> {
        self.reveal_snapshot(stream.stream_type, snapshot).await
    }
    // Filters judge types and ids, never personal fields, so the default (the sealed event) fits.
}

/// What an erasure answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ErasureReceiptSchema))]
pub struct ErasureReceipt {
    pub customer_id: String,
    /// 1 for the customer's first erasure, 2 for the next, ...
    pub erasure: u32,
    pub erased_at: DateTime<Utc>,
}

/// The erasure use case: the customer's key goes first (that is the erasure), then
/// `CustomerErased` records it on the customer's stream, where read models see it.
pub struct Erasure {
    svc: Arc<CommandService>,
    keys: Arc<dyn KeyStore>,
}

impl Erasure {
    pub fn new(svc: Arc<CommandService>, keys: Arc<dyn KeyStore>) -> Self {
        Self { svc, keys }
    }

    /// Erases a customer's personal data. A retry with the context's idempotency key answers as
    /// the first request and erases nothing more (a key created since stays); a new request
    /// erases again, and is recorded again.
    #[tracing::instrument(skip_all, fields(customer = %customer), err)]
    pub async fn erase(
        &self,
        ctx: &CommandContext,
        customer: &CustomerId,
        requested_by: &str,
    ) -> Result<Executed<ErasureReceipt>, CommandError> {
        if let Some(replayed) = self.svc.replay::<ErasureReceipt>(ctx).await? {
            return Ok(replayed);
        }
        self.keys.erase(customer.as_str()).await?;
        let at = self.svc.clock().now();
        let executed = self
            .svc
            .execute::<domain::Customer, _, _, _>(
                customer.as_str(),
                ctx,
                |_| {
                    Ok(CustomerCommand::Erase {
                        customer_id: customer.clone(),
                        requested_by: requested_by.to_owned(),
                        at,
                    })
                },
                |state, _| ErasureReceipt {
                    customer_id: customer.to_string(),
                    erasure: state.erasures,
                    erased_at: state.erased_at.unwrap_or(at),
                },
            )
            .await?;
        tracing::info!(erasure = executed.value.erasure, "customer erased");
        Ok(executed)
    }
}

/// Masks personal data for readers without the `pii` scope: personal fields read [`MASKED`], and
/// every customer id (in payloads, customer stream ids and customers' actor subjects) becomes a
/// keyed pseudonym that is the same in every export, so joins still work.
pub struct Pseudonyms {
    key: ring::hmac::Key,
}

impl Pseudonyms {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// The stable pseudonym of a customer id: `anon_` and 32 hex digits.
    pub fn of(&self, customer: &str) -> String {
        let tag = ring::hmac::sign(&self.key, customer.as_bytes());
        format!("anon_{}", hex::encode(&tag.as_ref()[..16]))
    }

    /// Masks one event for a reader without the `pii` scope.
    pub fn mask(&self, event: &mut EventEnvelope) {
        if event.stream_type == StreamType::Customer {
            event.stream_id = self.of(&event.stream_id);
        }
        if event.metadata.actor.role == "customer" && !event.metadata.actor.subject.is_empty() {
            event.metadata.actor.subject = self.of(&event.metadata.actor.subject);
        }
        // Most events name no customer and hold nothing personal: their payload is not parsed.
        let personal = domain::personal_event(event.stream_type, &event.event_type)
            .is_some_and(|shape| !shape.fields.is_empty());
        if !personal && !event.payload.json().contains(CUSTOMER_ID_FIELD) {
            return;
        }
        let mut value = event.payload.to_value();
        if self.mask_value(event.stream_type, &event.event_type, &mut value) {
            event.payload = Payload::from(value);
        }
    }

    /// Masks a payload in place; true when anything changed.
    fn mask_value(&self, stream: StreamType, event_type: &str, value: &mut Value) -> bool {
        let Some(object) = value.as_object_mut() else {
            return false;
        };
        let mut changed = false;
        if let Some(shape) = domain::personal_event(stream, event_type) {
            for field in shape.fields {
                if object.get(field.name).is_some_and(|v| !v.is_null()) {
                    object.insert(field.name.to_owned(), masked(field.erased_as));
                    changed = true;
                }
            }
        }
        if let Some(Value::String(id)) = object.get_mut(CUSTOMER_ID_FIELD) {
            *id = self.of(id);
            changed = true;
        }
        changed
    }

    /// Masks a JSON state (time travel) of a stream: personal snapshot fields and customer ids.
    pub fn mask_state(&self, stream: StreamType, state: &mut Value) {
        if let (Some(shape), Some(object)) =
            (domain::personal_snapshot(stream), state.as_object_mut())
        {
            for field in shape.fields {
                if object.get(field.name).is_some_and(|v| !v.is_null()) {
                    object.insert(field.name.to_owned(), masked(field.erased_as));
                }
            }
        }
        if let Some(Value::String(id)) = state.get_mut(CUSTOMER_ID_FIELD) {
            *id = self.of(id);
        }
        if stream == StreamType::Customer {
            if let Some(Value::String(id)) = state.get_mut("id") {
                *id = self.of(id);
            }
        }
    }
}

fn masked(erased_as: ErasedAs) -> Value {
    let mut value = erased_as.value();
    replace_texts(&mut value, domain::ERASED, MASKED);
    value
}

fn replace_texts(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_owned(),
        Value::Object(map) => map.values_mut().for_each(|v| replace_texts(v, from, to)),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_texts(v, from, to)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_contract() {
        crate::conformance::key_store_contract(Arc::new(MemoryKeyStore::default())).await;
    }

    #[tokio::test]
    async fn the_cache_keeps_the_contract() {
        crate::conformance::key_store_contract(Arc::new(CachedKeyStore::new(
            MemoryKeyStore::default(),
            100,
            None,
        )))
        .await;
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_field() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let value = serde_json::json!("ada@example.com");
        let sealed = seal_value(&key, "customer_email", &value).unwrap();
        let text = sealed.to_string();
        assert!(!text.contains("ada@example.com"));
        assert_eq!(sealed["enc"], ALGORITHM);
        assert_eq!(sealed["kid"], key.id());
        let parsed = as_sealed(&sealed).unwrap();
        assert_eq!(
            open_value(&key, "customer_email", &parsed),
            Some(value.clone())
        );
        assert_eq!(open_value(&key, "shipping_address", &parsed), None);
        assert_eq!(open_value(&other, "customer_email", &parsed), None);
        // A fresh nonce per seal.
        assert_ne!(seal_value(&key, "customer_email", &value).unwrap(), sealed);
    }

    #[test]
    fn pseudonyms_are_stable_per_secret() {
        let a = Pseudonyms::new(b"one");
        let b = Pseudonyms::new(b"two");
        assert_eq!(a.of("cust-1"), a.of("cust-1"));
        assert_ne!(a.of("cust-1"), a.of("cust-2"));
        assert_ne!(a.of("cust-1"), b.of("cust-1"));
        assert!(a.of("cust-1").starts_with("anon_"));
        assert_eq!(a.of("cust-1").len(), "anon_".len() + 32);
    }
}
