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

/// A page of decoded objects.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: Revision,
    /// The last store key read, to continue from, when more follow.
    pub continue_after: Option<String>,
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

    pub fn encode(&self, r: &Resource, object: &Value) -> Result<Vec<u8>, ApiError> {
        let mut copy = object.clone();
        if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let json = serde_json::to_vec(&copy).map_err(|e| ApiError::Internal(e.to_string()))?;
        match (&self.keys, sealed(r)) {
            (Some(keys), true) => Ok(keys.read().expect("key ring lock").seal(&json)),
            _ => Ok(json),
        }
    }

    pub fn decode(&self, r: &Resource, kv: &KeyValue) -> Result<Value, ApiError> {
        let bytes = match (&self.keys, sealed(r)) {
            (Some(keys), true) => keys
                .read()
                .expect("key ring lock")
                .open(&kv.value)
                .map_err(|e| ApiError::Internal(format!("{} {}: {e}", r.plural, kv.key)))?,
            _ => kv.value.clone(),
        };
        let mut v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Internal(format!("stored {} is not JSON: {e}", kv.key)))?;
        set_resource_version(&mut v, kv.mod_revision);
        Ok(v)
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

    /// One page of up to `limit` keys (0: all) from the store, decoded.
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
            .iter()
            .map(|kv| self.decode(r, kv))
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
        let value = self.encode(r, object)?;
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

    /// Re-seals every Secret with the current key. Returns how many were rewritten.
    pub async fn reencrypt_secrets(&self, r: &Resource) -> Result<usize, ApiError> {
        let Some(keys) = &self.keys else {
            return Ok(0);
        };
        let current = keys
            .read()
            .expect("key ring lock")
            .current_key_id()
            .to_string();
        let listed = self
            .store
            .list(&r.prefix(None), ListOptions::default())
            .await?;
        let mut rewritten = 0;
        for kv in listed.items {
            if KeyRing::key_id_of(&kv.value) == Some(current.as_str()) {
                continue;
            }
            let object = self.decode(r, &kv)?;
            let value = self.encode(r, &object)?;
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

pub fn set_resource_version(v: &mut Value, rev: Revision) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}
