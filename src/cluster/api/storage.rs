//! Objects over the revisioned store: JSON encoding (Secrets sealed by the [`KeyRing`]),
//! `resourceVersion` from the key's mod revision, and the create / update / delete
//! transactions with the compares that make them safe under concurrent writers.

use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::encryption::KeyRing;
use super::resources::Resource;
use super::status::ApiError;
use crate::cluster::store::{Compare, KeyValue, ListOptions, Op, OpResult, Revision, Store, Txn};

/// The typed face of the store the handlers use.
#[derive(Clone)]
pub struct Storage {
    pub store: Arc<dyn Store>,
    keys: Option<Arc<RwLock<KeyRing>>>,
}

/// A page of stored objects, still as bytes: a list that needs no selector never decodes them.
pub struct Page {
    pub items: Vec<StoredObject>,
    pub revision: Revision,
    /// The last store key read, to continue from, when more follow.
    pub continue_after: Option<String>,
}

/// One object as stored: its JSON (Secrets already opened) without `resourceVersion`, which is
/// the key's mod revision.
pub struct StoredObject {
    pub key: String,
    pub json: Vec<u8>,
    pub mod_revision: Revision,
}

impl StoredObject {
    pub fn decode(&self) -> Result<Value, ApiError> {
        parse_stored(&self.key, &self.json, self.mod_revision)
    }

    /// Appends the object's JSON with its `resourceVersion` to `out`, without decoding it:
    /// serde_json finds where `metadata` starts and the version is spliced in there.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), ApiError> {
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow)]
            metadata: &'a serde_json::value::RawValue,
        }
        let bad = |e: serde_json::Error| {
            ApiError::Internal(format!("stored {} is not JSON: {e}", self.key))
        };
        let top: Top = serde_json::from_slice(&self.json).map_err(bad)?;
        let meta = top.metadata.get();
        // Offsets within the same buffer: the raw value borrows from `self.json`.
        let start = meta.as_ptr() as usize - self.json.as_ptr() as usize;
        if !meta.starts_with('{') {
            return Err(ApiError::Internal(format!(
                "stored {} has no metadata object",
                self.key
            )));
        }
        let empty = meta[1..].trim_start().starts_with('}');
        out.extend_from_slice(&self.json[..=start]);
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(self.mod_revision.to_string().as_bytes());
        out.extend_from_slice(if empty { b"\"" } else { b"\"," });
        out.extend_from_slice(&self.json[start + 1..]);
        Ok(())
    }
}

/// What a create or update ended as.
pub enum Written {
    Ok(Value),
    /// The key already exists (create) or changed since it was read (update).
    CompareFailed,
}

fn sealed(r: &Resource) -> bool {
    r.plural == "secrets"
}

impl Storage {
    pub fn new(store: Arc<dyn Store>, keys: Option<KeyRing>) -> Storage {
        Storage {
            store,
            keys: keys.map(|k| Arc::new(RwLock::new(k))),
        }
    }

    /// The ids of the keys Secrets open with, and the one they are sealed with (none when
    /// Secrets are stored in the clear).
    pub fn key_ids(&self) -> Option<(Vec<String>, String)> {
        let keys = self.keys.as_ref()?.read().expect("key ring lock");
        Some((keys.ids(), keys.current_key_id().to_string()))
    }

    /// Opens and seals with `keys` from now on (the cluster's keys changed: several masters).
    pub fn replace_keys(&self, keys: KeyRing) {
        if let Some(ring) = &self.keys {
            *ring.write().expect("key ring lock") = keys;
        }
    }

    /// The bytes to store for `object` under `key` (Secrets sealed, bound to `key`).
    pub fn encode(&self, r: &Resource, key: &str, object: &Value) -> Result<Vec<u8>, ApiError> {
        let mut copy = object.clone();
        if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        if let (Some(stored_as), Some(o)) = (r.stored_as, copy.as_object_mut()) {
            o.insert("apiVersion".into(), Value::from(stored_as));
        }
        let json = serde_json::to_vec(&copy).map_err(|e| ApiError::Internal(e.to_string()))?;
        match (&self.keys, sealed(r)) {
            // The storage key is the associated data: the value opens only there.
            (Some(keys), true) => Ok(keys.read().expect("key ring lock").seal(&json, key)),
            _ => Ok(json),
        }
    }

    /// [`Storage::encode`] for a write: refuses an object larger than
    /// [`super::MAX_OBJECT_BYTES`] (a patch can grow one past what its body was).
    pub fn encode_write(
        &self,
        r: &Resource,
        key: &str,
        object: &Value,
    ) -> Result<Vec<u8>, ApiError> {
        let value = self.encode(r, key, object)?;
        if value.len() > super::MAX_OBJECT_BYTES {
            return Err(ApiError::ObjectTooLarge {
                size: value.len(),
                limit: super::MAX_OBJECT_BYTES,
            });
        }
        Ok(value)
    }

    pub fn decode(&self, r: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
        let bytes = match (&self.keys, sealed(r)) {
            (Some(_), true) => std::borrow::Cow::Owned(self.open(r, &kv.key, &kv.value)?),
            _ => std::borrow::Cow::Borrowed(&kv.value),
        };
        let mut object = parse_stored(&kv.key, &bytes, kv.mod_revision)?;
        served_as(r, &mut object);
        Ok(object)
    }

    fn open(&self, r: &Resource, key: &str, sealed: &[u8]) -> Result<Vec<u8>, ApiError> {
        let keys = self.keys.as_ref().expect("only called with a key ring");
        keys.read()
            .expect("key ring lock")
            .open(sealed, key)
            .map_err(|e| ApiError::Internal(format!("{} {key}: {e}", r.plural)))
    }

    /// The stored bytes of a key-value, opened if sealed.
    fn stored(&self, r: &Resource, kv: KeyValue) -> Result<StoredObject, ApiError> {
        let json = match (&self.keys, sealed(r)) {
            (Some(_), true) => self.open(r, &kv.key, &kv.value)?,
            _ => kv.value,
        };
        // Read at a version other than the stored one: the bytes say the served `apiVersion`.
        let json = match r.stored_as {
            None => json,
            Some(_) => {
                let mut object = parse_stored(&kv.key, &json, kv.mod_revision)?;
                served_as(r, &mut object);
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                serde_json::to_vec(&object).map_err(|e| ApiError::Internal(e.to_string()))?
            }
        };
        Ok(StoredObject {
            key: kv.key,
            json,
            mod_revision: kv.mod_revision,
        })
    }

    pub async fn get(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Revision)>, ApiError> {
        match self.store.get(&r.key(ns, name)).await? {
            Some(kv) => Ok(Some((self.decode(r, &kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// One page of up to `limit` keys (0: all) from the store, opened but not decoded.
    pub async fn list(
        &self,
        r: &Resource,
        ns: Option<&str>,
        limit: usize,
        continue_after: Option<String>,
        at_revision: Option<Revision>,
    ) -> Result<Page, ApiError> {
        let result = self
            .store
            .list(
                &r.prefix(ns),
                ListOptions {
                    limit,
                    continue_after,
                    at_revision,
                },
            )
            .await?;
        let last = result.items.last().map(|kv| kv.key.clone());
        let items = result
            .items
            .into_iter()
            .map(|kv| self.stored(r, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            revision: result.revision,
            continue_after: if result.more { last } else { None },
        })
    }

    /// Creates the object if its key is absent.
    pub async fn create(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Written, ApiError> {
        let key = r.key(ns, name);
        self.put_if(r, object, Compare::absent(key.clone()), key)
            .await
    }

    /// Replaces the object if it is still at `expected` (its mod revision when read).
    pub async fn update(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        object: &Value,
        expected: Revision,
    ) -> Result<Written, ApiError> {
        let key = r.key(ns, name);
        self.put_if(r, object, Compare::mod_revision(key.clone(), expected), key)
            .await
    }

    /// Writes the object under `key` if `condition` holds, and returns it with its new
    /// resourceVersion.
    async fn put_if(
        &self,
        r: &Resource,
        object: &Value,
        condition: Compare,
        key: String,
    ) -> Result<Written, ApiError> {
        let value = self.encode_write(r, &key, object)?;
        let result = self
            .store
            .txn(Txn::new().when([condition]).then([Op::put(key, value)]))
            .await?;
        if !result.succeeded {
            return Ok(Written::CompareFailed);
        }
        let mut out = object.clone();
        set_resource_version(&mut out, result.revision);
        Ok(Written::Ok(out))
    }

    /// Deletes the object if it is still at `expected`. Returns whether it was deleted.
    pub async fn delete(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
    ) -> Result<Option<Revision>, ApiError> {
        let key = r.key(ns, name);
        let result = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key.clone(), expected)])
                    .then([Op::delete(key)]),
            )
            .await?;
        let deleted = result.succeeded
            && matches!(
                result.results.first(),
                Some(OpResult::Delete { prev: Some(_) })
            );
        Ok(deleted.then_some(result.revision))
    }

    /// Re-seals every Secret not sealed as today (an older key, or an envelope not bound to
    /// its storage key) with the current key. Returns how many were rewritten.
    pub async fn reencrypt_secrets(&self, r: &Resource) -> Result<usize, ApiError> {
        let Some(keys) = &self.keys else {
            return Ok(0);
        };
        let listed = self
            .store
            .list(&r.prefix(None), ListOptions::default())
            .await?;
        let mut rewritten = 0;
        for kv in listed.items {
            if keys.read().expect("key ring lock").is_current(&kv.value) {
                continue;
            }
            let object = self.decode(r, &kv)?;
            let value = self.encode(r, &kv.key, &object)?;
            let result = self
                .store
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(kv.key.clone(), kv.mod_revision)])
                        .then([Op::put(kv.key.clone(), value)]),
                )
                .await?;
            // A Secret written meanwhile was sealed with the current key by that write.
            rewritten += usize::from(result.succeeded);
        }
        Ok(rewritten)
    }
}

/// An object stored at another version of its resource, as `r` serves it: custom resources
/// have one schema shape across versions here (no conversion webhooks: the `None` strategy),
/// so only `apiVersion` differs.
fn served_as(r: &Resource, object: &mut Value) {
    if let (Some(_), Some(o)) = (r.stored_as, object.as_object_mut()) {
        o.insert("apiVersion".into(), Value::from(r.api_version));
    }
}

/// A stored object's JSON as a value, with its `resourceVersion` set from the revision.
fn parse_stored(key: &str, json: &[u8], rev: Revision) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(json)
        .map_err(|e| ApiError::Internal(format!("stored {key} is not JSON: {e}")))?;
    set_resource_version(&mut v, rev);
    Ok(v)
}

pub fn set_resource_version(v: &mut Value, rev: Revision) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_of_the_first_envelope_are_resealed_bound_to_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::cluster::store::sqlite::SqliteStore::open(
            crate::cluster::store::sqlite::SqliteOptions::in_data_dir(dir.path()),
        )
        .await
        .unwrap();
        let ring = KeyRing::generate();
        let storage = Storage::new(Arc::new(store), Some(ring.clone()));
        let secrets = super::super::resources::by_kind("v1", "Secret").unwrap();
        let key = secrets.key(Some("default"), "db");
        let object = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"}, "data": {"password": "aHVudGVyMg=="}});
        let old = ring.seal_v1(&serde_json::to_vec(&object).unwrap());
        storage
            .store
            .txn(Txn::new().then([Op::put(key.clone(), old)]))
            .await
            .unwrap();
        assert_eq!(storage.reencrypt_secrets(secrets).await.unwrap(), 1);
        let kv = storage.store.get(&key).await.unwrap().expect("still there");
        assert!(ring.is_current(&kv.value), "sealed as today");
        let read = storage.decode(secrets, &kv).unwrap();
        assert_eq!(read["data"], object["data"]);
        // Moved under another Secret's key, the ciphertext no longer opens.
        let other = KeyValue {
            key: secrets.key(Some("default"), "web"),
            ..kv
        };
        assert!(storage.decode(secrets, &other).is_err());
        assert_eq!(
            storage.reencrypt_secrets(secrets).await.unwrap(),
            0,
            "done once"
        );
    }

    fn stored(json: &str, rev: Revision) -> StoredObject {
        StoredObject {
            key: "/registry/pods/default/a".into(),
            json: json.as_bytes().to_vec(),
            mod_revision: rev,
        }
    }

    #[test]
    fn spliced_json_equals_the_decoded_object() {
        for json in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"metadata":"{"}},"spec":{}}"#,
            r#"{"kind":"Pod","spec":{"note":"\"metadata\":{"},"metadata":{}}"#,
            r#"{ "metadata" : { "name" : "a" } }"#,
        ] {
            let object = stored(json, 42);
            let mut out = Vec::new();
            object.write_json(&mut out).unwrap();
            let spliced: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(spliced, object.decode().unwrap(), "{json}");
            assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        }
    }

    #[test]
    fn an_object_without_metadata_is_an_error_not_a_bad_list() {
        let mut out = Vec::new();
        assert!(stored(r#"{"kind":"Pod"}"#, 1).write_json(&mut out).is_err());
        assert!(
            stored(r#"{"metadata":[]}"#, 1)
                .write_json(&mut out)
                .is_err()
        );
    }
}
