//! The identity several masters on one etcd share: the cluster CA (certificate and key), the
//! admin and agent tokens and the Secret encryption keys, kept in the store under
//! [`KEY`] sealed with AES-256-GCM under a key derived from the cluster token (the admin
//! token) with PBKDF2-HMAC-SHA256, as k3s keeps its bootstrap data.
//!
//! The first master seals what its data dir holds and writes it with a create-if-absent txn;
//! a master started later with `--token` opens it, writes the files into its own data dir and
//! issues itself a serving certificate from the shared CA, so a kubeconfig of one master
//! works against every master. Whoever holds the admin token already controls the cluster,
//! so the token opening the CA key gives nothing new; the agent join token cannot open it.

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::encryption::KeyRing;
use super::tls::{DataDir, write_private};
use crate::cluster::store::{Compare, Op, Store, StoreError, Txn};

/// The store key of the sealed identity (under the etcd prefix, beside `/registry`).
pub const KEY: &str = "/bootstrap/identity";

/// PBKDF2 rounds: about 0.1 s once per start, a cost for anyone guessing a weak token.
const ROUNDS: u32 = 200_000;

/// Authenticated with the ciphertext: a blob cannot pass for another format version.
const AAD: &[u8] = b"berth-identity-v1";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this etcd prefix already holds a berth cluster: start this master with --token set to \
         the cluster's admin token (DATA_DIR/tokens/admin on the first master)"
    )]
    TokenNeeded,
    #[error(
        "the token does not open the cluster identity kept in etcd (a wrong --token, or another \
         cluster under this --etcd-prefix); pass the first master's admin token"
    )]
    WrongToken,
    #[error("the cluster identity kept in etcd is malformed: {0}")]
    Malformed(String),
    #[error("cannot {during} {path}")]
    File {
        during: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bootstrap(#[from] super::tls::BootstrapError),
    #[error(transparent)]
    Encryption(#[from] super::encryption::EncryptionError),
}

/// What every master of a cluster shares (the plaintext; never logged).
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Shared {
    ca_cert: String,
    ca_key: String,
    admin_token: String,
    agent_token: String,
    /// The text of the encryption key file (`encryption-keys.json`).
    encryption_keys: String,
}

/// The stored form.
#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// PBKDF2-HMAC-SHA256 (RFC 8018) with one 32-byte block.
fn derive_key(token: &str, salt: &[u8], rounds: u32) -> [u8; 32] {
    let prf = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..rounds {
        let mut mac = prf.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

fn seal(shared: &Shared, token: &str) -> Vec<u8> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = derive_key(token, &salt, ROUNDS);
    let cipher = Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
    let plaintext = serde_json::to_vec(shared).expect("the identity serializes");
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: AAD,
            },
        )
        .expect("AES-GCM encrypts any message this size");
    serde_json::to_vec(&Sealed {
        version: 1,
        salt: B64.encode(salt),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(ciphertext),
    })
    .expect("the sealed identity serializes")
}

fn open(bytes: &[u8], token: &str) -> Result<Shared, IdentityError> {
    let malformed = |e: &dyn std::fmt::Display| IdentityError::Malformed(e.to_string());
    let sealed: Sealed = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
    if sealed.version != 1 {
        return Err(IdentityError::Malformed(format!(
            "format version {} (this berth reads 1; upgrade it)",
            sealed.version
        )));
    }
    let salt = B64.decode(&sealed.salt).map_err(|e| malformed(&e))?;
    let nonce = B64.decode(&sealed.nonce).map_err(|e| malformed(&e))?;
    let ciphertext = B64.decode(&sealed.ciphertext).map_err(|e| malformed(&e))?;
    if nonce.len() != 12 {
        return Err(IdentityError::Malformed("the nonce is not 12 bytes".into()));
    }
    let key = derive_key(token, &salt, ROUNDS);
    let cipher = Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
    let plaintext = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: AAD,
            },
        )
        .map_err(|_| IdentityError::WrongToken)?;
    serde_json::from_slice(&plaintext).map_err(|e| malformed(&e))
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::File {
        during: "read",
        path: path.into(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), IdentityError> {
    write_private(path, text.as_bytes()).map_err(|source| IdentityError::File {
        during: "write",
        path: path.into(),
        source,
    })
}

/// The identity the data dir holds.
fn local(dir: &DataDir) -> Result<Shared, IdentityError> {
    Ok(Shared {
        ca_cert: read(&dir.ca_cert())?,
        ca_key: read(&dir.ca_key())?,
        admin_token: read(&dir.admin_token())?.trim().to_string(),
        agent_token: read(&dir.agent_token())?.trim().to_string(),
        encryption_keys: read(&dir.encryption_keys())?,
    })
}

/// What [`share`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This master's identity is now the cluster's (the first master).
    Published,
    /// This master took the cluster's identity from the store.
    Joined,
}

/// Makes the data dir and the store agree on one cluster identity, before the server reads
/// its tokens, certificates and keys from the data dir.
///
/// With an identity in the store, it is opened with `token` (or the data dir's admin token)
/// and written into the data dir; a CA that changed drops the serving certificate, so the
/// server issues a new one from the shared CA. Without one, `create_local` creates the data
/// dir's files (tokens, CA, keys; `token` becomes the admin token) and they are published.
pub async fn share(
    store: &dyn Store,
    dir: &DataDir,
    token: Option<&str>,
    create_local: impl FnOnce(&DataDir) -> Result<(), IdentityError>,
) -> Result<Role, IdentityError> {
    if let Some(kv) = store.get(KEY).await? {
        join(&kv.value, dir, token)?;
        return Ok(Role::Joined);
    }
    if let Some(token) = token
        && !dir.admin_token().exists()
    {
        write(&dir.admin_token(), token)?;
    }
    create_local(dir)?;
    let shared = local(dir)?;
    let sealed = seal(&shared, &shared.admin_token);
    let result = store
        .txn(
            Txn::new()
                .when([Compare::absent(KEY)])
                .then([Op::put(KEY, sealed)])
                .otherwise([Op::get(KEY)]),
        )
        .await?;
    if result.succeeded {
        return Ok(Role::Published);
    }
    // Another master published first: take its identity.
    let Some(crate::cluster::store::OpResult::Get { kv: Some(kv) }) = result.results.first() else {
        return Err(IdentityError::Malformed(
            "published and removed at once".into(),
        ));
    };
    let token = token.map(str::to_string).unwrap_or(shared.admin_token);
    join(&kv.value, dir, Some(&token))?;
    Ok(Role::Joined)
}

/// Seals the data dir's identity again and replaces the stored one (after the encryption
/// keys rotated), so masters started later read the new keys.
pub async fn republish(store: &dyn Store, dir: &DataDir) -> Result<(), IdentityError> {
    let shared = local(dir)?;
    let sealed = seal(&shared, &shared.admin_token);
    store.txn(Txn::new().then([Op::put(KEY, sealed)])).await?;
    Ok(())
}

/// Keeps `storage`'s Secret encryption keys those of the stored identity: a key rotation on
/// one master (`berth server --rotate-encryption-key --etcd-endpoints …`) republishes the
/// identity, and every running master takes the new keys within `interval`, with no restart.
pub async fn follow(
    store: Arc<dyn Store>,
    dir: DataDir,
    storage: super::storage::Storage,
    interval: std::time::Duration,
) {
    let mut seen: Option<Vec<u8>> = None;
    loop {
        tokio::time::sleep(interval).await;
        let kv = match store.get(KEY).await {
            Ok(Some(kv)) => kv,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the cluster identity");
                continue;
            }
        };
        if seen.as_deref() == Some(kv.value.as_slice()) {
            continue;
        }
        let keys = join(&kv.value, &dir, None)
            .and_then(|()| Ok(KeyRing::load_or_create(&dir.encryption_keys())?));
        match keys {
            Ok(keys) => {
                seen = Some(kv.value);
                if storage.key_ids() != Some((keys.ids(), keys.current_key_id().to_string())) {
                    tracing::info!(current = keys.current_key_id(), keys = ?keys.ids(),
                        "took the cluster's Secret encryption keys");
                    storage.replace_keys(keys);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the cluster identity kept in etcd"),
        }
    }
}

/// Opens the stored identity and writes it into the data dir.
fn join(bytes: &[u8], dir: &DataDir, token: Option<&str>) -> Result<(), IdentityError> {
    let local = dir
        .admin_token()
        .exists()
        .then(|| read(&dir.admin_token()))
        .transpose()?;
    let token = match (token, local.as_deref()) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(t)) => t.trim().to_string(),
        (None, None) => return Err(IdentityError::TokenNeeded),
    };
    let shared = open(bytes, &token)?;
    let ca_changed = !dir.ca_cert().exists() || read(&dir.ca_cert())? != shared.ca_cert;
    write(&dir.ca_cert(), &shared.ca_cert)?;
    write(&dir.ca_key(), &shared.ca_key)?;
    write(&dir.admin_token(), &shared.admin_token)?;
    write(&dir.agent_token(), &shared.agent_token)?;
    write(&dir.encryption_keys(), &shared.encryption_keys)?;
    if ca_changed {
        for path in [dir.server_cert(), dir.server_key()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IdentityError::File {
                        during: "remove",
                        path,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vectors() {
        // PBKDF2-HMAC-SHA256, P = "password", S = "salt", dkLen = 32.
        assert_eq!(
            hex::encode(derive_key("password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex::encode(derive_key("password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
    }

    fn sample() -> Shared {
        Shared {
            ca_cert: "CERT".into(),
            ca_key: "KEY".into(),
            admin_token: "berth-admin.0123456789abcdef".into(),
            agent_token: "berth-agent.0123456789abcdef".into(),
            encryption_keys: "{}".into(),
        }
    }

    #[test]
    fn the_admin_token_opens_what_it_sealed_and_nothing_else_does() {
        let shared = sample();
        let sealed = seal(&shared, &shared.admin_token);
        assert!(
            !String::from_utf8_lossy(&sealed).contains("berth-agent."),
            "no plaintext token in the stored form"
        );
        assert!(open(&sealed, &shared.admin_token).unwrap() == shared);
        assert!(matches!(
            open(&sealed, &shared.agent_token),
            Err(IdentityError::WrongToken)
        ));
        let mut tampered: Sealed = serde_json::from_slice(&sealed).unwrap();
        let mut bytes = B64.decode(&tampered.ciphertext).unwrap();
        bytes[0] ^= 1;
        tampered.ciphertext = B64.encode(bytes);
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert!(matches!(
            open(&tampered, &shared.admin_token),
            Err(IdentityError::WrongToken)
        ));
    }
}
