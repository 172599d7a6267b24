//! `berth server`: bootstrap the data dir (certificates, tokens, encryption keys, kubeconfig),
//! open the store, start the controllers, the scheduler and git sync, and serve the API (with
//! git sync's routes mounted in it) over TLS (or plain HTTP on loopback with
//! `--insecure-http`) until SIGINT or SIGTERM, then drain with a bounded grace period.
//!
//! On etcd (`--etcd-endpoints`) several masters serve one cluster: they share one identity
//! kept in etcd (`crate::cluster::api::identity`), and the controllers, the scheduler and git
//! sync run only in the master that holds the Lease (`crate::cluster::controllers::leader`).
//!
//! Every connection is admitted against the caps of
//! [`crate::cluster::api::connections`] (refused at once at a cap), gets a TLS handshake
//! timeout, a request-header timeout and an idle timeout, and the open-file limit is raised
//! to the hard limit at start, so idle connections cannot starve the process of files.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::apply::ssa::Writer;
use crate::cluster::api::allocate::{self, Network};
use crate::cluster::api::connections::{Connection, ConnectionLimits, Refused};
use crate::cluster::api::encryption::{EncryptionError, KeyRing};
use crate::cluster::api::identity::{self, IdentityError};
use crate::cluster::api::inflight::InflightLimits;
use crate::cluster::api::resources::by_kind;
use crate::cluster::api::storage::{Storage, Written};
use crate::cluster::api::tls::{self, BootstrapError, DataDir};
use crate::cluster::api::{ApiConfig, ApiState, SharedState, router_with, status::ApiError};
use crate::cluster::controllers::gitsource::report::DeclaredCommits;
use crate::cluster::controllers::leader::{self, ElectionOptions};
use crate::cluster::store::sqlite::{SqliteOptions, SqliteStore};
use crate::cluster::store::{EtcdConfig, Store, StoreError};

/// How long open requests and watches get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub insecure_http: bool,
    /// Rotate the Secret encryption key, re-encrypt every Secret, and exit.
    pub rotate_encryption_key: bool,
    pub bookmark_interval: Duration,
    /// Node grace period and default toleration of the controllers.
    pub control: crate::cluster::controllers::ControlOptions,
    /// Pod CIDR, Service CIDR and NodePort ranges.
    pub network: Network,
    /// `--git`: the repository the GitSource [`GIT_SHORTCUT`] follows.
    pub git: Option<GitShortcut>,
    /// `--etcd-endpoints` and friends: the replicated store instead of the data dir's SQLite
    /// file, and an elected leader for the controllers.
    pub etcd: Option<EtcdConfig>,
    /// `--token`: the cluster's admin token; a master joining a cluster on etcd opens the
    /// cluster's identity with it (the first master makes it its admin token).
    pub token: Option<String>,
    /// `--leader-elect-*`: the Lease timings (used on etcd).
    pub election: ElectionOptions,
    /// Connection caps, timeouts and inflight limits.
    pub limits: Limits,
    /// `--tls-san`: more names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// `--event-ttl`: Events are deleted this long after they last happened.
    pub event_ttl: Duration,
}

/// The flags that bound what clients may hold open; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `--max-connections` (default: from the open-file limit, at most 20 000).
    pub max_connections: Option<usize>,
    /// `--max-connections-per-address` (default: 1 000, at most half the total).
    pub max_connections_per_address: Option<usize>,
    /// `--tls-handshake-timeout-seconds` (default 10).
    pub handshake_timeout: Option<Duration>,
    /// `--idle-connection-timeout-seconds` (default 90).
    pub idle_timeout: Option<Duration>,
    /// `--max-requests-inflight`, `--max-mutating-requests-inflight`.
    pub inflight: InflightLimits,
    /// `--max-watches-per-identity` (default 2 000).
    pub max_watches_per_identity: Option<usize>,
}

impl Limits {
    /// The connection limits with the open-file limit `files` in force.
    pub fn connections(&self, files: u64) -> ConnectionLimits {
        let auto = usize::try_from(files)
            .unwrap_or(usize::MAX)
            .saturating_sub(512)
            .clamp(64, 20_000);
        let mut limits = ConnectionLimits::with_total(self.max_connections.unwrap_or(auto));
        limits.max_per_address = self
            .max_connections_per_address
            .unwrap_or(1_000.min(limits.max_total / 2))
            .clamp(1, limits.max_total);
        if let Some(t) = self.handshake_timeout {
            limits.handshake_timeout = t;
        }
        if let Some(t) = self.idle_timeout {
            limits.idle_timeout = t;
        }
        limits
    }
}

/// Raises the soft open-file limit to the hard one (at most 2^20); the limit now in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let want = hard.min(1 << 20);
            if soft >= want {
                return soft;
            }
            match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                Ok(()) => want,
                Err(e) => {
                    tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                    soft
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            1024
        }
    }
}

/// `berth server --git URL_OR_PATH [--git-ref REF] [--git-path DIR]`.
#[derive(Debug, Clone)]
pub struct GitShortcut {
    /// A URL, or an absolute local path.
    pub url: String,
    pub git_ref: Option<String>,
    pub path: Option<String>,
}

/// `(namespace, name)` of the GitSource that `--git` creates or updates.
pub const GIT_SHORTCUT: (&str, &str) = ("default", "default");

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--insecure-http is only allowed on a loopback address, not {0}")]
    InsecureNotLoopback(SocketAddr),
    #[error("{0}")]
    Network(String),
    #[error("cannot create the data dir {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot prepare the cluster's built-in objects")]
    Api(#[from] ApiError),
    #[error(
        "--tls-san {0:?}: not a host name or an IP address (e.g. master.example.com, 192.0.2.10)"
    )]
    TlsSan(String),
    #[error("--git {path}: {reason}")]
    GitRepository { path: String, reason: String },
    #[error("--etcd-endpoints: this berth was built without etcd support (cargo feature `etcd`)")]
    NoEtcd,
    #[error("{0}")]
    Election(String),
    #[error("key rotation: {0}")]
    Rotation(String),
    #[error("cannot share the cluster identity through etcd")]
    Identity(#[from] IdentityError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    /// Configuration errors exit 2 with one line; everything else is a runtime failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ServerError::InsecureNotLoopback(_)
                | ServerError::Network(_)
                | ServerError::TlsSan(_)
                | ServerError::GitRepository { .. }
                | ServerError::NoEtcd
                | ServerError::Election(_)
        )
    }
}

/// Checks the options before anything touches the disk or the network.
pub fn check(options: &ServerOptions) -> Result<(), ServerError> {
    if options.insecure_http && !options.listen.ip().is_loopback() {
        return Err(ServerError::InsecureNotLoopback(options.listen));
    }
    options.network.check().map_err(ServerError::Network)?;
    if options.etcd.is_some() {
        if !cfg!(feature = "etcd") {
            return Err(ServerError::NoEtcd);
        }
        options.election.check().map_err(ServerError::Election)?;
    }
    if let Some(bad) = options.tls_sans.iter().find(|n| !tls::valid_san(n)) {
        return Err(ServerError::TlsSan(bad.clone()));
    }
    if let Some(git) = &options.git
        && let Some(path) = crate::cluster::controllers::gitsource::fetch::local_path(&git.url)
        && let Err(e) = git2::Repository::open(&path)
    {
        return Err(ServerError::GitRepository {
            path: path.display().to_string(),
            reason: format!(
                "not a git repository ({}); give a repository's path or URL",
                e.message()
            ),
        });
    }
    Ok(())
}

/// The store the options name: etcd, or the SQLite file in the data dir.
async fn open_store(options: &ServerOptions) -> Result<Arc<dyn Store>, ServerError> {
    match &options.etcd {
        None => Ok(Arc::new(
            SqliteStore::open(SqliteOptions::in_data_dir(&options.data_dir)).await?,
        )),
        #[cfg(feature = "etcd")]
        Some(config) => Ok(Arc::new(
            crate::cluster::store::etcd::EtcdStore::open(config).await?,
        )),
        #[cfg(not(feature = "etcd"))]
        Some(_) => Err(ServerError::NoEtcd),
    }
}

/// Creates the namespaces every cluster has, if missing.
async fn builtin_namespaces(storage: &Storage) -> Result<(), ServerError> {
    let r = by_kind("v1", "Namespace").expect("namespaces are served");
    let time = crate::cluster::api::write_now();
    let writer = Writer {
        manager: "berth-server",
        api_version: "v1",
        time: &time,
        subresource: None,
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if storage.get(r, None, name).await?.is_some() {
            continue;
        }
        let object = crate::cluster::api::prepare_builtin(
            r,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            &writer,
        )?;
        if let Written::CompareFailed = storage.create(r, None, name, &object).await? {
            tracing::debug!(name, "namespace created concurrently");
        }
    }
    Ok(())
}

/// The address pods reach the API server at: the listen address, or when that is
/// unspecified, the address of the interface the default route leaves by (no packet is sent).
fn advertised_ip(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The built-in `kubernetes` Service in `default` (the first address of the service range,
/// port 443) and, with `one_master`, its Endpoints: the API server's address, rewritten when
/// it changed. Several masters keep the Endpoints with leases instead
/// (`crate::cluster::controllers::apiservers`).
async fn kubernetes_service(
    state: &SharedState,
    api: SocketAddr,
    one_master: bool,
) -> Result<(), ServerError> {
    let time = crate::cluster::api::write_now();
    let writer = Writer {
        manager: "berth-server",
        api_version: "v1",
        time: &time,
        subresource: None,
    };
    let services = by_kind("v1", "Service").expect("services are served");
    if state
        .storage
        .get(services, Some("default"), "kubernetes")
        .await?
        .is_none()
    {
        let ip = state.config.network.kubernetes_service_ip();
        let mut service = crate::cluster::api::prepare_builtin(
            services,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": ip.to_string(), "sessionAffinity": "None",
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.port()}]}}),
            &writer,
        )?;
        let _held = allocate::reserve(state, services, None, &mut service, false).await?;
        if let Written::CompareFailed = state
            .storage
            .create(services, Some("default"), "kubernetes", &service)
            .await?
        {
            tracing::debug!("the kubernetes Service was created concurrently");
        }
    }
    if !one_master {
        return Ok(());
    }
    let endpoints = by_kind("v1", "Endpoints").expect("endpoints are served");
    let subsets = crate::cluster::controllers::apiservers::subsets(&[api]);
    match state
        .storage
        .get(endpoints, Some("default"), "kubernetes")
        .await?
    {
        Some((live, _)) if live.get("subsets") == Some(&subsets) => {}
        Some((live, rev)) => {
            let mut new = live.clone();
            new["subsets"] = subsets;
            state
                .storage
                .update(endpoints, Some("default"), "kubernetes", &new, rev)
                .await?;
        }
        None => {
            let object = crate::cluster::api::prepare_builtin(
                endpoints,
                json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": subsets}),
                &writer,
            )?;
            state
                .storage
                .create(endpoints, Some("default"), "kubernetes", &object)
                .await?;
        }
    }
    Ok(())
}

/// Runs the server until `shutdown` resolves. Prints the kubeconfig path and the URL.
pub async fn run(
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    if options.rotate_encryption_key {
        check(&options)?;
        return rotate_encryption_key(&options).await;
    }
    let started = start(options).await?;
    println!("kubeconfig: {}", started.kubeconfig.display());
    println!("listening on {}", started.url);
    started.serve(shutdown).await;
    Ok(())
}

/// Rotates the Secret encryption key and re-encrypts every Secret with it.
async fn rotate_encryption_key(options: &ServerOptions) -> Result<(), ServerError> {
    std::fs::create_dir_all(&options.data_dir).map_err(|source| ServerError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let dir = DataDir(options.data_dir.clone());
    let store = open_store(options).await?;
    if options.etcd.is_some() {
        // Rotate the cluster's keys, not a stale copy of them.
        share_identity(&*store, &dir, options).await?;
    }
    let mut keys = KeyRing::load_or_create(&dir.encryption_keys())?;
    let id = if options.etcd.is_some() {
        // Every running master must open what the new key seals before any seals with it:
        // publish it, wait until each master's Lease names it, then make it current.
        let id = keys.add_key();
        keys.save(&dir.encryption_keys())?;
        identity::republish(&*store, &dir).await?;
        masters_hold(&*store, &format!("the new key {id}"), |ids, _| {
            ids.split(',').any(|k| k == id)
        })
        .await?;
        keys.make_current(&id);
        keys.save(&dir.encryption_keys())?;
        identity::republish(&*store, &dir).await?;
        masters_hold(
            &*store,
            &format!("{id} as the sealing key"),
            |_, current| current == id,
        )
        .await?;
        id
    } else {
        let id = keys.rotate();
        keys.save(&dir.encryption_keys())?;
        id
    };
    let storage = Storage::new(store, Some(keys));
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let n = storage.reencrypt_secrets(secrets).await?;
    println!("rotated the encryption key to {id}; re-encrypted {n} secrets");
    Ok(())
}

/// Waits until the Lease of every running master (renewed within its duration) says its keys
/// `held(ids, current)`, for at most a minute.
async fn masters_hold(
    store: &dyn Store,
    what: &str,
    held: impl Fn(&str, &str) -> bool,
) -> Result<(), ServerError> {
    use crate::cluster::controllers::apiservers::{
        CURRENT_KEY_ANNOTATION, IDENTITY_LABEL, KEYS_ANNOTATION,
    };
    let leases = by_kind("coordination.k8s.io/v1", "Lease").expect("leases are served");
    let prefix = leases.prefix(Some("kube-system"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = store
            .list(&prefix, crate::cluster::store::ListOptions::default())
            .await
            .map_err(|e| ServerError::Rotation(e.to_string()))?;
        let now = chrono::Utc::now();
        let mut lagging = Vec::new();
        for kv in &listed.items {
            let Ok(lease) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                continue;
            };
            let meta = &lease["metadata"];
            if meta["labels"][IDENTITY_LABEL].is_null() {
                continue;
            }
            let live = lease["spec"]["renewTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| {
                    let duration = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
                    now.signed_duration_since(t).num_seconds() <= duration
                });
            let annotation = |k: &str| meta["annotations"][k].as_str().unwrap_or("").to_string();
            if live
                && !held(
                    &annotation(KEYS_ANNOTATION),
                    &annotation(CURRENT_KEY_ANNOTATION),
                )
            {
                lagging.push(annotation(
                    crate::cluster::controllers::apiservers::ADDRESS_ANNOTATION,
                ));
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ServerError::Rotation(format!(
                "the masters at {} did not take {what} within 60 s (the key is published; \
                 run the rotation again once they are up, or restart them)",
                lagging.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A server that has bootstrapped its data dir, opened the store, bound its port and started
/// its controllers, but does not answer requests until [`StartedServer::serve`]. `berth up`
/// starts its in-process agent in between, with the URL and the join token.
pub struct StartedServer {
    /// The API server's URL, as the kubeconfig names it.
    pub url: String,
    /// Where the admin kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// The admin and agent join tokens.
    pub tokens: tls::Tokens,
    /// The CA certificate clients trust (absent with `--insecure-http`).
    pub ca_cert: Option<PathBuf>,
    listener: TcpListener,
    state: SharedState,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    controllers: Controllers,
    /// Several masters: this one's place in the `kubernetes` Endpoints.
    masters: Option<InEndpoints>,
    /// What git sync applied, for the drift route (kept across leaders' terms).
    declared: DeclaredCommits,
    /// `--event-ttl`: how long Events are kept.
    event_ttl: Duration,
}

/// The controllers, the scheduler and git sync of one master; dropping it stops them.
struct Running {
    _control_plane: crate::cluster::controllers::ControlPlane,
    _scheduler: crate::cluster::scheduler::RunningScheduler,
    _git_sync: crate::cluster::controllers::gitsource::GitSync,
}

/// Whether this master runs the controllers always (one master) or while it leads.
enum Controllers {
    Always(Running),
    Elected {
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    },
}

/// Starts the controllers, the scheduler and git sync.
fn run_controllers(
    state: &SharedState,
    control: crate::cluster::controllers::ControlOptions,
    data_dir: &std::path::Path,
    declared: &DeclaredCommits,
) -> Running {
    let control_plane = crate::cluster::controllers::start(state.clone(), control);
    let scheduler = crate::cluster::scheduler::start(
        state.clone(),
        control_plane.caches.pods.clone(),
        control_plane.caches.nodes.clone(),
    );
    let git_sync = crate::cluster::controllers::gitsource::start_with(
        crate::cluster::controllers::client::LocalApi::new(
            state.clone(),
            crate::cluster::controllers::gitsource::FIELD_MANAGER,
        ),
        control_plane.caches.clone(),
        data_dir.join("git"),
        declared.clone(),
    );
    Running {
        _control_plane: control_plane,
        _scheduler: scheduler,
        _git_sync: git_sync,
    }
}

/// Runs the election and the controllers while this master leads, until `stop`.
fn elect(
    state: &SharedState,
    options: &ServerOptions,
    declared: &DeclaredCommits,
    identity: String,
) -> Controllers {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (leading, mut leading_rx) = tokio::sync::watch::channel(false);
    tracing::info!(%identity, "taking part in the controllers' leader election");
    let elector = tokio::spawn(leader::run(
        crate::cluster::controllers::client::LocalApi::unfenced(state.clone(), "leader-election"),
        identity,
        options.election,
        leading,
        stop_rx,
    ));
    let (state, control, data_dir, declared) = (
        state.clone(),
        options.control,
        options.data_dir.clone(),
        declared.clone(),
    );
    let task = tokio::spawn(async move {
        let mut running: Option<Running> = None;
        while leading_rx.changed().await.is_ok() {
            let lead = *leading_rx.borrow_and_update();
            if lead && running.is_none() {
                tracing::info!("leading: starting the controllers, the scheduler and git sync");
                running = Some(run_controllers(&state, control, &data_dir, &declared));
            } else if !lead {
                running = None;
            }
        }
        drop(running);
        let _ = elector.await;
    });
    Controllers::Elected { stop, task }
}

/// A master's part among several (on etcd): its place in the `default/kubernetes` Endpoints,
/// kept until its sender says stop, and its copy of the cluster's Secret encryption keys.
struct InEndpoints {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    keys: tokio::task::JoinHandle<()>,
}

fn join_masters(
    state: &SharedState,
    address: SocketAddr,
    identity: &str,
    store: Arc<dyn Store>,
    dir: DataDir,
) -> InEndpoints {
    use crate::cluster::controllers::apiservers;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(apiservers::run(
        crate::cluster::controllers::client::LocalApi::unfenced(state.clone(), "berth-server"),
        address,
        identity.to_string(),
        apiservers::ApiServerLeases::default(),
        stop_rx,
    ));
    let keys = tokio::spawn(identity::follow(
        store,
        dir,
        state.storage.clone(),
        Duration::from_secs(1),
    ));
    InEndpoints { stop, task, keys }
}

/// The data dir and the store agree on one identity (several masters on etcd).
async fn share_identity(
    store: &dyn Store,
    dir: &DataDir,
    options: &ServerOptions,
) -> Result<(), ServerError> {
    let listen = options.listen;
    let role = identity::share(store, dir, options.token.as_deref(), |dir| {
        tls::tokens(dir)?;
        tls::certificates(dir, &tls::serving_names(listen.ip(), &options.tls_sans))?;
        KeyRing::load_or_create(&dir.encryption_keys())?;
        Ok(())
    })
    .await?;
    match role {
        identity::Role::Published => {
            tracing::info!("this master's CA, tokens and keys are now the cluster's (kept in etcd)")
        }
        identity::Role::Joined => {
            tracing::info!("joined the cluster: its CA, tokens and keys are read from etcd")
        }
    }
    Ok(())
}

/// Bootstraps and binds the server without serving yet.
pub async fn start(options: ServerOptions) -> Result<StartedServer, ServerError> {
    check(&options)?;
    std::fs::create_dir_all(&options.data_dir).map_err(|source| ServerError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let dir = DataDir(options.data_dir.clone());
    let store = open_store(&options).await?;
    if options.etcd.is_some() {
        share_identity(&*store, &dir, &options).await?;
    }
    let tokens = tls::tokens(&dir)?;
    let keys = KeyRing::load_or_create(&dir.encryption_keys())?;
    let storage = Storage::new(store.clone(), Some(keys));
    // Secrets sealed by an older key or envelope (not bound to their storage key) are sealed
    // again as today, so a ciphertext never opens under another Secret's key.
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let resealed = storage.reencrypt_secrets(secrets).await?;
    if resealed > 0 {
        tracing::info!(
            secrets = resealed,
            "re-encrypted Secrets bound to their storage keys"
        );
    }
    builtin_namespaces(&storage).await?;

    if !options.insecure_http {
        let names = tls::serving_names(options.listen.ip(), &options.tls_sans);
        if tls::certificates(&dir, &names)? {
            tracing::info!(names = ?names, "issued the serving certificate");
        }
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if local.is_ipv6() {
        format!("[{}]", local.ip())
    } else {
        local.ip().to_string()
    };
    let scheme = if options.insecure_http {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{host}:{}", local.port());
    let kubeconfig = tls::write_kubeconfig(&dir, &url, &tokens, !options.insecure_http)?;

    let files = raise_file_limit();
    let mut config = ApiConfig::new(tokens.clone());
    config.bookmark_interval = options.bookmark_interval;
    config.network = options.network.clone();
    config.connections = options.limits.connections(files);
    config.inflight = options.limits.inflight;
    if let Some(n) = options.limits.max_watches_per_identity {
        config.max_watches_per_identity = n;
    }
    tracing::info!(
        open_files = files,
        max_connections = config.connections.max_total,
        per_address = config.connections.max_per_address,
        "connection limits"
    );
    let state = ApiState::new(storage, config);
    // The CRDs already stored are served from the first request on.
    if let Err(e) = crate::cluster::api::crds::sync(&state).await {
        tracing::warn!(error = %e, "cannot read the stored CustomResourceDefinitions; they are served once the store answers");
    }
    let advertised = SocketAddr::new(advertised_ip(local.ip()), local.port());
    kubernetes_service(&state, advertised, options.etcd.is_none()).await?;
    let tls_config = if options.insecure_http {
        None
    } else {
        Some(tls::server_config(&dir)?)
    };
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), "berth server is serving");
    let declared = DeclaredCommits::default();
    let identity = leader::identity();
    let masters = options
        .etcd
        .is_some()
        .then(|| join_masters(&state, advertised, &identity, store, dir.clone()));
    let controllers = if options.etcd.is_some() {
        elect(&state, &options, &declared, identity)
    } else {
        Controllers::Always(run_controllers(
            &state,
            options.control,
            &options.data_dir,
            &declared,
        ))
    };
    if let Some(git) = &options.git {
        let api = crate::cluster::controllers::client::LocalApi::unfenced(
            state.clone(),
            crate::cluster::controllers::gitsource::FIELD_MANAGER,
        );
        git_shortcut(&api, git).await;
    }
    Ok(StartedServer {
        url,
        kubeconfig,
        tokens,
        ca_cert: (!options.insecure_http).then(|| dir.ca_cert()),
        listener,
        state,
        tls_config,
        controllers,
        masters,
        declared,
        event_ttl: options.event_ttl,
    })
}

impl StartedServer {
    /// Answers requests until `shutdown` resolves, then drains and stops git sync, the
    /// scheduler and the controllers.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let StartedServer {
            listener,
            state,
            tls_config,
            controllers,
            masters,
            declared,
            event_ttl,
            ..
        } = self;
        let routes = crate::cluster::controllers::gitsource::report::routes(declared);
        let app = router_with(state.clone(), routes);
        let expiry = tokio::spawn(crate::cluster::api::event_limits::expire(
            state.clone(),
            event_ttl,
        ));
        let crds = tokio::spawn(crate::cluster::api::crds::follow(state.clone()));
        serve(listener, app, state, tls_config, shutdown).await;
        expiry.abort();
        crds.abort();
        if let Some(InEndpoints { stop, task, keys }) = masters {
            keys.abort();
            // Out of the kubernetes Endpoints, so agents move on to another master.
            stop.send_replace(true);
            if tokio::time::timeout(GRACE, task).await.is_err() {
                tracing::warn!(
                    "leaving the kubernetes Endpoints did not end within the grace period"
                );
            }
        }
        match controllers {
            Controllers::Always(running) => drop(running),
            Controllers::Elected { stop, task } => {
                // Stops the controllers, then gives the Lease up for the next master.
                stop.send_replace(true);
                if tokio::time::timeout(GRACE, task).await.is_err() {
                    tracing::warn!("the leader election did not end within the grace period");
                }
            }
        }
    }
}

/// Creates or updates the GitSource of `--git`; a failure is logged, the server still serves.
async fn git_shortcut(api: &crate::cluster::controllers::client::LocalApi, git: &GitShortcut) {
    use crate::cluster::controllers::client::{path, resource};
    let (namespace, name) = GIT_SHORTCUT;
    let sources = resource("berth.dev/v1", "GitSource");
    let spec = json!({"url": git.url, "ref": git.git_ref, "path": git.path});
    let result = match api
        .merge_patch(
            &path(sources, Some(namespace), Some(name), None),
            &json!({"spec": spec}),
        )
        .await
    {
        Err(e) if e.is_not_found() => {
            let object = json!({"apiVersion": "berth.dev/v1", "kind": "GitSource",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec});
            api.create(&path(sources, Some(namespace), None, None), &object)
                .await
                .map(|_| ())
        }
        other => other.map(|_| ()),
    };
    match result {
        Ok(()) => tracing::info!(
            source = %format!("{namespace}/{name}"),
            url = %crate::cluster::controllers::gitsource::fetch::redact_url(&git.url),
            "--git: following the repository"
        ),
        Err(e) => tracing::error!(error = %e, "--git: cannot create the GitSource"),
    }
}

async fn serve(
    listener: TcpListener,
    app: axum::Router,
    state: SharedState,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
    let limits = Arc::new(state.connections.limits.clone());
    let mut refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    state.inflight.overload.mark();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = match state.connections.admit(peer.ip()) {
            Ok(c) => c,
            Err(why) => {
                // Closed at once: the file goes back before the next accept.
                drop(tcp);
                state.inflight.overload.mark();
                refusals.refused(peer, why);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let closing = state.closing.subscribe();
        tokio::spawn(async move {
            let result = match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
                    let stream = tokio::select! {
                        done = handshake => done,
                        () = connection.evicted() => return,
                    };
                    match stream {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, app, connection, &limits, closing).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    // Plain HTTP: the first bytes must come within the handshake timeout.
                    let first = tokio::time::timeout(limits.handshake_timeout, tcp.readable());
                    let arrived = tokio::select! {
                        done = first => done.is_ok(),
                        () = connection.evicted() => false,
                    };
                    if !arrived {
                        tracing::debug!(%peer, "no request before the handshake timeout");
                        return;
                    }
                    serve_connection(tcp, app, connection, &limits, closing).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining requests and closing watches");
    state.ready.store(false, Ordering::Relaxed);
    state.closing.send_replace(true);
    drop(listener);
    if tokio::time::timeout(GRACE, state.connections.drained())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the grace period");
    }
}

/// Serves HTTP/1 or HTTP/2 on one admitted connection until the client closes it, it is
/// idle for the idle timeout, or the server drains. Each request carries the
/// [`Connection`] (authentication promotes it) and counts as open until its response body
/// is done.
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    connection: Arc<Connection>,
    limits: &ConnectionLimits,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Small write buffers: a client that does not read holds at most this much in hyper (and
    // rustls' own 64 KiB), besides its watch buffer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(64 * 1024);
    let handle = connection.clone();
    let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let open = handle.request_started();
        request.extensions_mut().insert(handle.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _open = &open;
                    frame
                }))
            }))
        }
    });
    let served =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(served);
    let mut ending = false;
    loop {
        tokio::select! {
            result = served.as_mut() => return result,
            // Only a connection without a request is evicted: nothing to finish.
            () = connection.evicted() => return Ok(()),
            // A watcher that does not read: drop what is buffered for it.
            () = connection.closed_by_server() => return Ok(()),
            () = connection.idle_for(limits.idle_timeout), if !ending => {
                ending = true;
                served.as_mut().graceful_shutdown();
            }
            () = until_closing(&mut closing), if !ending => {
                ending = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once the server drains.
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let closed = *closing.borrow_and_update();
        if closed {
            return;
        }
        if closing.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Logs refused connections at most every 10 s, with how many since the last line: a flood
/// must not flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr, why: Refused) {
        self.since += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        tracing::warn!(
            %peer,
            cap = why.as_str(),
            refused = self.since,
            "connections refused at a connection cap (see --max-connections, --max-connections-per-address)"
        );
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
