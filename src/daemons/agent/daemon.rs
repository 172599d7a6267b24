//! `berth agent` as a process: connect to the API server and Docker, register the Node,
//! then run the lease, the node heartbeat, the watch caches, the pod sync loop and the
//! metrics port until shutdown. Running containers survive the agent: a restarted agent
//! adopts them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::DockerRuntime;
use super::net;
use super::node::lease;
use super::node::{self, Readiness};
use super::runtime::ContainerRuntime;
use super::serve;
use super::watch::forward;
use super::worker::objects::ClusterObjects;
use crate::client::{ClientError, ClientOptions};
use crate::daemons::agent::net::attach::PodAddresses;
use crate::daemons::agent::pod::backoff::BackoffConfig;
use crate::daemons::agent::pod::podspec::AgentPolicy;
use crate::daemons::agent::runtime::labels;
use crate::daemons::agent::worker::context::AgentContext;
use crate::daemons::agent::worker::events::EventRecorder;
use crate::daemons::agent::worker::metrics::{self, AgentMetrics};
use crate::daemons::agent::worker::sync::{PodSync, SyncTiming};

/// Everything `berth agent` is configured with, checked before anything starts.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub client: ClientOptions,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub max_pods: u32,
    /// Held back from pods: allocatable = capacity − reserved.
    pub reserved: node::Reserved,
    pub lease_interval: Duration,
    pub node_status_interval: Duration,
    pub timing: SyncTiming,
    pub backoff: BackoffConfig,
    pub policy: AgentPolicy,
    pub extra_labels: BTreeMap<String, String>,
    pub metrics_listen: SocketAddr,
    /// Where the log and exec endpoint listens; the Node publishes its URL.
    pub listen: SocketAddr,
    /// The pod network's CIDR when given on the command line (else the Node's podCIDR).
    pub pod_cidr: Option<crate::daemons::agent::net::podnet::Cidr>,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve pod logs and exec on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the pod log and exec endpoint")]
    Endpoint(#[from] super::serve::ServeError),
    #[error(
        "the agent needs its join token (--token) to authenticate the API server's log and exec requests"
    )]
    NoToken,
    #[error("cannot tell which address of this host reaches {server}; pass --node-ip")]
    NodeIp { server: String },
    #[error("the API server refused to register node {node:?} (check --token)")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Retries `attempt` with bounded exponential back-off until it succeeds or `fatal` says
/// the error will not go away.
async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
    fatal: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut delay = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Runs the agent until `shutdown` resolves. `endpoint` is the log/exec endpoint to publish
/// on the Node, if this agent serves one.
pub async fn run(
    options: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let token = options.client.token.clone().ok_or(AgentError::NoToken)?;
    let endpoint_listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.listen,
            source,
        })?;
    let metrics_listener = metrics::bind(options.metrics_listen)
        .await
        .map_err(|source| AgentError::Metrics {
            addr: options.metrics_listen,
            source,
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .unwrap_or(options.metrics_listen);
    let (conn, masters) = options.client.connect_masters().await?;
    let client = conn.client.clone();
    let host_ip = options
        .node_ip
        .or_else(|| node::route_ip(&conn.server_url))
        .ok_or_else(|| AgentError::NodeIp {
            server: conn.server_url.clone(),
        })?;
    let mut tasks = JoinSet::new();
    let body = async {
        let runtime = retry("connecting to Docker", DockerRuntime::connect, |_| false)
            .await
            .expect("retried until it succeeds");
        let docker_version = runtime.engine_version().await;
        let mut facts = node::host_facts(
            &options.node_name,
            host_ip,
            options.max_pods,
            &docker_version,
        );
        facts.reserved = options.reserved;
        let node_name = options.node_name.clone();
        // The API server reaches pod logs and exec here; the Node publishes the URL and the
        // certificate's fingerprint, which the server pins.
        let (endpoint, serving) = serve::serve(
            endpoint_listener,
            &host_ip.to_string(),
            token,
            Arc::new(runtime.clone()),
            std::future::pending(),
        )
        .await?;
        tasks.spawn(serving);
        let endpoint = Some(endpoint);
        let unauthorized =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 401 || s.code == 403);
        retry(
            "registering the node",
            || node::register(&client, &facts, endpoint.as_ref()),
            unauthorized,
        )
        .await
        .map_err(|source| AgentError::Register {
            node: node_name.clone(),
            source,
        })?;
        // Registered means Ready is reported, before any pod is taken on.
        let since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        if let Err(e) = node::write_status(&client, &facts, &Readiness::ready(), &since).await {
            tracing::warn!(error = %e, "cannot write the first node status");
        }
        if let Err(e) = lease::renew(&client, &node_name, options.lease_interval * 4).await {
            tracing::warn!(error = %e, "cannot take the node lease");
        }
        println!("metrics on http://{metrics_addr}/metrics");
        println!("node {node_name} registered");

        // Every master from the kubernetes Endpoints, so the agent can move to another when
        // the one in use is lost.
        tasks.spawn(masters.clone().keep_learning(options.lease_interval));
        let metrics = Arc::new(AgentMetrics::with_masters(masters));
        let (events, queue) = EventRecorder::new(&node_name);
        tasks.spawn(queue.post(client.clone()));
        let served = metrics.clone();
        tasks.spawn(async move {
            if let Err(e) = metrics::serve(metrics_listener, served, std::future::pending()).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
        tasks.spawn(lease::keep_renewed(
            client.clone(),
            node_name.clone(),
            options.lease_interval,
        ));
        let (readiness_tx, readiness_rx) = watch::channel(Readiness::ready());
        tasks.spawn(node::heartbeat(
            client.clone(),
            facts,
            readiness_rx,
            options.node_status_interval,
        ));

        let (cm_reader, cm_writer) = reflector::store::<ConfigMap>();
        let (secret_reader, secret_writer) = reflector::store::<Secret>();
        let (pod_reader, pod_writer) = reflector::store::<Pod>();
        let (objects_tx, objects_rx) = mpsc::unbounded_channel();
        let (pods_tx, pods_rx) = mpsc::unbounded_channel();
        let config = watcher::Config::default();
        // managedFields are the server's bookkeeping, never read here, and over a third of a
        // running pod's JSON: the caches keep objects without them.
        let cms = watcher(Api::<ConfigMap>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(|cm| cm.managed_fields_mut().clear())
            .reflect(cm_writer);
        forward(&mut tasks, "ConfigMap", cms, objects_tx.clone());
        let secrets = watcher(Api::<Secret>::all(client.clone()), config.clone())
            .default_backoff()
            .modify(|secret| secret.managed_fields_mut().clear())
            .reflect(secret_writer);
        forward(&mut tasks, "Secret", secrets, objects_tx);
        let bound = config.fields(&format!("spec.nodeName={node_name}"));
        let pods = watcher(Api::<Pod>::all(client.clone()), bound)
            .default_backoff()
            .modify(|pod| pod.managed_fields_mut().clear())
            .reflect(pod_writer);
        forward(&mut tasks, "Pod", pods, pods_tx);
        // Nothing is judged orphaned, and no pod planned, before the caches hold the truth.
        let _ = cm_reader.wait_until_ready().await;
        let _ = secret_reader.wait_until_ready().await;
        let _ = pod_reader.wait_until_ready().await;

        let objects = Arc::new(ClusterObjects {
            config_maps: cm_reader,
            secrets: secret_reader,
        });
        let mut policy = options.policy.clone();
        let services = net::start(
            &client,
            &runtime,
            &node_name,
            options.pod_cidr,
            &options.extra_labels,
            &mut tasks,
        )
        .await;
        let service_targets = services.map(|started| {
            policy.pod_network = Some(started.settings);
            started.targets
        });
        let mut ctx = AgentContext::new(
            runtime,
            node_name.clone(),
            host_ip.to_string(),
            policy,
            options.extra_labels.clone(),
            events,
            objects,
        );
        ctx.backoff = options.backoff;
        ctx.metrics = metrics;
        ctx.service_targets = service_targets;
        if let Some(net) = &ctx.policy.pod_network {
            let pool = PodAddresses::new(net.cidr);
            seed_addresses(&ctx.runtime, &node_name, &pool).await;
            ctx.addresses = Some(pool);
        }
        let ctx = Arc::new(ctx);
        let sync = PodSync::new(
            ctx,
            client.clone(),
            pod_reader,
            readiness_tx,
            options.timing,
        );
        tracing::info!(node = %node_name, "agent running");
        sync.run(
            UnboundedReceiverStream::new(pods_rx),
            UnboundedReceiverStream::new(objects_rx),
        )
        .await;
        Ok(())
    };
    let result = tokio::select! {
        result = body => result,
        () = shutdown => Ok(()),
    };
    // Dropping the tasks stops them; the pods' containers keep running for the next agent.
    tasks.shutdown().await;
    result
}

/// Records the addresses this node's sandboxes hold, before any new pod is given one.
async fn seed_addresses(runtime: &DockerRuntime, node: &str, pool: &PodAddresses) {
    let sandboxes = runtime
        .list_containers(&[
            (labels::NODE, node),
            (labels::CONTAINER_NAME, labels::SANDBOX_CONTAINER),
        ])
        .await;
    match sandboxes {
        Ok(sandboxes) => {
            for c in &sandboxes {
                pool.claim_sandbox(c);
            }
        }
        Err(e) => tracing::warn!(error = %e,
            "cannot list this node's sandboxes: a new pod may be given an address a running one holds"),
    }
}
