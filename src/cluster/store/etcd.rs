//! The replicated store: a real etcd cluster through `etcd-client`, every key under a prefix.
//!
//! This backend is a thin translation: etcd already has the semantics [`Store`] describes
//! (global revisions, txns with compares, watches with previous values, compaction). It adds
//! the key prefix, so several berth clusters (or tests) can share one etcd, and maps etcd's
//! errors to [`StoreError`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Client, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse,
    WatchOptions,
};

pub use super::EtcdConfig;
use super::{
    Check, Event, EventKind, KeyValue, ListOptions, ListResult, Op, OpResult, Revision, Store,
    StoreError, Txn, TxnResult, Unavailable, WatchStream, check_duplicate_keys, prefix_end,
};

pub mod snapshot;

/// The most operations etcd takes in one txn by default (its `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// The largest answer `get_many` takes for one txn (etcd's own request limit is 1.5 MiB a
/// value, so 128 values stay well under it).
const GET_MANY_MAX_BYTES: usize = 256 << 20;

/// How long one request to etcd may take before it fails with a timeout (504 to API
/// clients): etcd itself gives up on a proposal after about 7 s without quorum.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The most any one call of the store may take, retries and fallbacks included: a request
/// waiting for a member to connect (none reachable) ends here too.
const CALL_LIMIT: Duration = Duration::from_secs(12);

/// Bounds `call` by [`CALL_LIMIT`].
async fn bounded<T>(
    during: &'static str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .unwrap_or(Err(StoreError::Timeout { during }))
}

/// How long a write that etcd refused for want of a leader is retried (with back-off) before
/// it fails with 503. A refused write was never proposed, so retrying cannot apply it twice.
const NO_LEADER_RETRY: Duration = Duration::from_secs(3);

/// After a linearizable read failed for want of quorum, reads go straight to the member's
/// own copy (serializable) for this long before trying a linearizable read again.
const DEGRADED_READS: Duration = Duration::from_secs(2);

/// A [`Store`] on etcd. Cheap to clone: clones share one gRPC channel.
#[derive(Clone)]
pub struct EtcdStore {
    /// Requests that need a leader (writes, linearizable reads): etcd refuses them at once
    /// while its member has none, instead of letting them hang.
    client: Client,
    /// Serializable reads from the member's own copy, answered without quorum.
    local: Client,
    prefix: String,
    /// Until when reads skip the linearizable attempt (after a failure for want of quorum).
    degraded_until: Arc<Mutex<Option<Instant>>>,
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
        Self::open(&EtcdConfig {
            endpoints: endpoints.to_vec(),
            prefix: prefix.into(),
            ..EtcdConfig::default()
        })
        .await
    }

    /// Connects as `config` says and checks that the cluster answers (a read with a leader),
    /// so a wrong address or a cluster without quorum fails here with
    /// [`StoreError::Unreachable`], not at the first request.
    pub async fn open(config: &EtcdConfig) -> Result<Self, StoreError> {
        let fail = |reason: String| unreachable(config, reason);
        if config.endpoints.is_empty() {
            return Err(fail("no endpoint given".into()));
        }
        let options = connect_options(config)?.with_timeout(REQUEST_TIMEOUT);
        let connect = |options: ConnectOptions| async move {
            Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(|e| fail(one_line(&e)))
        };
        let client = connect(options.clone().with_require_leader(true)).await?;
        let local = connect(options).await?;
        let store = Self {
            client,
            local,
            prefix: config.prefix.clone(),
            degraded_until: Arc::default(),
        };
        let mut kv = store.client.kv_client();
        let check = kv.get(store.any_key(), Some(GetOptions::new().with_count_only()));
        match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), check).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) if unavailability(&e) == Some(Unavailable::TimedOut) => Err(fail(format!(
                "no member answered within {REQUEST_TIMEOUT:?}; is etcd running there?"
            ))),
            Ok(Err(e)) => Err(fail(one_line(&e))),
            Err(_) => Err(fail(format!(
                "no member answered within {REQUEST_TIMEOUT:?}; is etcd running there?"
            ))),
        }
    }

    /// Wraps an existing client.
    pub fn with_client(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            local: client.clone(),
            client,
            prefix: prefix.into(),
            degraded_until: Arc::default(),
        }
    }

    /// Whether reads should go to the member's own copy now.
    fn degraded(&self) -> bool {
        let until = self.degraded_until.lock().expect("degraded lock");
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Reads go to members' own copies for a while: quorum is lost.
    fn degrade(&self) {
        *self.degraded_until.lock().expect("degraded lock") = Some(Instant::now() + DEGRADED_READS);
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

    /// A range read: linearizable when etcd has quorum, else from the member's own copy
    /// (serializable, possibly stale), so reads keep answering while writes cannot.
    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        if !self.degraded() {
            match self
                .client
                .kv_client()
                .get(key.clone(), Some(options.clone()))
                .await
            {
                Err(e) if unavailability(&e).is_some() => {
                    tracing::warn!(error = %one_line(&e), "etcd has no quorum: reads are served from one member's copy");
                    self.degrade();
                }
                other => return other,
            }
        }
        // Idempotent: retried while a request lands on a member that is gone (the channel
        // balances over every endpoint and learns of a dead one by failing on it).
        let options = options.with_serializable();
        let mut pause = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match self
                .local
                .kv_client()
                .get(key.clone(), Some(options.clone()))
                .await
            {
                Err(e) if unavailability(&e).is_some() && tries < 6 => {
                    tracing::debug!(error = %one_line(&e), "a serializable read failed; trying again");
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    /// Commits `request`, retrying with back-off for a while when etcd refused it for want
    /// of a leader (refused before it was proposed, so it cannot apply twice).
    async fn txn_retrying(
        &self,
        request: etcd_client::Txn,
    ) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match self.client.kv_client().txn(request.clone()).await {
                Err(e) if is_no_leader(&e) && started.elapsed() + pause < NO_LEADER_RETRY => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(800));
                }
                other => return other,
            }
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

/// The calls of [`Store`], each bounded by [`CALL_LIMIT`] in the trait impl below.
impl EtcdStore {
    async fn do_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .range(self.full_key(key), GetOptions::new())
            .await
            .map_err(etcd_err("reading a key"))?;
        Ok(response.kvs().first().map(|kv| self.kv(kv)))
    }

    /// One round trip per [`MAX_TXN_OPS`] keys: their gets in one read-only txn.
    async fn do_get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
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

    async fn do_list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
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
        let response = match self.range(start, get).await {
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

    async fn do_txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
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
        let response = self.txn_retrying(request).await.map_err(|e| {
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

    async fn do_watch(
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

    async fn do_compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.client.kv_client().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.revision_err("compacting", revision, error).await),
        }
    }

    async fn do_current_revision(&self) -> Result<Revision, StoreError> {
        let response = self
            .client
            .kv_client()
            .get(self.any_key(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_err("reading the current revision"))?;
        header_revision(response.header())
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        bounded("reading a key", self.do_get(key)).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        bounded("reading keys", self.do_get_many(keys)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        bounded("listing keys", self.do_list(prefix, options)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        bounded("committing a txn", self.do_txn(txn)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        bounded("starting a watch", self.do_watch(prefix, after_revision)).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        bounded("compacting", self.do_compact(revision)).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        bounded("reading the current revision", self.do_current_revision()).await
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

/// Whether etcd refused a request because its member has no leader (no quorum).
fn is_no_leader(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("no leader"))
}

/// Why etcd could not serve a request for now, if that is why it failed: no quorum or no
/// reachable member ([`Unavailable::NoQuorum`]), or no answer in time
/// ([`Unavailable::TimedOut`]).
pub(crate) fn unavailability(error: &etcd_client::Error) -> Option<Unavailable> {
    // gRPC status codes (tonic is not a dependency of ours).
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("request timed out") || message.contains("Timeout expired") {
                return Some(Unavailable::TimedOut);
            }
            match i32::from(status.code()) {
                UNAVAILABLE => Some(Unavailable::NoQuorum),
                DEADLINE_EXCEEDED => Some(Unavailable::TimedOut),
                _ if message.contains("no leader") || message.contains("leader changed") => {
                    Some(Unavailable::NoQuorum)
                }
                _ => None,
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Some(Unavailable::NoQuorum)
        }
        _ => None,
    }
}

/// An etcd error on one line, for a start-up failure: the gRPC message or the transport
/// error's chain of causes.
fn one_line(error: &etcd_client::Error) -> String {
    if let etcd_client::Error::GRpcStatus(status) = error {
        return format!("{:?}: {}", status.code(), status.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// [`StoreError::Unreachable`] for `config`'s endpoints.
fn unreachable(config: &EtcdConfig, reason: String) -> StoreError {
    StoreError::Unreachable {
        endpoints: config.endpoints.join(","),
        reason,
    }
}

/// What every connection to etcd takes: a connect timeout, keep-alives that find a dead
/// member, and `config`'s TLS. No request timeout: a store's requests add
/// [`REQUEST_TIMEOUT`], a snapshot's stream may take longer.
fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
    Ok(match tls_options(config)? {
        Some(tls) => options.with_tls(tls),
        None => options,
    })
}

/// The client TLS settings of `config`, if any TLS flag is given; the files must exist.
fn tls_options(config: &EtcdConfig) -> Result<Option<etcd_client::TlsOptions>, StoreError> {
    if config.ca_file.is_none() && config.cert_file.is_none() && config.key_file.is_none() {
        return Ok(None);
    }
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            unreachable(
                config,
                format!("cannot read {flag} {}: {e}", path.display()),
            )
        })
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(
            "--etcd-cafile",
            ca,
        )?));
    }
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("--etcd-certfile", cert)?,
                read("--etcd-keyfile", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(unreachable(
                config,
                "--etcd-certfile and --etcd-keyfile go together; give both".into(),
            ));
        }
    }
    Ok(Some(tls))
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
