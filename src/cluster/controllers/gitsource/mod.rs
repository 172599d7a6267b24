//! Git sync: keeps the manifests of each GitSource's repository applied.
//!
//! One reconcile of a source: fetch ([`fetch`]), load and validate every manifest at the
//! commit with the validator of `berth validate` (any problem → nothing applied, `Stalled`
//! names each `file:line`), then a dry run of the commit's batch through the same code as
//! `berth apply` ([`apply_in_process`]): it shows what would change, which objects belong to
//! someone else (never touched), and whether the prune guard holds the commit. A new commit,
//! a sync request, or drift with `selfHeal` then applies the batch for real (one transaction,
//! the source's own ApplySet, prune on by default). Drift without `selfHeal` is reported as
//! `Synced=False/OutOfSync` with the fields that differ. Health is rolled up from the
//! Deployments applied. A Deployment, ReplicaSet or StatefulSet an autoscaler scales (the
//! [`REPLICAS_MANAGED_BY_ANNOTATION`]) keeps its live replica count: git applies everything
//! else, and a different count is not drift.
//!
//! The objects of the last applied commit stay in memory ([`report`]), so
//! `berth diff --source` can show the drift field by field through the same dry run.
//!
//! Wake-ups: changes of the GitSource (spec, `berth.dev/sync-requested-at` from
//! `berth gitsource sync` or a webhook), a file-system watch of local repositories, and the
//! poll interval.

pub mod fetch;
mod health;
pub mod report;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use self::fetch::{Credentials, FetchError, Fetched};
pub use self::state::REPLICAS_MANAGED_BY_ANNOTATION;
use self::state::{
    Conditions, drift_of, drifted_fields, keep_autoscaled_replicas, status_patch, writers_of,
};
use super::Caches;
use super::cache::{Cache, split_key};
use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::BatchRefusal;
use crate::apply::batch::{BatchRequest, BatchResponse, Outcome};
use crate::cluster::api::apply_in_process;
use crate::manifest::gitsource::{GitSource, SYNC_REQUESTED_ANNOTATION};
use crate::manifest::load::load_bytes;
use crate::manifest::validate::Verdict;
use crate::manifest::{LoadOptions, Severity, ValidateOptions, validate};

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
    let mut tasks = JoinSet::new();
    let sources = Cache::new(resource("berth.dev/v1", "GitSource"));
    tasks.spawn(sources.clone().run(api.state().storage.clone()));
    let queue = WorkQueue::new();
    let declared = report::DeclaredCommits::default();
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
}

/// What loading and validating a commit found.
enum Loaded {
    Valid(Vec<Value>),
    /// `file:line:col: message` for each error.
    Invalid(Vec<String>),
}

/// Loads and validates the commit's manifests; marks each object with where it came from.
fn load_commit(fetched: &Fetched, source_key: &str) -> Loaded {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for file in &fetched.files {
        let (_, file_objects, file_problems) = load_bytes(
            file.path.clone(),
            file.bytes.clone(),
            LoadOptions::default(),
        );
        problems.extend(file_problems);
        objects.extend(file_objects);
    }
    let validated = validate(&objects, ValidateOptions::default());
    problems.extend(validated.problems.into_iter().flatten());
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| {
            let secret = p
                .object
                .as_deref()
                .is_some_and(|o| o.starts_with("Secret "));
            let secret_field = p
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("data") || f.starts_with("stringData"));
            if secret && secret_field {
                // The reason may quote the value: Secret data never reaches a status.
                format!(
                    "{}: {}: {}: invalid value (not shown: it is Secret data)",
                    p.location(),
                    p.object.as_deref().unwrap_or(""),
                    p.field.as_deref().unwrap_or("")
                )
            } else {
                format!("{}: {}", p.location(), p.message())
            }
        })
        .collect();
    if !errors.is_empty() {
        return Loaded::Invalid(errors);
    }
    let out = objects
        .into_iter()
        .zip(validated.verdicts)
        .filter(|(_, v)| *v != Verdict::Skipped)
        .map(|(o, _)| {
            let mut value = o.value;
            let line = o.node.span.start.line.to_string();
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Some(a) = annotations.as_object_mut() {
                    a.insert(SOURCE_ANNOTATION.into(), json!(source_key));
                    a.insert(SOURCE_COMMIT_ANNOTATION.into(), json!(fetched.commit));
                    a.insert(SOURCE_PATH_ANNOTATION.into(), json!(o.file.path));
                    a.insert(SOURCE_LINE_ANNOTATION.into(), json!(line));
                }
            }
            value
        })
        .collect();
    Loaded::Valid(out)
}

/// `Deployment default/web` of a batch result.
fn describe_result(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
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
) -> Result<BatchResponse, BatchRefusal> {
    let request = BatchRequest {
        objects,
        prune: source.spec.prune,
        allow_mass_delete: source.spec.allow_mass_delete,
        dry_run,
        // Git is the source of truth: its fields win over hand edits (that is drift).
        force: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
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
) -> Result<BatchResponse, BatchRefusal> {
    let dry = source_batch(state, namespace, name, source, objects.to_vec(), true).await?;
    if !keep_autoscaled_replicas(objects, &dry, namespace) {
        return Ok(dry);
    }
    source_batch(state, namespace, name, source, objects.to_vec(), true).await
}

#[async_trait::async_trait]
impl Reconciler for GitSyncController {
    fn name(&self) -> &'static str {
        "gitsource"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(object) = self.sources.get(key) else {
            self.unwatch(key);
            self.declared.forget(key);
            return Ok(Action::await_change());
        };
        if super::is_deleting(&object) {
            self.unwatch(key);
            self.declared.forget(key);
            return Ok(Action::await_change());
        }
        let (namespace, name) = split_key(key);
        let namespace = namespace.unwrap_or("default");
        let source: GitSource = serde_json::from_value((*object).clone())
            .map_err(|e| ReconcileError::Invalid(format!("GitSource {key}: {e}")))?;
        let status = source.status.clone().unwrap_or_default();
        let mut conditions = Conditions::new(&object, source.metadata.generation);
        let interval = source
            .spec
            .interval
            .as_deref()
            .and_then(parse_interval)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL);
        let base = |status: &crate::manifest::gitsource::GitSourceStatus| {
            json!({
                "observedGeneration": source.metadata.generation,
                "lastAppliedCommit": status.last_applied_commit,
                "lastAttemptedCommit": status.last_attempted_commit,
                "inventory": status.inventory,
                "health": status.health,
                "lastHandledSyncRequest": status.last_handled_sync_request,
                "drift": status.drift,
            })
        };
        if source.spec.suspend {
            self.unwatch(key);
            conditions.set(
                "Ready",
                false,
                "Suspended",
                "sync is suspended (spec.suspend)",
            );
            let mut s = base(&status);
            s["conditions"] = conditions.into_value();
            self.write_status(&object, s).await?;
            return Ok(Action::await_change());
        }
        match fetch::local_path(&source.spec.url) {
            Some(p) => self.watch(key, &p),
            None => self.unwatch(key),
        }
        let credentials = match &source.spec.secret_ref {
            Some(r) => match self.credentials(namespace, &r.name).await {
                Ok(c) => Some(c),
                Err(ReconcileError::Invalid(message)) => {
                    conditions.set("Ready", false, "SecretMissing", &message);
                    conditions.set("Stalled", true, "SecretMissing", &message);
                    let mut s = base(&status);
                    s["conditions"] = conditions.into_value();
                    self.write_status(&object, s).await?;
                    return Err(ReconcileError::Invalid(message));
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (url, git_ref, folder) = (
            source.spec.url.clone(),
            source.spec.git_ref.clone(),
            source.spec.path.clone(),
        );
        let mirror = self.mirrors.join(format!("{namespace}_{name}"));
        let fetched = tokio::task::spawn_blocking(move || {
            fetch::fetch(
                &url,
                git_ref.as_deref(),
                folder.as_deref(),
                credentials.as_ref(),
                &mirror,
            )
        })
        .await
        .map_err(|e| ReconcileError::Invalid(format!("the fetch task failed: {e}")))?;
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let reason = match e {
                    FetchError::NoPath { .. } | FetchError::Ref { .. } => "NotFound",
                    FetchError::HostKey { .. } | FetchError::NoKnownHosts { .. } => {
                        "HostKeyNotVerified"
                    }
                    _ => "FetchFailed",
                };
                let message = e.to_string();
                conditions.set("Ready", false, reason, &message);
                let mut s = base(&status);
                s["conditions"] = conditions.into_value();
                self.write_status(&object, s).await?;
                return Err(ReconcileError::Invalid(message));
            }
        };
        let commit = fetched.commit.clone();
        let mut s = base(&status);
        s["lastAttemptedCommit"] = json!(commit);
        let mut objects = match load_commit(&fetched, key) {
            Loaded::Valid(objects) => objects,
            Loaded::Invalid(errors) => {
                let message = format!(
                    "commit {} not applied: {} problem{} in the manifests: {}",
                    short(&commit),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" },
                    errors.join("; ")
                );
                conditions.set("Ready", false, "InvalidManifests", &message);
                conditions.set("Stalled", true, "InvalidManifests", &message);
                s["conditions"] = conditions.into_value();
                self.write_status(&object, s).await?;
                return Ok(Action::requeue(interval));
            }
        };
        let sync_request = object["metadata"]["annotations"][SYNC_REQUESTED_ANNOTATION]
            .as_str()
            .map(str::to_string);
        let requested = sync_request.is_some() && sync_request != status.last_handled_sync_request;
        let new_commit = status.last_applied_commit.as_deref() != Some(commit.as_str());
        let declared = objects.clone();
        let dry =
            match source_dry_run(self.api.state(), namespace, name, &source, &mut objects).await {
                Ok(r) => r,
                Err(refusal) => {
                    return self
                        .refused(&object, s, conditions, &commit, refusal, interval)
                        .await;
                }
            };
        let id = ParentRef::secret(&applyset_name(name), namespace).id();
        let foreign: Vec<String> = dry
            .results
            .iter()
            .filter_map(|r| {
                let live = r.live.as_ref()?;
                if applyset::is_member(live, &id) {
                    return None;
                }
                let owner = live
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(SOURCE_ANNOTATION))
                    .and_then(Value::as_str)
                    .map(|s| format!("GitSource {s}"))
                    .unwrap_or_else(|| "applied by hand or by another tool".into());
                Some(format!(
                    "{} ({owner})",
                    describe_result(&r.kind, r.namespace.as_deref(), &r.name)
                ))
            })
            .collect();
        if !foreign.is_empty() {
            let message = format!(
                "commit {} not applied: these objects exist and do not belong to this source, \
                 so they are left alone: {}; delete them or remove them from the repository",
                short(&commit),
                foreign.join(", ")
            );
            conditions.set("Ready", false, "NotOwned", &message);
            conditions.set("Stalled", true, "NotOwned", &message);
            s["conditions"] = conditions.into_value();
            self.write_status(&object, s).await?;
            return Ok(Action::requeue(interval));
        }
        let drift = if new_commit {
            Vec::new()
        } else {
            drift_of(&dry)
        };
        let heal = !drift.is_empty() && source.spec.self_heal;
        let mut writers: Vec<String> = dry
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Configured)
            .filter_map(|r| {
                Some(writers_of(
                    r.live.as_ref()?,
                    &drifted_fields(r),
                    FIELD_MANAGER,
                ))
            })
            .flatten()
            .collect();
        writers.sort();
        writers.dedup();
        let applied = if new_commit || requested || heal {
            match source_batch(self.api.state(), namespace, name, &source, objects, false).await {
                Ok(r) => r,
                Err(refusal) => {
                    return self
                        .refused(&object, s, conditions, &commit, refusal, interval)
                        .await;
                }
            }
        } else {
            dry
        };
        if heal {
            let by = if writers.is_empty() {
                String::new()
            } else {
                format!(" (overruled: {})", writers.join(", "))
            };
            let message = format!(
                "reverted changes made outside git to {}{by}",
                drift.join("; ")
            );
            tracing::info!(source = key, "self-heal: {message}");
            self.api
                .event(&object, "Warning", "SelfHealed", &message)
                .await;
        }
        if new_commit {
            tracing::info!(source = key, commit = %commit, objects = applied.results.len(), "applied a commit");
        }
        self.declared.remember(key, &commit, declared);
        let inventory: Vec<Value> = applied
            .results
            .iter()
            .filter(|r| r.outcome != Outcome::Pruned)
            .map(|r| {
                json!({"apiVersion": r.api_version, "kind": r.kind,
                    "namespace": r.namespace, "name": r.name})
            })
            .collect();
        let (health, health_message) = health::roll_up(&inventory, &self.caches);
        s["lastAppliedCommit"] = json!(commit);
        s["inventory"] = json!(inventory);
        s["health"] = json!(health);
        if requested {
            s["lastHandledSyncRequest"] = json!(sync_request);
        }
        conditions.set("Stalled", false, "Applied", "");
        if drift.is_empty() || heal {
            s["drift"] = json!([]);
            conditions.set(
                "Synced",
                true,
                "Synced",
                &format!("the cluster matches commit {}", short(&commit)),
            );
        } else {
            s["drift"] = json!(drift);
            conditions.set(
                "Synced",
                false,
                "OutOfSync",
                &format!(
                    "changed outside git since commit {}: {}",
                    short(&commit),
                    drift.join("; ")
                ),
            );
        }
        match health {
            "Degraded" => conditions.set("Ready", false, "Degraded", &health_message),
            "Progressing" => conditions.set("Ready", false, "Progressing", &health_message),
            _ => conditions.set(
                "Ready",
                true,
                "Applied",
                &format!("commit {} applied", short(&commit)),
            ),
        }
        s["conditions"] = conditions.into_value();
        self.write_status(&object, s).await?;
        if health == "Progressing" {
            return Ok(Action::requeue(PROGRESS_RECHECK.min(interval)));
        }
        Ok(Action::requeue(interval))
    }
}

impl GitSyncController {
    /// Records a batch refusal: the prune guard holding the commit, or invalid objects.
    async fn refused(
        &self,
        object: &Value,
        mut s: Value,
        mut conditions: Conditions,
        commit: &str,
        refusal: BatchRefusal,
        interval: Duration,
    ) -> Result<Action, ReconcileError> {
        let (reason, message) = match refusal {
            BatchRefusal::MassDelete { message, would_go } => (
                "MassDeleteHeld",
                format!(
                    "commit {} is held: it would {}: {}; set spec.allowMassDelete: true to let it \
                     through, or push a commit that keeps more objects",
                    short(commit),
                    message
                        .trim_start_matches("refusing to ")
                        .split("; pass")
                        .next()
                        .unwrap_or(""),
                    would_go.join(", ")
                ),
            ),
            BatchRefusal::Refused { message, .. } => (
                "ApplyFailed",
                format!("commit {} not applied: {message}", short(commit)),
            ),
        };
        conditions.set("Ready", false, reason, &message);
        conditions.set("Stalled", true, reason, &message);
        s["conditions"] = conditions.into_value();
        self.write_status(object, s).await?;
        Ok(Action::requeue(interval))
    }
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
