//! `berth server`: bootstrap the data dir (certificates, tokens, encryption keys, kubeconfig),
//! open the store, start the controllers, the scheduler and git sync, and serve the API (with
//! git sync's routes mounted in it) over TLS (or plain HTTP on loopback with
//! `--insecure-http`) until SIGINT or SIGTERM, then drain with a bounded grace period.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;

use crate::apply::ssa::Writer;
use crate::cluster::api::allocate::{self, Network};
use crate::cluster::api::encryption::{EncryptionError, KeyRing};
use crate::cluster::api::resources::by_kind;
use crate::cluster::api::storage::{Storage, Written};
use crate::cluster::api::tls::{self, BootstrapError, DataDir};
use crate::cluster::api::{ApiConfig, ApiState, SharedState, router_with, status::ApiError};
use crate::cluster::store::StoreError;
use crate::cluster::store::sqlite::{SqliteOptions, SqliteStore};

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
    #[error("--git {path}: {reason}")]
    GitRepository { path: String, reason: String },
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
                | ServerError::GitRepository { .. }
        )
    }
}

/// Checks the options before anything touches the disk or the network.
pub fn check(options: &ServerOptions) -> Result<(), ServerError> {
    if options.insecure_http && !options.listen.ip().is_loopback() {
        return Err(ServerError::InsecureNotLoopback(options.listen));
    }
    options.network.check().map_err(ServerError::Network)?;
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
/// port 443) and its Endpoints: the API server's address, rewritten when it changed.
async fn kubernetes_service(state: &SharedState, api: SocketAddr) -> Result<(), ServerError> {
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
        let _held = allocate::reserve(state, services, None, &mut service).await?;
        if let Written::CompareFailed = state
            .storage
            .create(services, Some("default"), "kubernetes", &service)
            .await?
        {
            tracing::debug!("the kubernetes Service was created concurrently");
        }
    }
    let endpoints = by_kind("v1", "Endpoints").expect("endpoints are served");
    let subsets = json!([{
        "addresses": [{"ip": api.ip().to_string()}],
        "ports": [{"name": "https", "port": api.port(), "protocol": "TCP"}],
    }]);
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
    let mut keys = KeyRing::load_or_create(&dir.encryption_keys())?;
    let store = SqliteStore::open(SqliteOptions::in_data_dir(&options.data_dir)).await?;
    let id = keys.rotate();
    keys.save(&dir.encryption_keys())?;
    let storage = Storage::new(Arc::new(store), Some(keys));
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let n = storage.reencrypt_secrets(secrets).await?;
    println!("rotated the encryption key to {id}; re-encrypted {n} secrets");
    Ok(())
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
    control_plane: crate::cluster::controllers::ControlPlane,
    scheduler: crate::cluster::scheduler::RunningScheduler,
    git_sync: crate::cluster::controllers::gitsource::GitSync,
}

/// Bootstraps and binds the server without serving yet.
pub async fn start(options: ServerOptions) -> Result<StartedServer, ServerError> {
    check(&options)?;
    std::fs::create_dir_all(&options.data_dir).map_err(|source| ServerError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let dir = DataDir(options.data_dir.clone());
    let tokens = tls::tokens(&dir)?;
    let keys = KeyRing::load_or_create(&dir.encryption_keys())?;
    let store = SqliteStore::open(SqliteOptions::in_data_dir(&options.data_dir)).await?;
    let storage = Storage::new(Arc::new(store), Some(keys));
    builtin_namespaces(&storage).await?;

    if !options.insecure_http {
        tls::certificates(&dir, options.listen)?;
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

    let mut config = ApiConfig::new(tokens.clone());
    config.bookmark_interval = options.bookmark_interval;
    config.network = options.network.clone();
    let state = ApiState::new(storage, config);
    kubernetes_service(
        &state,
        SocketAddr::new(advertised_ip(local.ip()), local.port()),
    )
    .await?;
    let tls_config = if options.insecure_http {
        None
    } else {
        Some(tls::server_config(&dir)?)
    };
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), "berth server is serving");
    let control_plane = crate::cluster::controllers::start(state.clone(), options.control);
    let scheduler = crate::cluster::scheduler::start(
        state.clone(),
        control_plane.caches.pods.clone(),
        control_plane.caches.nodes.clone(),
    );
    let git_api = || {
        crate::cluster::controllers::client::LocalApi::new(
            state.clone(),
            crate::cluster::controllers::gitsource::FIELD_MANAGER,
        )
    };
    let git_sync = crate::cluster::controllers::gitsource::start(
        git_api(),
        control_plane.caches.clone(),
        options.data_dir.join("git"),
    );
    if let Some(git) = &options.git {
        git_shortcut(&git_api(), git).await;
    }
    Ok(StartedServer {
        url,
        kubeconfig,
        tokens,
        ca_cert: (!options.insecure_http).then(|| dir.ca_cert()),
        listener,
        state,
        tls_config,
        control_plane,
        scheduler,
        git_sync,
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
            control_plane,
            scheduler,
            git_sync,
            ..
        } = self;
        let app = router_with(state.clone(), git_sync.routes());
        serve(listener, app, state, tls_config, shutdown).await;
        drop(git_sync);
        drop(scheduler);
        drop(control_plane);
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
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
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the grace period");
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
