//! `berth rollout status|history|undo|restart|pause|resume deploy/NAME`: kubectl's rollout
//! commands over the API, reading the Deployment's status and conditions and its
//! ReplicaSets' `deployment.kubernetes.io/revision` annotations.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::EXIT_ERROR;
use crate::client::ClientOptions;

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until a Deployment's rollout finishes (exit 1 if it fails or times out)
    Status(StatusArgs),
    /// List a Deployment's revisions
    History(TargetArgs),
    /// Roll back to the previous revision (or --to-revision)
    Undo(UndoArgs),
    /// Restart every pod by rolling out the same template again
    Restart(TargetArgs),
    /// Stop rolling out template changes
    Pause(TargetArgs),
    /// Resume a paused rollout
    Resume(TargetArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// `deploy/NAME`, `deployment/NAME`, or `deployment NAME`
    #[arg(required = true, num_args = 1..=2)]
    target: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`)
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Give up after this many seconds (0: wait for ever)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The revision to roll back to (default: the one before the current)
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "{0:?} is not a Deployment; name one as deploy/NAME, deployment/NAME or deployment NAME"
    )]
    Target(String),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {0:?} exceeded its progress deadline")]
    DeadlineExceeded(String),
    #[error("timed out waiting for the rollout of deployment {0:?}")]
    Timeout(String),
    #[error("deployment {name:?} has no revision {revision}{hint}")]
    NoRevision {
        name: String,
        revision: i64,
        hint: String,
    },
    #[error(
        "deployment {0:?} is paused; resume it (berth rollout resume deploy/{0}) before rolling back"
    )]
    Paused(String),
}

/// The Deployment name from `deploy/NAME` or `deployment NAME`.
pub fn deployment_name(target: &[String]) -> Result<String, RolloutError> {
    let is_deploy = |k: &str| {
        matches!(
            k,
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps"
        )
    };
    match target {
        [one] => match one.split_once('/') {
            Some((kind, name)) if is_deploy(kind) && !name.is_empty() => Ok(name.to_string()),
            _ => Err(RolloutError::Target(one.clone())),
        },
        [kind, name] if is_deploy(kind) && !name.is_empty() => Ok(name.clone()),
        other => Err(RolloutError::Target(other.join(" "))),
    }
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RolloutError {
    let what = what.into();
    move |source| RolloutError::Api { what, source }
}

async fn connect(
    t: &TargetArgs,
) -> Result<(Api<Deployment>, Api<ReplicaSet>, String), RolloutError> {
    let conn = t.client.connect().await?;
    let ns = t.namespace.clone().unwrap_or(conn.default_namespace);
    let name = deployment_name(&t.target)?;
    Ok((
        Api::namespaced(conn.client.clone(), &ns),
        Api::namespaced(conn.client, &ns),
        name,
    ))
}

/// What `rollout status` says about a Deployment now: `Ok(None)` when done.
pub fn status_line(d: &Value) -> Result<Option<String>, RolloutError> {
    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
    let status = &d["status"];
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    if int(&d["metadata"]["generation"]) > int(&status["observedGeneration"]) {
        return Ok(Some(
            "Waiting for deployment spec update to be observed...".into(),
        ));
    }
    if status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Err(RolloutError::DeadlineExceeded(name));
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = int(&status["updatedReplicas"]);
    let total = int(&status["replicas"]);
    let available = int(&status["availableReplicas"]);
    Ok(if updated < want {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ))
    } else if total > updated {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            total - updated
        ))
    } else if available < updated {
        Some(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ))
    } else {
        None
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn status(args: StatusArgs) -> Result<(), RolloutError> {
    let (deployments, _, name) = connect(&args.target).await?;
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let d = deployments
            .get(&name)
            .await
            .map_err(api_error(format!("cannot read deployment {name:?}")))?;
        match status_line(&to_json(&d))? {
            None => {
                println!("deployment {name:?} successfully rolled out");
                return Ok(());
            }
            Some(line) => {
                if line != last {
                    println!("{line}");
                    last = line;
                }
            }
        }
        if args.timeout > 0 && start.elapsed() > Duration::from_secs(args.timeout) {
            return Err(RolloutError::Timeout(name));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Deployment and its ReplicaSets (as JSON), by revision.
async fn revisions(
    deployments: &Api<Deployment>,
    sets: &Api<ReplicaSet>,
    name: &str,
) -> Result<(Deployment, Vec<(i64, Value)>), RolloutError> {
    let d = deployments
        .get(name)
        .await
        .map_err(api_error(format!("cannot read deployment {name:?}")))?;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let all = sets
        .list(&ListParams::default())
        .await
        .map_err(api_error("cannot list replicasets"))?;
    let mut out: Vec<(i64, Value)> = all
        .items
        .iter()
        .map(to_json)
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["uid"] == uid.as_str() && o["controller"] == true)
        })
        .map(|rs| {
            (
                crate::cluster::controllers::deployment::revision_of(&rs),
                rs,
            )
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok((d, out))
}

async fn history(t: TargetArgs) -> Result<(), RolloutError> {
    let (deployments, sets, name) = connect(&t).await?;
    let (_, revs) = revisions(&deployments, &sets, &name).await?;
    println!("deployment.apps/{name}");
    println!("REVISION  CHANGE-CAUSE");
    for (rev, rs) in revs {
        let cause = rs["metadata"]["annotations"]["kubernetes.io/change-cause"]
            .as_str()
            .unwrap_or("<none>");
        println!("{rev:<9} {cause}");
    }
    Ok(())
}

async fn undo(args: UndoArgs) -> Result<(), RolloutError> {
    let (deployments, sets, name) = connect(&args.target).await?;
    let (d, revs) = revisions(&deployments, &sets, &name).await?;
    let mut dj = to_json(&d);
    if dj["spec"]["paused"] == true {
        return Err(RolloutError::Paused(name));
    }
    let current = revs.last().map(|(r, _)| *r).unwrap_or(0);
    let wanted = if args.to_revision > 0 {
        args.to_revision
    } else {
        revs.iter()
            .rev()
            .map(|(r, _)| *r)
            .find(|r| *r < current)
            .unwrap_or(0)
    };
    let Some((_, rs)) = revs.iter().find(|(r, _)| *r == wanted && wanted > 0) else {
        let hint = if revs.len() < 2 {
            " (it has never been updated)".into()
        } else {
            String::new()
        };
        return Err(RolloutError::NoRevision {
            name,
            revision: wanted,
            hint,
        });
    };
    let mut template = rs["spec"]["template"].clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    dj["spec"]["template"] = template;
    let d: Deployment =
        serde_json::from_value(dj).map_err(|e| RolloutError::Target(e.to_string()))?;
    deployments
        .replace(&name, &PostParams::default(), &d)
        .await
        .map_err(api_error(format!("cannot roll back deployment {name:?}")))?;
    println!("deployment.apps/{name} rolled back");
    Ok(())
}

async fn merge(t: TargetArgs, patch: serde_json::Value, done: &str) -> Result<(), RolloutError> {
    let (deployments, _, name) = connect(&t).await?;
    deployments
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error(format!("cannot update deployment {name:?}")))?;
    println!("deployment.apps/{name} {done}");
    Ok(())
}

pub fn run(cmd: RolloutCommand) -> u8 {
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    let result = runtime.block_on(async {
        match cmd {
            RolloutCommand::Status(a) => status(a).await,
            RolloutCommand::History(t) => history(t).await,
            RolloutCommand::Undo(a) => undo(a).await,
            RolloutCommand::Restart(t) => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
                merge(t, patch, "restarted").await
            }
            RolloutCommand::Pause(t) => merge(t, json!({"spec": {"paused": true}}), "paused").await,
            RolloutCommand::Resume(t) => merge(t, json!({"spec": {"paused": null}}), "resumed").await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e @ (RolloutError::DeadlineExceeded(_) | RolloutError::Timeout(_))) => {
            eprintln!("error: {e}");
            1
        }
        Err(e) => {
            let chain = anyhow::Error::from(e);
            eprintln!("error: {chain:#}");
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_a_deployment() {
        let t = |s: &[&str]| deployment_name(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["deploy/web"]).unwrap(), "web");
        assert_eq!(t(&["deployment", "web"]).unwrap(), "web");
        assert_eq!(t(&["deployments.apps/web"]).unwrap(), "web");
        assert!(
            t(&["svc/web"])
                .unwrap_err()
                .to_string()
                .contains("deploy/NAME")
        );
        assert!(t(&["web"]).is_err());
    }
}
