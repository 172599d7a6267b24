//! `berth cordon|uncordon|drain NODE`: mark a node unschedulable (or not), and move every
//! pod off it so their controllers recreate them elsewhere: by evicting them, as
//! `kubectl drain` does, so PodDisruptionBudgets hold (an eviction a budget refuses is tried
//! again every few seconds until the budget allows it or `--timeout` passes), or with
//! `--disable-eviction` by deleting them regardless of budgets.

use std::time::{Duration, Instant};

use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::EXIT_ERROR;
use crate::client::ClientOptions;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name
    node: String,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Also delete pods no controller will recreate
    #[arg(long)]
    force: bool,
    /// Leave DaemonSet pods where they are
    #[arg(long)]
    ignore_daemonsets: bool,
    /// Give up after this many seconds (0: wait for ever)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Delete the pods instead of evicting them: PodDisruptionBudgets are not asked
    #[arg(long)]
    disable_eviction: bool,
}

/// How long a drain waits before evicting again a pod whose budget refused (kubectl's 5 s).
const EVICTION_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot delete pods that no controller manages (use --force to delete them anyway): {0}"
    )]
    Unmanaged(String),
    #[error("cannot delete DaemonSet-managed pods (use --ignore-daemonsets to leave them): {0}")]
    DaemonSet(String),
    #[error("timed out waiting for the pods on node {0:?} to go")]
    Timeout(String),
    #[error("cannot evict pod {pod} before the timeout: {message}")]
    Refused { pod: String, message: String },
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Api { what, source }
}

async fn set_unschedulable(args: &NodeArgs, on: bool) -> Result<(), NodeError> {
    let conn = args.client.connect().await?;
    let nodes: Api<Node> = Api::all(conn.client);
    let node = nodes
        .get(&args.node)
        .await
        .map_err(api_error(format!("cannot read node {:?}", args.node)))?;
    let was = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let word = if on { "cordoned" } else { "uncordoned" };
    if was == on {
        println!("node/{} already {word}", args.node);
        return Ok(());
    }
    let patch = json!({"spec": {"unschedulable": if on { json!(true) } else { json!(null) }}});
    nodes
        .patch(&args.node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error(format!("cannot update node {:?}", args.node)))?;
    println!("node/{} {word}", args.node);
    Ok(())
}

async fn drain(args: DrainArgs) -> Result<(), NodeError> {
    set_unschedulable(&args.node, true).await?;
    let name = &args.node.node;
    // kube-rs retries a 429 by itself, up to 15 times with a back-off that grows to minutes;
    // a drain must see a PodDisruptionBudget's 429 at once, to wait its own 5 s and keep to
    // `--timeout`.
    let mut config = args.node.client.config().await?;
    config.default_retry = false;
    let client = kube::Client::try_from(config).map_err(crate::client::ClientError::Client)?;
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
    let listed = pods
        .list(&on_node)
        .await
        .map_err(api_error("cannot list pods"))?;
    let controller = |p: &Pod| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone())
    };
    let key = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default()
        )
    };
    let unmanaged: Vec<String> = listed
        .items
        .iter()
        .filter(|p| controller(p).is_none())
        .map(key)
        .collect();
    if !unmanaged.is_empty() && !args.force {
        return Err(NodeError::Unmanaged(unmanaged.join(", ")));
    }
    let daemons: Vec<String> = listed
        .items
        .iter()
        .filter(|p| controller(p).as_deref() == Some("DaemonSet"))
        .map(key)
        .collect();
    if !daemons.is_empty() && !args.ignore_daemonsets {
        return Err(NodeError::DaemonSet(daemons.join(", ")));
    }
    let doomed: Vec<&Pod> = listed
        .items
        .iter()
        .filter(|p| controller(p).as_deref() != Some("DaemonSet"))
        .collect();
    let start = Instant::now();
    let deadline = (args.timeout > 0).then(|| start + Duration::from_secs(args.timeout));
    let by_delete = args.disable_eviction;
    let removals = doomed.iter().map(|p| {
        let api: Api<Pod> = Api::namespaced(
            client.clone(),
            p.metadata.namespace.as_deref().unwrap_or(""),
        );
        let key = key(p);
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        async move {
            if by_delete {
                println!("deleting pod {key}");
                return delete(&api, &pod_name, &key).await;
            }
            println!("evicting pod {key}");
            evict(&api, &pod_name, &key, deadline).await
        }
    });
    futures::future::try_join_all(removals).await?;
    for p in &doomed {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        loop {
            match api
                .get_opt(&pod_name)
                .await
                .map_err(api_error("cannot read a pod"))?
            {
                Some(now) if now.metadata.uid == p.metadata.uid => {}
                _ => break,
            }
            if args.timeout > 0 && start.elapsed() > Duration::from_secs(args.timeout) {
                return Err(NodeError::Timeout(name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("pod/{pod_name} evicted");
    }
    println!("node/{name} drained");
    Ok(())
}

/// Deletes a pod; one already gone is as good as deleted.
async fn delete(api: &Api<Pod>, name: &str, key: &str) -> Result<(), NodeError> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(api_error(format!("cannot delete pod {key}"))(e)),
    }
}

/// Evicts a pod, trying again every [`EVICTION_RETRY`] while its PodDisruptionBudget refuses
/// (429), until `deadline`; a pod already gone is evicted.
async fn evict(
    api: &Api<Pod>,
    name: &str,
    key: &str,
    deadline: Option<Instant>,
) -> Result<(), NodeError> {
    loop {
        match api.evict(name, &EvictParams::default()).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 429 => {
                if deadline.is_some_and(|d| Instant::now() + EVICTION_RETRY > d) {
                    return Err(NodeError::Refused {
                        pod: key.to_string(),
                        message: status.message,
                    });
                }
                eprintln!(
                    "cannot evict pod {key} yet (trying again in {}s): {}",
                    EVICTION_RETRY.as_secs(),
                    status.message
                );
                tokio::time::sleep(EVICTION_RETRY).await;
            }
            Err(e) => return Err(api_error(format!("cannot evict pod {key}"))(e)),
        }
    }
}

fn block_on(f: impl std::future::Future<Output = Result<(), NodeError>>) -> u8 {
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    match runtime.block_on(f) {
        Ok(()) => 0,
        Err(e) => {
            let chain = anyhow::Error::from(e);
            eprintln!("error: {chain:#}");
            1
        }
    }
}

pub fn cordon(args: NodeArgs) -> u8 {
    block_on(async move { set_unschedulable(&args, true).await })
}

pub fn uncordon(args: NodeArgs) -> u8 {
    block_on(async move { set_unschedulable(&args, false).await })
}

pub fn run_drain(args: DrainArgs) -> u8 {
    block_on(drain(args))
}
