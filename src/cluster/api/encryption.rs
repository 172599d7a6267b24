//! Encryption at rest for Secrets: AES-256-GCM with keys kept in a file in the data dir.
//! Every stored value names the key that sealed it, so keys can rotate: new writes use the
//! current key, old values stay readable until `berth server --rotate-encryption-key`
//! re-encrypts them.
//!
//! Each value is bound to its storage key: the key (`/registry/secrets/NS/NAME`) is the
//! AES-GCM associated data, so a ciphertext copied into another Secret's record does not
//! open. Values of the first envelope version (v1, no associated data) are still read, and
//! the server re-encrypts them at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Values sealed before storage keys were bound (no associated data): read, never written.
const PREFIX: &[u8] = b"berth:enc:aes256gcm:v1:";
/// Stored values start with this, then the key id, `:`, the 12-byte nonce and the
/// ciphertext, whose associated data is the storage key.
const PREFIX_V2: &[u8] = b"berth:enc:aes256gcm:v2:";

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("cannot read the encryption key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the encryption key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption key file {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("a stored value is sealed with key {key_id:?}, which the key file does not hold")]
    UnknownKey { key_id: String },
    #[error("a stored value could not be decrypted (wrong key or corrupted data)")]
    Decrypt,
    #[error("a stored value's encryption envelope is malformed")]
    Envelope,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    current: String,
    /// Key id → base64 of 32 bytes.
    keys: BTreeMap<String, String>,
}

/// The keys Secrets are sealed with.
#[derive(Clone)]
pub struct KeyRing {
    current: String,
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn new_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

impl KeyRing {
    /// A ring with one fresh key (for tests and first start).
    pub fn generate() -> KeyRing {
        let mut keys = BTreeMap::new();
        keys.insert("key1".to_string(), new_key());
        KeyRing {
            current: "key1".into(),
            keys,
        }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Loads `path`, creating it with a fresh key (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<KeyRing, EncryptionError> {
        if !path.exists() {
            let ring = KeyRing::generate();
            ring.save(path)?;
            return Ok(ring);
        }
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: path.into(),
            source,
        })?;
        let malformed = |reason: String| EncryptionError::Malformed {
            path: path.into(),
            reason,
        };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        let mut keys = BTreeMap::new();
        for (id, b64) in file.keys {
            let bytes = B64.decode(b64).map_err(|e| malformed(e.to_string()))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| malformed(format!("key {id} is not 32 bytes")))?;
            keys.insert(id, key);
        }
        if !keys.contains_key(&file.current) {
            return Err(malformed(format!(
                "the current key {} is not in the file",
                file.current
            )));
        }
        Ok(KeyRing {
            current: file.current,
            keys,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), EncryptionError> {
        let file = KeyFile {
            current: self.current.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (id.clone(), B64.encode(k)))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("key file serializes");
        super::tls::write_private(path, text.as_bytes()).map_err(|source| EncryptionError::Write {
            path: path.into(),
            source,
        })
    }

    /// Adds a new key and makes it current. Old keys stay for reading.
    pub fn rotate(&mut self) -> String {
        let id = self.add_key();
        self.current = id.clone();
        id
    }

    /// Adds a new key that opens but does not yet seal (the first step of a rotation across
    /// several masters: every master must be able to read what the new key seals before any
    /// master seals with it).
    pub fn add_key(&mut self) -> String {
        let n = self.keys.len() + 1;
        let mut id = format!("key{n}");
        let mut i = n;
        while self.keys.contains_key(&id) {
            i += 1;
            id = format!("key{i}");
        }
        self.keys.insert(id.clone(), new_key());
        id
    }

    /// Seals with `id` from now on; `false` (nothing changed) if the ring has no such key.
    pub fn make_current(&mut self, id: &str) -> bool {
        let known = self.keys.contains_key(id);
        if known {
            self.current = id.to_string();
        }
        known
    }

    /// The ids of every key the ring opens with.
    pub fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Seals `plaintext` stored under `storage_key` (the associated data) with the current key.
    pub fn seal(&self, plaintext: &[u8], storage_key: &str) -> Vec<u8> {
        let key = &self.keys[&self.current];
        let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: storage_key.as_bytes(),
                },
            )
            .expect("AES-GCM encryption does not fail for in-memory data");
        let mut out = Vec::with_capacity(PREFIX_V2.len() + self.current.len() + 13 + ct.len());
        out.extend_from_slice(PREFIX_V2);
        out.extend_from_slice(self.current.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The envelope's version prefix and the rest, if the value is sealed.
    fn envelope(stored: &[u8]) -> Option<(bool, &[u8])> {
        if let Some(rest) = stored.strip_prefix(PREFIX_V2) {
            return Some((true, rest));
        }
        stored.strip_prefix(PREFIX).map(|rest| (false, rest))
    }

    /// Whether a stored value is sealed, and with which key.
    pub fn key_id_of(stored: &[u8]) -> Option<&str> {
        let (_, rest) = Self::envelope(stored)?;
        let colon = rest.iter().position(|&b| b == b':')?;
        std::str::from_utf8(&rest[..colon]).ok()
    }

    /// Whether a stored value is sealed as [`KeyRing::seal`] seals today: the current key,
    /// bound to its storage key. Anything else is re-encrypted at start.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        stored.starts_with(PREFIX_V2) && Self::key_id_of(stored) == Some(self.current.as_str())
    }

    /// Opens a sealed value stored under `storage_key`; values written before encryption
    /// (plain JSON) pass through.
    pub fn open(&self, stored: &[u8], storage_key: &str) -> Result<Vec<u8>, EncryptionError> {
        let Some((bound, rest)) = Self::envelope(stored) else {
            return Ok(stored.to_vec());
        };
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or(EncryptionError::Envelope)?;
        let key_id = std::str::from_utf8(&rest[..colon]).map_err(|_| EncryptionError::Envelope)?;
        let body = &rest[colon + 1..];
        if body.len() < 12 {
            return Err(EncryptionError::Envelope);
        }
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| EncryptionError::UnknownKey {
                key_id: key_id.into(),
            })?;
        let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
        let aad: &[u8] = if bound { storage_key.as_bytes() } else { b"" };
        cipher
            .decrypt(
                Nonce::from_slice(&body[..12]),
                Payload {
                    msg: &body[12..],
                    aad,
                },
            )
            .map_err(|_| EncryptionError::Decrypt)
    }

    /// A v1 envelope (no associated data), as servers before storage-key binding wrote.
    #[cfg(test)]
    pub fn seal_v1(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&self.keys[&self.current]).expect("32-byte key");
        let nonce = [7u8; 12];
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("encrypts");
        [PREFIX, self.current.as_bytes(), b":", &nonce, &ct].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_key_opens_before_it_seals() {
        let mut ring = KeyRing::generate();
        let mut reader = ring.clone();
        let id = ring.add_key();
        assert_eq!(
            ring.current_key_id(),
            "key1",
            "adding a key does not change sealing"
        );
        assert_eq!(ring.ids(), ["key1", "key2"]);
        assert!(!ring.make_current("key9"));
        assert_eq!(ring.current_key_id(), "key1");
        // A master that took the added key reads what the new key seals.
        reader.keys.insert(id.clone(), ring.keys[&id]);
        assert!(ring.make_current(&id));
        let sealed = ring.seal(b"s3cr3t", "/registry/secrets/default/a");
        assert_eq!(KeyRing::key_id_of(&sealed), Some("key2"));
        assert_eq!(
            reader.open(&sealed, "/registry/secrets/default/a").unwrap(),
            b"s3cr3t"
        );
    }

    #[test]
    fn sealed_values_hide_the_plaintext_and_survive_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.json");
        let key = "/registry/secrets/default/db";
        let mut ring = KeyRing::load_or_create(&path).unwrap();
        let sealed = ring.seal(b"hunter2-password", key);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(KeyRing::key_id_of(&sealed), Some("key1"));
        assert!(ring.is_current(&sealed));
        ring.rotate();
        ring.save(&path).unwrap();
        let ring = KeyRing::load_or_create(&path).unwrap();
        assert_eq!(ring.current_key_id(), "key2");
        assert!(
            !ring.is_current(&sealed),
            "an old key's value is re-encrypted"
        );
        assert_eq!(ring.open(&sealed, key).unwrap(), b"hunter2-password");
        assert_eq!(KeyRing::key_id_of(&ring.seal(b"x", key)), Some("key2"));
        assert_eq!(ring.open(b"{\"plain\":1}", key).unwrap(), b"{\"plain\":1}");
        let other = KeyRing::generate();
        assert!(matches!(
            other.open(&sealed, key),
            Err(EncryptionError::Decrypt)
        ));
    }

    #[test]
    fn a_ciphertext_opens_only_under_its_own_storage_key() {
        let ring = KeyRing::generate();
        let sealed = ring.seal(b"{\"data\":1}", "/registry/secrets/default/db");
        assert!(matches!(
            ring.open(&sealed, "/registry/secrets/default/web"),
            Err(EncryptionError::Decrypt)
        ));
        let old = ring.seal_v1(b"{\"data\":2}");
        assert_eq!(
            ring.open(&old, "/registry/secrets/x/y").unwrap(),
            b"{\"data\":2}"
        );
        assert!(
            !ring.is_current(&old),
            "a v1 value is re-encrypted at start"
        );
    }
}
