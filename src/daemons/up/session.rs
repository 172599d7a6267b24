//! The loop of `berth up` once the server and the agent run: apply the folder in one batch
//! (prune on, behind the mass-delete guard) through the batch endpoint as `berth apply`
//! does, re-apply it when a file changes (debounced), or with `--git` follow what the
//! server's GitSource applied; and show every applied object's state, the pods beside them,
//! warnings and repaired drift, until Ctrl-C or, with `--exit-when-ready`, until all is Ready.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use super::ready::{self, ObjectState, object_state};
use super::view::{ImageRow, Row, View, image_rows};
use super::{APPLYSET, Loader, NAMESPACE, UpError, UpOptions, UpOutcome};
use crate::apply::applyset::ParentRef;
use crate::apply::batch::{BatchRequest, BatchResponse, FIELD_MANAGER, Outcome};
use crate::apply::client::{BatchClientError, send};
use crate::client::applyset::members;
use crate::cluster::api::resources::by_kind;
use crate::cluster::controllers::gitsource::applyset_name;
use crate::daemons::server::GIT_SHORTCUT;

/// One applied object, as the batch answered it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Applied {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
}

impl Applied {
    fn display(&self) -> String {
        let kind = self.kind.to_lowercase();
        let name = match self.api_version.rsplit_once('/') {
            Some((group, _)) => format!("{kind}.{group}/{}", self.name),
            None => format!("{kind}/{}", self.name),
        };
        match &self.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        }
    }

    /// The object's URL path, if berth serves its kind.
    fn path(&self) -> Option<String> {
        let r = by_kind(&self.api_version, &self.kind)?;
        Some(object_path(
            r.group.is_empty(),
            r.api_version,
            r.namespaced
                .then(|| self.namespace.as_deref().unwrap_or(NAMESPACE)),
            r.plural,
            &self.name,
        ))
    }
}

fn object_path(
    core: bool,
    api_version: &str,
    namespace: Option<&str>,
    plural: &str,
    name: &str,
) -> String {
    let prefix = if core {
        format!("/api/{api_version}")
    } else {
        format!("/apis/{api_version}")
    };
    match namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    }
}

fn applied_set(response: &BatchResponse) -> Vec<Applied> {
    let mut set: Vec<Applied> = response
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pruned)
        .map(|r| Applied {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        })
        .collect();
    set.sort();
    set
}

/// GET as JSON; `None` when the object does not exist.
async fn get_json(client: &kube::Client, path: &str) -> Result<Option<Value>, kube::Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request");
    match client.request::<Value>(request).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The apply-watch-show loop.
pub(super) struct Session {
    client: kube::Client,
    options: UpOptions,
    started: chrono::DateTime<chrono::Utc>,
}

impl Session {
    /// A session talking to the API as `client` (an admin), started now.
    pub(super) fn new(client: kube::Client, options: UpOptions) -> Session {
        Session {
            client,
            options,
            started: chrono::Utc::now(),
        }
    }

    pub(super) async fn run(
        &self,
        objects: Vec<Value>,
        loader: Loader,
        shutdown: impl Future<Output = ()>,
    ) -> Result<UpOutcome, UpError> {
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel::<()>();
        let git = self.options.git.is_some();
        let _watcher = if git {
            None
        } else {
            Some(watch_folder(&self.options.manifests, changed_tx)?)
        };
        let mut view = View::new(self.options.live);
        self.wait_for_node().await;
        let mut applied = Vec::new();
        let mut apply_failed = false;
        let mut last_sync = String::new();
        let mut listed = String::new();
        if !git {
            match self.apply(objects, &mut view).await {
                Some(set) => applied = set,
                None => apply_failed = true,
            }
        }
        if apply_failed && self.options.exit_when_ready {
            return Ok(UpOutcome::ApplyFailed);
        }
        let deadline = self.options.timeout.map(|t| Instant::now() + t);
        let mut seen_events: BTreeSet<String> = BTreeSet::new();
        let mut was_ready = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = cluster_changes(&self.client);
        let mut last_look = Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    view.clear();
                    return Ok(UpOutcome::Stopped);
                }
                Some(()) = changes.next() => {
                    // A rollout writes many statuses at once: look at most every LOOK_EVERY.
                    tokio::time::sleep_until((last_look + LOOK_EVERY).into()).await;
                    while changes.next().now_or_never().flatten().is_some() {}
                    tick.reset_immediately();
                }
                Some(()) = changed_rx.recv() => {
                    // Debounce: wait until the folder has been quiet for a moment.
                    while let Ok(Some(())) =
                        tokio::time::timeout(self.options.debounce, changed_rx.recv()).await
                    {}
                    view.clear();
                    view.message(&format!(
                        "{} changed; applying",
                        self.options.manifests.display()
                    ));
                    match loader(&self.options.manifests) {
                        Some(objects) => {
                            if let Some(set) = self.apply(objects, &mut view).await {
                                applied = set;
                            }
                        }
                        None => view.message("nothing changed: fix the manifests above and save again"),
                    }
                }
                _ = tick.tick() => {
                    last_look = Instant::now();
                    if git {
                        applied = self
                            .git_inventory(&mut last_sync, &mut listed, std::mem::take(&mut applied), &mut view)
                            .await;
                    }
                    let (rows, images) = self.rows(&applied).await;
                    self.warnings(&mut seen_events, &mut view).await;
                    let all_ready = !applied.is_empty() && rows.iter().all(|r| r.ready || !r.applied);
                    view.show(&rows, &images);
                    if all_ready && !was_ready {
                        view.message(&format!("ready: all {} objects are Ready", applied.len()));
                    }
                    was_ready = all_ready;
                    if self.options.exit_when_ready && all_ready {
                        return Ok(UpOutcome::Ready);
                    }
                    if self.options.exit_when_ready && deadline.is_some_and(|d| Instant::now() > d) {
                        let reasons = rows
                            .iter()
                            .filter(|r| r.applied && !r.ready)
                            .map(|r| format!("{}: {}", r.name, r.state))
                            .collect();
                        return Ok(UpOutcome::NotReady(reasons));
                    }
                }
            }
        }
    }

    /// With `--git`: the objects the server's GitSource applied (its ApplySet's members,
    /// listed by label when the applied commit changes), and a line whenever its sync state
    /// changes (a commit applied, or why one was not).
    async fn git_inventory(
        &self,
        last: &mut String,
        listed: &mut String,
        applied: Vec<Applied>,
        view: &mut View,
    ) -> Vec<Applied> {
        let (namespace, name) = GIT_SHORTCUT;
        let path = format!("/apis/berth.dev/v1/namespaces/{namespace}/gitsources/{name}");
        let Ok(Some(source)) = get_json(&self.client, &path).await else {
            return Vec::new();
        };
        let status = &source["status"];
        let commit = status["lastAppliedCommit"].as_str().unwrap_or("");
        let stalled = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Stalled" && c["status"] == "True")
            .and_then(|c| c["message"].as_str());
        let now = match stalled {
            Some(why) => format!("git: not synced: {why}"),
            None if commit.is_empty() => String::new(),
            None => format!("git: commit {} applied", &commit[..commit.len().min(12)]),
        };
        if !now.is_empty() && now != *last {
            view.message(&now);
            *last = now;
        }
        if commit.is_empty() || commit == listed.as_str() {
            return applied;
        }
        let Ok(served) = crate::client::discovery::discover(&self.client).await else {
            return applied;
        };
        let parent = ParentRef::secret(&applyset_name(name), namespace);
        match members(&self.client, &served, &parent).await {
            Ok(Some(found)) => {
                *listed = commit.to_string();
                found
                    .into_iter()
                    .map(|m| Applied {
                        api_version: m.api_version,
                        kind: m.kind,
                        namespace: m.namespace,
                        name: m.name,
                    })
                    .collect()
            }
            _ => applied,
        }
    }

    /// Waits (up to 30 s) until the agent has registered its Node, so the scheduler binds
    /// the first pods at once instead of backing off from an empty cluster.
    async fn wait_for_node(&self) {
        let path = format!("/api/v1/nodes/{}", self.options.node_name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = get_json(&self.client, &path).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Applies the set in one batch with prune on (the mass-delete guard stays on).
    async fn apply(&self, objects: Vec<Value>, view: &mut View) -> Option<Vec<Applied>> {
        let request = BatchRequest {
            objects,
            prune: true,
            allow_mass_delete: false,
            dry_run: false,
            force: false,
            field_manager: Some(FIELD_MANAGER.into()),
            delta: None,
        };
        match send(&self.client, NAMESPACE, APPLYSET, &request).await {
            Ok(response) => {
                let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
                for r in &response.results {
                    *counts.entry(r.outcome).or_default() += 1;
                    if r.outcome != Outcome::Unchanged {
                        view.message(&format!("{} {}", r.display_name(), r.outcome.as_str()));
                    }
                }
                let summary: Vec<String> = [
                    Outcome::Created,
                    Outcome::Configured,
                    Outcome::Unchanged,
                    Outcome::Pruned,
                ]
                .iter()
                .map(|o| format!("{} {}", counts.get(o).copied().unwrap_or(0), o.as_str()))
                .collect();
                view.message(&format!("applied: {}", summary.join(", ")));
                Some(applied_set(&response))
            }
            Err(BatchClientError::Rejected {
                message, causes, ..
            }) => {
                view.message(&format!("nothing was applied: {message}"));
                for cause in causes {
                    view.message(&format!("  - {cause}"));
                }
                None
            }
            Err(e) => {
                view.message(&format!("nothing was applied: {e}"));
                None
            }
        }
    }

    /// One row per applied object, then the pods of their namespaces that no manifest names;
    /// and the images those pods run.
    async fn rows(&self, applied: &[Applied]) -> (Vec<Row>, Vec<ImageRow>) {
        let mut rows = Vec::new();
        let mut images = Vec::new();
        let mut namespaces = BTreeSet::new();
        for object in applied {
            let state = match object.path() {
                None => ObjectState::ready("applied"),
                Some(path) => self.state(object, &path).await,
            };
            if object.kind == "Namespace" {
                namespaces.insert(object.name.clone());
            } else if let Some(ns) = &object.namespace {
                namespaces.insert(ns.clone());
            }
            rows.push(Row {
                name: object.display(),
                applied: true,
                ready: state.ready,
                state: state.text,
                progress: state.progress,
            });
        }
        for ns in namespaces {
            let path = format!("/api/v1/namespaces/{ns}/pods");
            let Ok(Some(list)) = get_json(&self.client, &path).await else {
                continue;
            };
            for pod in list["items"].as_array().into_iter().flatten() {
                images.extend(ready::pod_images(pod));
                let name = pod.pointer("/metadata/name").and_then(Value::as_str);
                let Some(name) = name else { continue };
                let display = format!("{ns}/pod/{name}");
                if rows.iter().any(|r| r.name == display) {
                    continue;
                }
                let state = ready::pod_state(pod);
                rows.push(Row {
                    name: display,
                    applied: false,
                    ready: state.ready,
                    state: state.text,
                    progress: state.progress,
                });
            }
        }
        (rows, image_rows(images))
    }

    async fn state(&self, object: &Applied, path: &str) -> ObjectState {
        let live = match get_json(&self.client, path).await {
            Ok(Some(live)) => live,
            Ok(None) => return waiting("not found"),
            Err(e) => return waiting(&format!("cannot read it: {e}")),
        };
        let endpoints = if object.kind == "Service" {
            let ns = object.namespace.as_deref().unwrap_or(NAMESPACE);
            let path = object_path(true, "v1", Some(ns), "endpoints", &object.name);
            get_json(&self.client, &path).await.ok().flatten()
        } else {
            None
        };
        object_state(&object.kind, &live, endpoints.as_ref())
    }

    /// Prints Warning events and repaired drift that happened since `berth up` started.
    async fn warnings(&self, seen: &mut BTreeSet<String>, view: &mut View) {
        let Ok(Some(list)) = get_json(&self.client, "/api/v1/events").await else {
            return;
        };
        for event in list["items"].as_array().into_iter().flatten() {
            let reason = event["reason"].as_str().unwrap_or("");
            let warning = event["type"].as_str() == Some("Warning");
            if !warning && reason != "DriftRepaired" {
                continue;
            }
            let when = event["lastTimestamp"]
                .as_str()
                .or(event["eventTime"].as_str())
                .or(event
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str))
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if when.is_some_and(|t| t < self.started) {
                continue;
            }
            let key = format!(
                "{}/{}",
                event
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                event["count"].as_i64().unwrap_or(1)
            );
            if !seen.insert(key) {
                continue;
            }
            let object = &event["involvedObject"];
            view.message(&format!(
                "{}: {}/{}/{}: {}: {}",
                if warning { "warning" } else { "event" },
                object["namespace"].as_str().unwrap_or("-"),
                object["kind"].as_str().unwrap_or("").to_lowercase(),
                object["name"].as_str().unwrap_or(""),
                reason,
                event["message"].as_str().unwrap_or("")
            ));
        }
    }
}

/// How often at most the view looks at the cluster when objects change.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// One `()` whenever a pod, Deployment or Endpoints object changes anywhere, so the view and
/// `--exit-when-ready` see a status the moment it is written rather than at the next tick.
fn cluster_changes(client: &kube::Client) -> futures::stream::BoxStream<'static, ()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Endpoints, Pod};
    use kube::Api;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default();
    futures::stream::select_all([
        watcher(Api::<Pod>::all(client.clone()), config.clone())
            .default_backoff()
            .map(|_| ())
            .boxed(),
        watcher(Api::<Deployment>::all(client.clone()), config.clone())
            .default_backoff()
            .map(|_| ())
            .boxed(),
        watcher(Api::<Endpoints>::all(client.clone()), config)
            .default_backoff()
            .map(|_| ())
            .boxed(),
    ])
    .boxed()
}

fn waiting(text: &str) -> ObjectState {
    ObjectState::waiting(text)
}

/// Watches `folder` recursively; every change sends one `()`.
fn watch_folder(
    folder: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, UpError> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_)));
        if relevant {
            let _ = changed.send(());
        }
    })
    .map_err(|source| UpError::Watch {
        path: folder.to_path_buf(),
        source,
    })?;
    watcher
        .watch(folder, RecursiveMode::Recursive)
        .map_err(|source| UpError::Watch {
            path: folder.to_path_buf(),
            source,
        })?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_read_as_the_api_serves_them() {
        let deployment = Applied {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        assert_eq!(
            deployment.path().as_deref(),
            Some("/apis/apps/v1/namespaces/shop/deployments/web")
        );
        assert_eq!(deployment.display(), "shop/deployment.apps/web");
        let namespace = Applied {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: "shop".into(),
        };
        assert_eq!(namespace.path().as_deref(), Some("/api/v1/namespaces/shop"));
    }
}
