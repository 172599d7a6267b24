//! `berth up`: the whole system in one process on one machine — the API server with its
//! embedded SQLite store and controllers, one agent on the local Docker — plus a loop that
//! applies a folder of manifests (one atomic batch, prune on, behind the mass-delete guard),
//! re-applies it when a file changes, and shows what the cluster is doing until Ctrl-C.
//! [`run`] wires the server and the agent together and tears them down; the loop itself is
//! a `Session` (`session.rs`), which applies through the batch endpoint as `berth apply` does.
//!
//! Containers outlive the process: a second `berth up` on the same data dir finds the store
//! as it was and its agent adopts the running containers. With `--down`, stopping removes
//! every container and volume this data dir's agent created, and the data dir's state.

pub mod ready;
mod session;
pub mod view;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use self::session::Session;
use crate::client::{ClientError, ClientOptions};
use crate::daemons::agent::daemon::{self, AgentError, AgentOptions};
use crate::daemons::agent::net::attach;
use crate::daemons::agent::pod::backoff::BackoffConfig;
use crate::daemons::agent::pod::podspec::AgentPolicy;
use crate::daemons::agent::runtime::labels as pod_labels;
use crate::daemons::agent::worker::sync::SyncTiming;
use crate::daemons::agent::{ContainerRuntime, DockerRuntime, RuntimeError};
use crate::daemons::server::{self, ServerError, ServerOptions};

/// The ApplySet `berth up` applies the folder as (its parent is the Secret `default/berth-up`).
pub const APPLYSET: &str = "berth-up";
/// The namespace of the ApplySet's parent and of objects that name none.
pub const NAMESPACE: &str = "default";
/// The label on every container and volume of `berth up`'s agent: a hash of the data dir,
/// so `--down` removes exactly what this data dir's cluster made.
pub const UP_LABEL: &str = "berth.dev/up";

/// Loads and validates a folder of manifests with the one loader and validator, printing
/// every problem as `berth validate` does. `None`: refused (the report is printed).
pub type Loader = Arc<dyn Fn(&Path) -> Option<Vec<Value>> + Send + Sync>;

/// Everything `berth up` is configured with, checked before anything starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    /// The folder of manifests to apply and watch (unused with `git`).
    pub manifests: PathBuf,
    /// Sync this repository instead (the server's GitSource `default/default`).
    pub git: Option<crate::daemons::server::GitShortcut>,
    /// Where the API server listens.
    pub listen: SocketAddr,
    pub node_name: String,
    /// Exit 0 once every applied object is Ready.
    pub exit_when_ready: bool,
    /// With `exit_when_ready`: give up after this long and say what is not Ready.
    pub timeout: Option<Duration>,
    /// Remove everything on the way out.
    pub down: bool,
    /// Extra labels on every container and volume (tests label theirs).
    pub extra_labels: BTreeMap<String, String>,
    /// How long the folder must be quiet before a change is applied.
    pub debounce: Duration,
    /// Redraw a table on a terminal instead of printing one line per change.
    pub live: bool,
}

/// How `berth up` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum UpOutcome {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// `--exit-when-ready`: everything became Ready.
    Ready,
    /// `--exit-when-ready`: the timeout passed; one reason per object that is not Ready.
    NotReady(Vec<String>),
    /// `--exit-when-ready`: the manifests could not be applied (the reason was printed).
    ApplyFailed,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("the manifests in {path} are invalid; nothing was started")]
    Invalid { path: PathBuf },
    #[error("Docker is not reachable (is the engine running? is DOCKER_HOST right?)")]
    Docker(#[source] RuntimeError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot connect to the in-process API server")]
    Client(#[from] ClientError),
    #[error("the agent stopped")]
    Agent(#[from] AgentError),
    #[error("the agent stopped unexpectedly")]
    AgentEnded,
    #[error("cannot watch {path} for changes")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot remove what berth up created")]
    Down(#[source] RuntimeError),
}

/// The value of [`UP_LABEL`] for a data dir: stable across runs, distinct between dirs.
pub fn up_id(data_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    hex::encode(&digest[..6])
}

/// Runs `berth up` until `shutdown` resolves or, with `--exit-when-ready`, until everything is
/// Ready or the timeout passes.
pub async fn run(
    options: UpOptions,
    loader: Loader,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<UpOutcome, UpError> {
    // Everything is checked before a port is bound or Docker touched.
    let objects = if options.git.is_some() {
        Vec::new()
    } else {
        match loader(&options.manifests) {
            Some(objects) => objects,
            None => {
                return Err(UpError::Invalid {
                    path: options.manifests.clone(),
                });
            }
        }
    };
    let runtime = DockerRuntime::connect().await.map_err(UpError::Docker)?;
    std::fs::create_dir_all(&options.data_dir).map_err(|source| {
        UpError::Server(ServerError::DataDir {
            path: options.data_dir.clone(),
            source,
        })
    })?;
    let id = up_id(&options.data_dir);
    let started = server::start(ServerOptions {
        data_dir: options.data_dir.clone(),
        listen: options.listen,
        insecure_http: false,
        rotate_encryption_key: false,
        bookmark_interval: Duration::from_secs(30),
        control: crate::cluster::controllers::ControlOptions::default(),
        network: crate::cluster::api::allocate::Network::default(),
        git: options.git.clone(),
        etcd: None,
        token: None,
        election: crate::cluster::controllers::leader::ElectionOptions::default(),
        limits: server::Limits::default(),
        tls_sans: Vec::new(),
        event_ttl: Duration::from_secs(3600),
    })
    .await?;
    let url = started.url.clone();
    let kubeconfig = started.kubeconfig.clone();
    let client_options = |token: &str| ClientOptions {
        server: Some(url.clone()),
        token: Some(token.to_string()),
        certificate_authority: started.ca_cert.clone(),
        ..ClientOptions::default()
    };
    let agent_client = client_options(&started.tokens.agent);
    let admin = client_options(&started.tokens.admin)
        .connect()
        .await?
        .client;
    println!("berth up: API server on {url}");
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "  try: KUBECONFIG={} kubectl get pods -A",
        kubeconfig.display()
    );
    let (server_stop, server_stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(started.serve(async {
        let _ = server_stopped.await;
    }));

    let mut labels = options.extra_labels.clone();
    labels.insert(UP_LABEL.to_string(), id.clone());
    let agent_options = AgentOptions {
        client: agent_client,
        node_name: options.node_name.clone(),
        node_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        max_pods: 110,
        reserved: Default::default(),
        pod_cidr: None,
        lease_interval: Duration::from_secs(10),
        node_status_interval: Duration::from_secs(10),
        timing: SyncTiming {
            relist: Duration::from_secs(2),
            unhealthy_after: Duration::from_secs(30),
        },
        backoff: BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            ..BackoffConfig::default()
        },
        policy: AgentPolicy::default(),
        extra_labels: labels,
        metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let (agent_stop, agent_stopped) = oneshot::channel::<()>();
    let agent = daemon::run(agent_options, async {
        let _ = agent_stopped.await;
    });
    tokio::pin!(agent);

    let session = Session::new(admin, options.clone());
    let result = tokio::select! {
        outcome = session.run(objects, loader, shutdown) => outcome,
        ended = &mut agent => Err(match ended {
            Err(e) => UpError::Agent(e),
            Ok(()) => UpError::AgentEnded,
        }),
    };
    // The agent goes first, so nothing recreates containers while `--down` removes them.
    let _ = agent_stop.send(());
    if result.is_ok() {
        let _ = agent.await;
    }
    let down = if options.down {
        remove_everything(&runtime, &id).await
    } else {
        Ok(())
    };
    let _ = server_stop.send(());
    let _ = serving.await;
    if options.down {
        remove_state(&options.data_dir);
        println!("removed every container, volume and network berth up created, and its state");
    } else if result.is_ok() {
        println!("control plane and agent stopped; the containers keep running");
    }
    down.map_err(UpError::Down)?;
    result
}

/// Removes every container, volume and pod network labelled with this data dir's id, and
/// the pods' `hosts` and `resolv.conf` the agent wrote.
async fn remove_everything(runtime: &DockerRuntime, id: &str) -> Result<(), RuntimeError> {
    let labels = [(UP_LABEL, id)];
    for container in runtime.list_containers(&labels).await? {
        runtime.remove_container(&container.id).await?;
        let label = |key: &str| container.labels.get(key).map(String::as_str);
        if label(pod_labels::CONTAINER_NAME) == Some(pod_labels::SANDBOX_CONTAINER) {
            attach::remove_pod_files_of(label(pod_labels::POD_UID).unwrap_or_default());
        }
    }
    for volume in runtime.list_volumes(&labels).await? {
        runtime.remove_volume(&volume).await?;
    }
    runtime.remove_networks(UP_LABEL, id).await
}

/// Removes the files bootstrap and the store keep in the data dir, then the dir if empty.
fn remove_state(data_dir: &Path) {
    let dir = crate::cluster::api::tls::DataDir(data_dir.to_path_buf());
    for file in [dir.kubeconfig(), dir.encryption_keys()] {
        let _ = std::fs::remove_file(file);
    }
    for sub in ["tls", "tokens"] {
        let _ = std::fs::remove_dir_all(data_dir.join(sub));
    }
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(crate::cluster::store::sqlite::DB_FILE_NAME) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(data_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_is_stable_per_data_dir_and_differs_between_dirs() {
        let a = up_id(Path::new("/tmp/berth-a"));
        assert_eq!(a, up_id(Path::new("/tmp/berth-a")));
        assert_ne!(a, up_id(Path::new("/tmp/berth-b")));
        assert_eq!(a.len(), 12);
    }
}
