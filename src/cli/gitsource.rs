//! `berth gitsource suspend|resume|sync|inventory NAME`: pause a GitSource's sync during an
//! incident, resume it, ask for a sync now (the `berth.dev/sync-requested-at` annotation, which
//! the sync controller acts on once), or list the objects it applied (found by their ApplySet
//! label: the GitSource's status only counts them).

use clap::{Args, Subcommand};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use super::EXIT_ERROR;
use crate::apply::applyset::ParentRef;
use crate::client::ClientOptions;
use crate::client::applyset::members;
use crate::cluster::controllers::gitsource::applyset_name;
use crate::manifest::gitsource::SYNC_REQUESTED_ANNOTATION;

#[derive(Debug, Subcommand)]
pub enum GitSourceCommand {
    /// Stop applying commits and healing drift until resumed
    Suspend(TargetArgs),
    /// Sync again after a suspend
    Resume(TargetArgs),
    /// Fetch and apply now, without waiting for the poll interval
    Sync(TargetArgs),
    /// List the objects the source applied (its ApplySet's members, found by their label)
    Inventory(TargetArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The GitSource's name
    name: String,
    /// Namespace (default: the kubeconfig context's, else `default`)
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    client: ClientOptions,
}

async fn patch(t: TargetArgs, patch: serde_json::Value, done: &str) -> Result<(), String> {
    let conn = t.client.connect().await.map_err(|e| e.to_string())?;
    let ns = t.namespace.clone().unwrap_or(conn.default_namespace);
    let gvk = GroupVersionKind::gvk("berth.dev", "v1", "GitSource");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "gitsources");
    let api: Api<DynamicObject> = Api::namespaced_with(conn.client, &ns, &resource);
    api.patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("cannot update gitsource {ns}/{}: {e}", t.name))?;
    println!("gitsource.berth.dev/{} {done}", t.name);
    Ok(())
}

/// Prints `KIND NAMESPACE NAME` for each member of the source's ApplySet.
async fn inventory(t: TargetArgs) -> Result<(), String> {
    let conn = t.client.connect().await.map_err(|e| e.to_string())?;
    let ns = t.namespace.clone().unwrap_or(conn.default_namespace);
    let served = crate::client::discovery::discover(&conn.client)
        .await
        .map_err(|e| format!("cannot read the server's API resources: {e}"))?;
    let parent = ParentRef::secret(&applyset_name(&t.name), &ns);
    let Some(members) = members(&conn.client, &served, &parent).await? else {
        return Err(format!(
            "gitsource {ns}/{} has applied nothing yet (no ApplySet parent Secret {ns}/{}); \
             see `berth get gitsource {} -n {ns} -o yaml` for why",
            t.name, parent.name, t.name
        ));
    };
    let width = members
        .iter()
        .map(|m| m.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let ns_width = members
        .iter()
        .map(|m| m.namespace.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!("{:width$}  {:ns_width$}  NAME", "KIND", "NAMESPACE");
    for m in &members {
        println!(
            "{:width$}  {:ns_width$}  {}",
            m.kind,
            m.namespace.as_deref().unwrap_or(""),
            m.name
        );
    }
    Ok(())
}

pub fn run(cmd: GitSourceCommand) -> u8 {
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    let result = runtime.block_on(async {
        match cmd {
            GitSourceCommand::Suspend(t) => {
                patch(t, json!({"spec": {"suspend": true}}), "suspended").await
            }
            GitSourceCommand::Resume(t) => {
                patch(t, json!({"spec": {"suspend": false}}), "resumed").await
            }
            GitSourceCommand::Sync(t) => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                let annotations =
                    json!({"metadata": {"annotations": {SYNC_REQUESTED_ANNOTATION: now}}});
                patch(t, annotations, "sync requested").await
            }
            GitSourceCommand::Inventory(t) => inventory(t).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}
