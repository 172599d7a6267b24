//! `berth gitsource suspend|resume|sync NAME`: pause a GitSource's sync during an incident,
//! resume it, or ask for a sync now (the `berth.dev/sync-requested-at` annotation, which the
//! sync controller acts on once).

use clap::{Args, Subcommand};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use super::EXIT_ERROR;
use crate::client::ClientOptions;
use crate::manifest::gitsource::SYNC_REQUESTED_ANNOTATION;

#[derive(Debug, Subcommand)]
pub enum GitSourceCommand {
    /// Stop applying commits and healing drift until resumed
    Suspend(TargetArgs),
    /// Sync again after a suspend
    Resume(TargetArgs),
    /// Fetch and apply now, without waiting for the poll interval
    Sync(TargetArgs),
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
