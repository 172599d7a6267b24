//! The revisioned key-value store that holds all cluster state, modelled on the etcd v3 API.
//!
//! Every write is a [`Txn`]: compares, then the success or the failure ops, applied atomically
//! at one new revision. Revisions are global and strictly increasing; an object's
//! `resourceVersion` is its key's [`KeyValue::mod_revision`]. Reads ([`Store::get`],
//! [`Store::list`]) return the revision they observed, and [`Store::watch`] streams every change
//! after a revision, in order, with the previous value, so a reader can list at revision `R`
//! and then watch from `R` without missing or repeating anything.
//!
//! Two backends implement [`Store`]:
//! - [`sqlite::SqliteStore`], the embedded default: one file, a log table where each row is one
//!   revision of one key (the model of k3s's kine), group commit, `synchronous=FULL`.
//! - `etcd::EtcdStore` (cargo feature `etcd`): a real etcd cluster through `etcd-client`, with
//!   every key under a configurable prefix.
//!
//! Revision semantics follow etcd: a txn that writes gets exactly one new revision shared by
//! all its puts and deletes; a txn that writes nothing (only gets, deletes of absent keys or
//! failed compares without failure ops) leaves the revision unchanged. The first revision of
//! an empty SQLite store is 0; an empty etcd starts at 1. Callers must not assume either.

pub mod sqlite;

#[cfg(feature = "etcd")]
pub mod etcd;

use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// Where the etcd cluster is and how to reach it (`berth server --etcd-*`).
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// Client URLs, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// Every key of this berth cluster lives under it (e.g. `/berth`; may be empty).
    pub prefix: String,
    /// The CA that signed the members' certificates (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key for etcd's `--client-cert-auth` (`--etcd-certfile`,
    /// `--etcd-keyfile`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A store revision. Revision 0 means "before anything was written".
pub type Revision = i64;

/// One key's value at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision at which the key was created (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last change to the key: the object's `resourceVersion`.
    pub mod_revision: Revision,
}

/// What a [`Compare`] checks about one key. All checks are equality; that is what optimistic
/// concurrency needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The key was last modified at exactly this revision (0: the key does not exist).
    ModRevision(Revision),
    /// The key was created at exactly this revision (0: the key does not exist).
    CreateRevision(Revision),
    /// The key exists.
    Exists,
    /// The key does not exist.
    Absent,
}

/// A condition on one key, evaluated at the txn's read point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub check: Check,
}

impl Compare {
    /// The key is unchanged since `revision` (an update that must not overwrite another).
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self {
            key: key.into(),
            check: Check::ModRevision(revision),
        }
    }
    /// The key is the same incarnation, created at `revision`.
    pub fn create_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self {
            key: key.into(),
            check: Check::CreateRevision(revision),
        }
    }
    /// The key exists.
    pub fn exists(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            check: Check::Exists,
        }
    }
    /// The key does not exist (a create that must not overwrite).
    pub fn absent(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            check: Check::Absent,
        }
    }
}

/// One operation of a txn branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Reads a key inside the txn, e.g. to return the current object when a compare failed.
    Get {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
    pub fn get(key: impl Into<String>) -> Self {
        Op::Get { key: key.into() }
    }
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
        }
    }
}

/// A transaction: if every compare holds, apply `success`, else apply `failure`.
///
/// A key may be written at most once per branch (as in etcd).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    pub fn then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }
    pub fn otherwise(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The outcome of one op of the branch that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The key's value before the put, if it existed.
    Put {
        prev: Option<KeyValue>,
    },
    /// The deleted value, or `None` if the key did not exist (nothing was written).
    Delete {
        prev: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

/// The outcome of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (and the success branch ran).
    pub succeeded: bool,
    /// The store revision after the txn: the txn's own revision if it wrote anything.
    pub revision: Revision,
    /// One result per op of the branch that ran, in order.
    pub results: Vec<OpResult>,
}

/// A page of a [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Return keys strictly after this one (the last key of the previous page).
    pub continue_after: Option<String>,
    /// Read at this revision instead of the current one. Later pages of one list must pass
    /// the first page's [`ListResult::revision`] to stay consistent.
    pub at_revision: Option<Revision>,
}

/// Items of a [`Store::list`], in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the items were read at.
    pub revision: Revision,
    /// More keys follow the last item (pass its key as [`ListOptions::continue_after`]).
    pub more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new value; for a delete, the key with an empty value, and
    /// `mod_revision` the revision of the delete.
    pub kv: KeyValue,
    /// The key's value before this change (`None` for a create, or if compaction removed it).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the txn that made this change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Changes in revision order; all events of one txn are adjacent and share a revision.
/// Dropping the stream ends the watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// The store every part of the control plane reads and writes.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// The current values of `keys`, in the same order. A backend may read them in one go
    /// (the scheduler reads the pods it binds this way); by default, one [`Store::get`] each.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Keys starting with `prefix` (`""` for all), in key order, at one revision.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError>;

    /// Applies `txn` atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Every change to keys starting with `prefix` at revisions after `after_revision`, then
    /// every later change as it commits. `after_revision` 0 replays all retained history; to
    /// watch from now, pass the revision of a previous read. Fails with
    /// [`StoreError::Compacted`] (at once, or as a stream item) when the history is gone.
    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
    ) -> Result<WatchStream, StoreError>;

    /// Discards history before `revision`: reads at earlier revisions and watches from
    /// before `revision - 1` then fail with [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// Why a store call failed. A failed compare is not an error: see [`TxnResult::succeeded`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `compacted` is the oldest revision still readable, where the backend tells it (etcd's
    /// reads do not: there it is only known to be after `requested`).
    #[error("revision {requested} has been compacted (history starts at {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },

    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    #[error("invalid txn: key {key:?} is written more than once in one branch")]
    DuplicateKey { key: String },

    #[error("cannot open the SQLite store at {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("SQLite error while {during}")]
    Sqlite {
        during: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("the store's file at {path} is not a berth store (schema version {found:?})")]
    Schema {
        path: std::path::PathBuf,
        found: Option<i64>,
    },

    #[error("the store has shut down")]
    Closed,

    /// The group commit that carried this txn failed; nothing of it was applied.
    #[error("the batch of txns this txn was committed with failed")]
    BatchFailed {
        #[source]
        source: std::sync::Arc<StoreError>,
    },

    #[error("I/O error while {during} ({path})")]
    Io {
        during: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[cfg(feature = "etcd")]
    #[error("etcd error while {during}")]
    Etcd {
        during: &'static str,
        #[source]
        source: etcd_client::Error,
    },

    /// The backend takes no transaction this large (etcd's `--max-txn-ops` or
    /// `--max-request-bytes`); nothing of it was written. The message names the limit and the
    /// flag that raises it.
    #[error("{message}")]
    TxnTooLarge { message: String },

    #[error("etcd {during}: {message}")]
    EtcdProtocol {
        during: &'static str,
        message: String,
    },

    /// The store did not answer within the time a request may take.
    #[error("the store did not answer in time while {during}")]
    Timeout { during: &'static str },

    /// etcd cannot be reached or does not answer at start (a wrong URL, no quorum, TLS).
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
}

/// Why the store cannot serve a request for now (the replicated store only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No quorum (no leader) or no member reachable: 503, retry later.
    NoQuorum,
    /// The store did not answer in time: 504; the write may or may not have been applied.
    TimedOut,
}

impl StoreError {
    /// Whether the error says the store is unavailable for now rather than broken.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            #[cfg(feature = "etcd")]
            StoreError::Etcd { source, .. } => etcd::unavailability(source),
            StoreError::BatchFailed { source } => source.unavailable(),
            StoreError::Timeout { .. } => Some(Unavailable::TimedOut),
            _ => None,
        }
    }
}

/// [`StoreError::Io`] for a failure while `during` on `path`.
pub(crate) fn io_err(
    during: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        during,
        path,
        source,
    }
}

/// Rejects a branch that writes one key twice (etcd does the same).
pub(crate) fn check_duplicate_keys(ops: &[Op]) -> Result<(), StoreError> {
    let mut written = std::collections::HashSet::new();
    for op in ops {
        if matches!(op, Op::Put { .. } | Op::Delete { .. }) && !written.insert(op.key()) {
            return Err(StoreError::DuplicateKey {
                key: op.key().to_owned(),
            });
        }
    }
    Ok(())
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// no such bound exists (empty prefix or all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn a_branch_writing_a_key_twice_is_rejected() {
        let ops = [Op::put("a", "1"), Op::get("a"), Op::delete("a")];
        assert!(
            matches!(check_duplicate_keys(&ops), Err(StoreError::DuplicateKey { key }) if key == "a")
        );
        assert!(check_duplicate_keys(&[Op::put("a", "1"), Op::get("a")]).is_ok());
    }
}
