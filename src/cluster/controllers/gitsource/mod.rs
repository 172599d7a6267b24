//! Git sync: keeps the manifests of each GitSource's repository applied.
//!
//! One reconcile of a source ([`reconcile`]): fetch ([`fetch`]), load and validate every
//! manifest at the commit with the loader and validator of `berth validate` (any problem →
//! nothing applied, `Stalled` names each `file:line`), then a dry run of the commit's batch through the same code as
//! `berth apply` ([`apply_in_process`]): it shows what would change, which objects belong to
//! someone else (never touched), and whether the prune guard holds the commit. A new commit,
//! a sync request, or drift with `selfHeal` then applies the batch for real (one transaction,
//! the source's own ApplySet, prune on by default). Drift without `selfHeal` is reported as
//! `Synced=False/OutOfSync` with the fields that differ. Health is rolled up from the
//! Deployments applied. A Deployment, ReplicaSet or StatefulSet an autoscaler scales (the
//! [`REPLICAS_MANAGED_BY_ANNOTATION`]) keeps its live replica count: git applies everything
//! else, and a different count is not drift.
//!
//! Between commits the objects of the last applied commit stay in memory ([`index`]): a new
//! commit is compared with it as git trees, only the files whose blobs changed are read,
//! parsed and validated, and only the objects that changed (and those that left) go through
//! apply, as a [`Delta`] batch; the check for objects declared twice runs over the index. The
//! whole set is dry-run again (drift) when the interval has passed, on a sync request, or
//! after a restart or a change of the source's spec. `berth diff --source` ([`report`]) and
//! health read the same index. The status keeps counts and at most
//! [`MAX_LISTED`](crate::manifest::gitsource::MAX_LISTED) objects; the members are the
//! ApplySet's, listed by label (`berth gitsource inventory NAME`).
//!
//! Wake-ups: changes of the GitSource (spec, `berth.dev/sync-requested-at` from
//! `berth gitsource sync` or a webhook), a file-system watch of local repositories, and the
//! poll interval.

pub mod fetch;
mod health;
pub mod index;
mod postbuild;
mod prerequisites;
mod readiness;
mod reconcile;
pub mod report;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use self::fetch::Credentials;
pub use self::state::REPLICAS_MANAGED_BY_ANNOTATION;
use self::state::{keep_autoscaled_replicas, status_patch};
use super::Caches;
use super::cache::Cache;
use super::client::{LocalApi, path, resource};
use super::runtime::{ReconcileError, WorkQueue};
use crate::apply::batch::BatchRefusal;
use crate::apply::batch::{BatchRequest, BatchResponse, Delta};
use crate::cluster::api::apply_in_process;
use crate::manifest::gitsource::GitSource;

/// The field manager git sync applies as.
pub const FIELD_MANAGER: &str = "berth-gitsource";
/// The commit an object was applied from.
pub const SOURCE_COMMIT_ANNOTATION: &str = "berth.dev/source-commit";
/// The file (path in the repository) an object was applied from.
pub const SOURCE_PATH_ANNOTATION: &str = "berth.dev/source-path";
/// The line of that file where the object starts.
pub const SOURCE_LINE_ANNOTATION: &str = "berth.dev/source-line";
/// The GitSource (`namespace/name`) an object was applied from.
pub const SOURCE_ANNOTATION: &str = "berth.dev/source";
/// Poll interval when `spec.interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How often health is looked at again while something is rolling out.
const PROGRESS_RECHECK: Duration = Duration::from_secs(2);

/// The name of the ApplySet parent Secret of a source.
pub fn applyset_name(source: &str) -> String {
    format!("gitsource-{source}")
}

/// `30s`, `1m30s`, `250ms`, `1h`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += Duration::from_secs_f64(number * unit);
    }
    Some(total)
}

/// The running git sync; dropping it stops it.
pub struct GitSync {
    _tasks: JoinSet<()>,
    declared: report::DeclaredCommits,
}

impl GitSync {
    /// Git sync's API routes (a source's drift), for `crate::cluster::api::router_with`.
    pub fn routes(&self) -> axum::Router<crate::cluster::api::SharedState> {
        report::routes(self.declared.clone())
    }
}

/// Starts the git sync controller. `mirrors` holds the bare mirrors of remote repositories.
pub fn start(api: LocalApi, caches: Caches, mirrors: PathBuf) -> GitSync {
    start_with(api, caches, mirrors, report::DeclaredCommits::default())
}

/// [`start`], remembering applied commits in `declared` (which outlives one leader's term:
/// the API's drift route reads it).
pub fn start_with(
    api: LocalApi,
    caches: Caches,
    mirrors: PathBuf,
    declared: report::DeclaredCommits,
) -> GitSync {
    let mut tasks = JoinSet::new();
    let sources = Cache::new(resource("berth.dev/v1", "GitSource"));
    tasks.spawn(sources.clone().run(api.state().storage.clone()));
    let queue = WorkQueue::new();
    super::feed(
        &mut tasks,
        &queue,
        &sources,
        vec![(sources.clone(), super::same_key as super::Mapper)],
        &caches,
    );
    super::spawn_workers(
        &mut tasks,
        GitSyncController {
            api,
            declared: declared.clone(),
            caches,
            sources,
            queue: queue.clone(),
            mirrors,
            watches: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        },
        &queue,
        2,
    );
    GitSync {
        _tasks: tasks,
        declared,
    }
}

pub struct GitSyncController {
    api: LocalApi,
    /// What each source's last applied commit declares, for the drift endpoint.
    declared: report::DeclaredCommits,
    caches: Caches,
    sources: Arc<Cache>,
    queue: Arc<WorkQueue>,
    mirrors: PathBuf,
    /// File-system watches of local repositories, by source key.
    watches: Mutex<HashMap<String, (PathBuf, notify::RecommendedWatcher)>>,
    /// Since when each source (with `wait` or `healthChecks`) has waited for the health of
    /// its commit and generation: what `spec.timeout` bounds.
    waiting: Mutex<HashMap<String, Waiting>>,
}

/// Since when a source has waited for the health of one commit at one generation.
struct Waiting {
    commit: String,
    generation: Option<i64>,
    since: std::time::Instant,
}

impl GitSyncController {
    /// Watches a local repository's git dir so a commit or push wakes the source at once.
    fn watch(&self, key: &str, repo: &Path) {
        let mut watches = self.watches.lock().expect("watches lock");
        if watches.get(key).is_some_and(|(p, _)| p == repo) {
            return;
        }
        let git_dir = match fetch::git_dir(repo) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(source = key, error = %e, "cannot watch the repository");
                return;
            }
        };
        let (queue, wake) = (self.queue.clone(), key.to_string());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
            {
                queue.add(wake.clone());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(source = key, error = %e, "cannot watch the repository; polling only");
                return;
            }
        };
        use notify::Watcher;
        // Refs change on commit and push; HEAD and packed-refs sit in the git dir itself.
        let refs = git_dir.join("refs");
        let watched = watcher
            .watch(&git_dir, notify::RecursiveMode::NonRecursive)
            .and_then(|()| watcher.watch(&refs, notify::RecursiveMode::Recursive));
        if let Err(e) = watched {
            tracing::warn!(source = key, error = %e, "cannot watch the repository; polling only");
            return;
        }
        tracing::info!(source = key, path = %repo.display(), "watching the repository for commits");
        watches.insert(key.to_string(), (repo.to_path_buf(), watcher));
    }

    fn unwatch(&self, key: &str) {
        self.watches.lock().expect("watches lock").remove(key);
    }

    /// Reads the Secret of `spec.secretRef`. The values stay in memory, never in a message.
    async fn credentials(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Result<Credentials, ReconcileError> {
        use base64::Engine;
        let p = path(
            resource("v1", "Secret"),
            Some(namespace),
            Some(secret),
            None,
        );
        let object = self.api.get(&p).await.map_err(|e| {
            if e.is_not_found() {
                ReconcileError::Invalid(format!(
                    "the Secret {namespace}/{secret} named by spec.secretRef does not exist"
                ))
            } else {
                ReconcileError::Api(e)
            }
        })?;
        let field = |k: &str| {
            object["data"][k]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        };
        Ok(Credentials {
            username: field("username"),
            password: field("password"),
            token: field("token"),
            ssh_key: field("identity").or_else(|| field("sshPrivateKey")),
            ssh_public_key: field("identity.pub"),
            known_hosts: field("known_hosts"),
        })
    }

    async fn write_status(&self, source: &Value, new_status: Value) -> Result<(), ReconcileError> {
        let Some(patch) = status_patch(&source["status"], new_status) else {
            return Ok(());
        };
        let sources = resource("berth.dev/v1", "GitSource");
        let p = path(
            sources,
            source["metadata"]["namespace"].as_str(),
            source["metadata"]["name"].as_str(),
            Some("status"),
        );
        self.api.merge_patch(&p, &json!({"status": patch})).await?;
        Ok(())
    }
}

/// Applies (or dry-runs) a source's objects as its own ApplySet.
async fn source_batch(
    state: &crate::cluster::api::SharedState,
    namespace: &str,
    name: &str,
    source: &GitSource,
    objects: Vec<Value>,
    dry_run: bool,
    delta: Option<Delta>,
) -> Result<BatchResponse, BatchRefusal> {
    let request = BatchRequest {
        objects,
        prune: source.spec.prune,
        allow_mass_delete: source.spec.allow_mass_delete,
        dry_run,
        // Git is the source of truth: its fields win over hand edits (that is drift).
        force: true,
        field_manager: Some(FIELD_MANAGER.into()),
        delta,
    };
    // The leadership fence of every controller write (see `LocalApi`).
    if !dry_run && !state.leadership.holds() {
        return Err(BatchRefusal::Refused {
            code: 503,
            message: "this master does not hold the controllers' lease; it applies nothing".into(),
        });
    }
    apply_in_process(state, namespace, &applyset_name(name), request).await
}

/// A dry run of a source's `objects`, after giving autoscaled objects their live replica
/// count (which needs the live objects: a first dry run finds them, a second one shows the
/// batch as it will be applied). What drift is read off, by the controller and by
/// `berth diff --source` alike.
async fn source_dry_run(
    state: &crate::cluster::api::SharedState,
    namespace: &str,
    name: &str,
    source: &GitSource,
    objects: &mut [Value],
    delta: Option<&Delta>,
) -> Result<BatchResponse, BatchRefusal> {
    let batch = |objects: &[Value]| {
        source_batch(
            state,
            namespace,
            name,
            source,
            objects.to_vec(),
            true,
            delta.cloned(),
        )
    };
    let dry = batch(&*objects).await?;
    if !keep_autoscaled_replicas(objects, &dry, namespace) {
        return Ok(dry);
    }
    batch(&*objects).await
}

/// The first 7 characters of a commit id, as git shows it.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_go_durations() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_interval("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_interval("soon"), None);
        assert_eq!(parse_interval(""), None);
    }
}
