//! The replicated store: a real etcd cluster through `etcd-client`, every key under a prefix.
//!
//! This backend is a thin translation: etcd already has the semantics [`Store`] describes
//! (global revisions, txns with compares, watches with previous values, compaction). It adds
//! the key prefix, so several berth clusters (or tests) can share one etcd, and maps etcd's
//! errors to [`StoreError`].

use std::collections::VecDeque;

use async_trait::async_trait;
use etcd_client::{
    Client, CompareOp, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};

use super::{
    Check, Event, EventKind, KeyValue, ListOptions, ListResult, Op, OpResult, Revision, Store,
    StoreError, Txn, TxnResult, WatchStream, check_duplicate_keys, prefix_end,
};

/// The most operations etcd takes in one txn by default (its `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// The largest answer `get_many` takes for one txn (etcd's own request limit is 1.5 MiB a
/// value, so 128 values stay well under it).
const GET_MANY_MAX_BYTES: usize = 256 << 20;

/// A [`Store`] on etcd. Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn etcd_err(during: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |source| StoreError::Etcd { during, source }
}

/// etcd's refusal of a transaction for its size, as a message that names the limit and the
/// etcd flag that raises it; `None` for any other error. etcd refuses such a transaction
/// whole: nothing of it is written.
fn too_large(error: &etcd_client::Error, operations: usize, bytes: usize) -> Option<StoreError> {
    let text = error.to_string();
    let message = if text.contains("too many operations in txn request") {
        format!(
            "the transaction has {operations} operations, more than etcd takes in one (its \
             --max-txn-ops, {MAX_TXN_OPS} by default); nothing was written. Start every etcd \
             member with a larger --max-txn-ops (e.g. --max-txn-ops={}) to apply sets this large \
             all-or-nothing",
            (operations + 1).next_power_of_two().max(1024)
        )
    } else if text.contains("request is too large") || text.contains("larger than max") {
        format!(
            "the transaction is {} KiB, more than etcd takes in one request (its \
             --max-request-bytes, 1.5 MiB by default); nothing was written. Start every etcd \
             member with a larger --max-request-bytes to apply sets this large all-or-nothing",
            bytes / 1024
        )
    } else {
        return None;
    };
    Some(StoreError::TxnTooLarge { message })
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (e.g. `http://127.0.0.1:2379`) and keeps every
    /// key under `prefix` (e.g. `/berth`; may be empty).
    pub async fn connect(
        endpoints: &[String],
        prefix: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(etcd_err("connecting"))?;
        Ok(Self {
            client,
            prefix: prefix.into(),
        })
    }

    /// Wraps an existing client.
    pub fn with_client(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// A key to read when only the response header (the revision) matters; etcd refuses
    /// an empty key.
    fn any_key(&self) -> Vec<u8> {
        if self.prefix.is_empty() {
            vec![0]
        } else {
            self.full_key("")
        }
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = kv
            .key()
            .strip_prefix(self.prefix.as_bytes())
            .unwrap_or(kv.key());
        KeyValue {
            key: String::from_utf8_lossy(key).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// Maps etcd's "compacted" and "future revision" statuses to their [`StoreError`]s.
    async fn revision_err(
        &self,
        during: &'static str,
        requested: Revision,
        error: etcd_client::Error,
    ) -> StoreError {
        if let etcd_client::Error::GRpcStatus(status) = &error {
            if status
                .message()
                .contains("required revision has been compacted")
            {
                // etcd does not say where history starts; it is after `requested`.
                return StoreError::Compacted {
                    requested,
                    compacted: requested + 1,
                };
            }
            if status
                .message()
                .contains("required revision is a future revision")
            {
                let current = self.current_revision().await.unwrap_or(requested - 1);
                return StoreError::FutureRevision { requested, current };
            }
        }
        StoreError::Etcd {
            during,
            source: error,
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .client
            .kv_client()
            .get(self.full_key(key), None)
            .await
            .map_err(etcd_err("reading a key"))?;
        Ok(response.kvs().first().map(|kv| self.kv(kv)))
    }

    /// One round trip per [`MAX_TXN_OPS`] keys: their gets in one read-only txn.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let gets = chunk
                .iter()
                .map(|key| TxnOp::get(self.full_key(key), None))
                .collect::<Vec<_>>();
            // 128 values may pass the client's 4 MiB default for one message.
            let response = self
                .client
                .kv_client()
                .max_decoding_message_size(GET_MANY_MAX_BYTES)
                .txn(etcd_client::Txn::new().and_then(gets))
                .await
                .map_err(etcd_err("reading keys"))?;
            for result in response.op_responses() {
                let TxnOpResponse::Get(get) = result else {
                    return Err(StoreError::EtcdProtocol {
                        during: "reading keys",
                        message: "a txn of gets was answered with another operation".into(),
                    });
                };
                out.push(get.kvs().first().map(|kv| self.kv(kv)));
            }
        }
        Ok(out)
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let full_prefix = self.full_key(prefix);
        let mut start = full_prefix.clone();
        if let Some(after) = &options.continue_after {
            let mut next = self.full_key(after);
            next.push(0);
            start = start.max(next);
        }
        // An empty full prefix means every key: etcd spells that as the range ["\0", "\0").
        let end = prefix_end(&full_prefix).unwrap_or_else(|| vec![0]);
        if full_prefix.is_empty() && start.is_empty() {
            start = vec![0];
        }
        let mut get = GetOptions::new()
            .with_range(end)
            .with_limit(options.limit as i64);
        if let Some(revision) = options.at_revision {
            get = get.with_revision(revision);
        }
        let response = match self.client.kv_client().get(start, Some(get)).await {
            Ok(response) => response,
            Err(error) => {
                let requested = options.at_revision.unwrap_or(0);
                return Err(self.revision_err("listing keys", requested, error).await);
            }
        };
        let revision = match options.at_revision {
            Some(revision) => revision,
            None => header_revision(response.header())?,
        };
        Ok(ListResult {
            items: response.kvs().iter().map(|kv| self.kv(kv)).collect(),
            revision,
            more: response.more(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        check_duplicate_keys(&txn.success)?;
        check_duplicate_keys(&txn.failure)?;
        let compares: Vec<_> = txn
            .compares
            .iter()
            .map(|compare| {
                let key = self.full_key(&compare.key);
                match compare.check {
                    Check::ModRevision(rev) => {
                        etcd_client::Compare::mod_revision(key, CompareOp::Equal, rev)
                    }
                    Check::CreateRevision(rev) => {
                        etcd_client::Compare::create_revision(key, CompareOp::Equal, rev)
                    }
                    Check::Exists => etcd_client::Compare::version(key, CompareOp::Greater, 0),
                    Check::Absent => etcd_client::Compare::version(key, CompareOp::Equal, 0),
                }
            })
            .collect();
        let ops = |ops: &[Op]| -> Vec<TxnOp> {
            ops.iter()
                .map(|op| match op {
                    Op::Put { key, value } => TxnOp::put(
                        self.full_key(key),
                        value.clone(),
                        Some(PutOptions::new().with_prev_key()),
                    ),
                    Op::Delete { key } => TxnOp::delete(
                        self.full_key(key),
                        Some(DeleteOptions::new().with_prev_key()),
                    ),
                    Op::Get { key } => TxnOp::get(self.full_key(key), None),
                })
                .collect()
        };
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops(&txn.success))
            .or_else(ops(&txn.failure));
        let operations = txn.success.len().max(txn.failure.len());
        let bytes: usize = txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                other => other.key().len(),
            })
            .sum();
        let response = self.client.kv_client().txn(request).await.map_err(|e| {
            too_large(&e, operations, bytes).unwrap_or_else(|| etcd_err("committing a txn")(e))
        })?;
        let results = response
            .op_responses()
            .into_iter()
            .map(|result| match result {
                TxnOpResponse::Put(put) => OpResult::Put {
                    prev: put.prev_key().map(|kv| self.kv(kv)),
                },
                TxnOpResponse::Delete(delete) => OpResult::Delete {
                    prev: delete.prev_kvs().first().map(|kv| self.kv(kv)),
                },
                TxnOpResponse::Get(get) => OpResult::Get {
                    kv: get.kvs().first().map(|kv| self.kv(kv)),
                },
                TxnOpResponse::Txn(_) => unreachable!("berth never sends nested txns"),
            })
            .collect();
        Ok(TxnResult {
            succeeded: response.succeeded(),
            revision: header_revision(response.header())?,
            results,
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let mut key = self.full_key(prefix);
        let options = WatchOptions::new()
            .with_start_revision(after_revision + 1)
            .with_prev_key();
        let options = if key.is_empty() {
            key = vec![0];
            options.with_all_keys()
        } else {
            options.with_prefix()
        };
        let stream = self
            .client
            .watch_client()
            .watch(key, Some(options))
            .await
            .map_err(etcd_err("starting a watch"))?;
        let state = WatchState {
            store: self.clone(),
            stream,
            pending: VecDeque::new(),
            after: after_revision,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.client.kv_client().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.revision_err("compacting", revision, error).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let response = self
            .client
            .kv_client()
            .get(self.any_key(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err("reading the current revision"))?;
        header_revision(response.header())
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or(StoreError::EtcdProtocol {
            during: "reading a response",
            message: "the response has no header".into(),
        })
}

struct WatchState {
    store: EtcdStore,
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    /// The watch's start, for the `Compacted` error.
    after: Revision,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event, StoreError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    self.done = true;
                    return Some((Err(StoreError::Closed), self));
                }
                Err(source) => {
                    self.done = true;
                    return Some((
                        Err(StoreError::Etcd {
                            during: "watching",
                            source,
                        }),
                        self,
                    ));
                }
            };
            if response.compact_revision() > 0 {
                self.done = true;
                let error = StoreError::Compacted {
                    requested: self.after,
                    compacted: response.compact_revision(),
                };
                return Some((Err(error), self));
            }
            if response.canceled() {
                self.done = true;
                let error = StoreError::EtcdProtocol {
                    during: "watching",
                    message: format!("etcd cancelled the watch: {}", response.cancel_reason()),
                };
                return Some((Err(error), self));
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let kind = match event.event_type() {
                    etcd_client::EventType::Put => EventKind::Put,
                    etcd_client::EventType::Delete => EventKind::Delete,
                };
                self.pending.push_back(Event {
                    kind,
                    kv: self.store.kv(kv),
                    prev: event.prev_kv().map(|kv| self.store.kv(kv)),
                });
            }
        }
    }
}
