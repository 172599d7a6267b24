//! One reconcile of a GitSource, step by step: fetch the commit, load and validate its
//! manifests, dry-run them (which finds objects owned by someone else, drift and who made it),
//! apply when there is a new commit, a sync request or drift to heal, then roll up health
//! and write the status. A step that cannot go on records why in the status and stops; a sync
//! asked for (`berth.dev/sync-requested-at`) is marked handled (`lastHandledSyncRequest`)
//! either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fetch::{self, FetchError, Fetched};
use super::index::{Change, Index};
use super::postbuild::PostBuild;
use super::report::Declared;
use super::state::{Conditions, drift_of, drifted_fields, writers_of};
use super::{
    DEFAULT_INTERVAL, FIELD_MANAGER, GitSyncController, PROGRESS_RECHECK, SOURCE_ANNOTATION,
    SOURCE_COMMIT_ANNOTATION, SOURCE_LINE_ANNOTATION, SOURCE_PATH_ANNOTATION, applyset_name,
    parse_interval, short, source_batch, source_dry_run,
};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::BatchRefusal;
use crate::apply::batch::{BatchResponse, Delta, Outcome};
use crate::cluster::controllers::cache::split_key;
use crate::cluster::controllers::runtime::{Action, ReconcileError, Reconciler};
use crate::manifest::gitsource::{
    GitSource, GitSourceStatus, MAX_LISTED, SYNC_REQUESTED_ANNOTATION,
};
use crate::manifest::set::load_set_with;
use crate::manifest::{Input, Loaded, SetOptions, Severity, ValidateOptions};

/// One reconcile's view of a source: the object as stored, its spec, and the status being
/// built from the one it has.
pub(super) struct Pass<'a> {
    pub key: &'a str,
    object: &'a Value,
    pub source: GitSource,
    pub namespace: &'a str,
    name: &'a str,
    pub interval: Duration,
    conditions: Conditions,
    status: Value,
    /// Variables and target namespace, read before the commit is loaded.
    post: PostBuild,
}

impl Pass<'_> {
    /// The status to write: what was built, with the conditions.
    fn take_status(&mut self) -> Value {
        let conditions =
            std::mem::replace(&mut self.conditions, Conditions::new(&Value::Null, None));
        let mut status = std::mem::take(&mut self.status);
        status["conditions"] = conditions.into_value();
        status
    }

    /// What the source's status said after the last reconcile.
    fn last(&self) -> GitSourceStatus {
        self.source.status.clone().unwrap_or_default()
    }

    /// The sync asked for with the source's annotation, if any.
    fn sync_request(&self) -> Option<String> {
        self.object["metadata"]["annotations"][SYNC_REQUESTED_ANNOTATION]
            .as_str()
            .map(str::to_string)
    }

    /// Records that this reconcile handled the sync asked for, whatever came of it (applied,
    /// refused, stalled): who asked sees that it ran, and the reason in the conditions.
    fn request_handled(&mut self) {
        if let Some(request) = self.sync_request() {
            self.status["lastHandledSyncRequest"] = json!(request);
        }
    }
}

/// When a stopped reconcile looks again.
pub(super) enum Retry {
    /// After the source's interval: nothing will change before a new commit or edit.
    AfterInterval,
    /// With the controller's back-off, as after any error.
    Backoff,
    /// After this long: what it waits for (another source) may be ready by then.
    After(Duration),
}

/// Why a reconcile stops before the end.
pub(super) enum Stop {
    /// `Ready=False` for `reason`, also `Stalled=True` if `stalled`: written to the status.
    Status {
        reason: &'static str,
        message: String,
        stalled: bool,
        retry: Retry,
    },
    /// An error that writes no status (the API could not be reached, say).
    Error(ReconcileError),
}

impl Stop {
    /// The source cannot go on until someone changes it or its repository.
    pub(super) fn stalled(reason: &'static str, message: String) -> Stop {
        Stop::Status {
            reason,
            message,
            stalled: true,
            retry: Retry::AfterInterval,
        }
    }
}

impl From<ReconcileError> for Stop {
    fn from(e: ReconcileError) -> Stop {
        Stop::Error(e)
    }
}

/// The status fields a reconcile carries over from the last one until it knows better.
fn carried_over(source: &GitSource, status: &GitSourceStatus) -> Value {
    json!({
        "observedGeneration": source.metadata.generation,
        "lastAppliedCommit": status.last_applied_commit,
        "lastAttemptedCommit": status.last_attempted_commit,
        "objects": status.objects,
        "health": status.health,
        "lastHandledSyncRequest": status.last_handled_sync_request,
        "drift": status.drift,
        "driftCount": status.drift_count,
    })
}

/// At most [`MAX_LISTED`] of `items` joined with `; `, and how many more there are.
fn listed(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" … and {} more", items.len() - MAX_LISTED));
    }
    text
}

/// Loads and validates the commit's manifests with the one loader (custom resources against
/// the CRDs of the commit and those the server serves); marks each object with where it came
/// from. `Err`: `file:line:col: message` for each error, Secret data left out. The variables
/// of `post` are substituted before validation and its target namespace set after, so the
/// index compares objects as they are applied.
fn load_commit(
    files: Vec<Input>,
    commit: &str,
    source_key: &str,
    post: &PostBuild,
) -> Result<HashMap<String, Vec<Value>>, Vec<String>> {
    let files = post.inputs(files);
    let served = crate::cluster::api::crds::catalog();
    let options = SetOptions::keep(ValidateOptions::default());
    let (objects, report) = load_set_with(files, options, &served);
    if report.error_count() > 0 {
        return Err(report
            .problems_without_secret_values()
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| post.redact(format!("{}: {}", p.location(), p.message())))
            .collect());
    }
    let mut by_path: HashMap<String, Vec<Value>> = HashMap::new();
    let annotate = |o: Loaded| {
        let mut value = o.value;
        post.object(&mut value);
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(SOURCE_ANNOTATION.into(), json!(source_key));
                a.insert(SOURCE_COMMIT_ANNOTATION.into(), json!(commit));
                a.insert(SOURCE_PATH_ANNOTATION.into(), json!(&o.path));
                a.insert(SOURCE_LINE_ANNOTATION.into(), json!(o.line.to_string()));
            }
        }
        (o.input, value)
    };
    // By input: a manifest file, or a kustomization folder (rendered whole).
    for (path, value) in objects.into_iter().map(annotate) {
        by_path.entry(path).or_default().push(value);
    }
    Ok(by_path)
}

/// `Deployment default/web` of a batch result.
fn describe_result(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The objects of a dry run that exist and are not members of the source's ApplySet, each
/// with who has it: git sync leaves them alone.
fn foreign_objects(dry: &BatchResponse, namespace: &str, name: &str) -> Vec<String> {
    let id = ParentRef::secret(&applyset_name(name), namespace).id();
    dry.results
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
        .collect()
}

/// The field managers other than git sync that wrote the fields that drifted.
fn overruled_writers(dry: &BatchResponse) -> Vec<String> {
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
    writers
}

/// A batch refusal: the prune guard holding the commit, or invalid objects.
fn refused(commit: &str, refusal: BatchRefusal) -> Stop {
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
                listed(&would_go)
            ),
        ),
        BatchRefusal::Refused { message, .. } => (
            "ApplyFailed",
            format!("commit {} not applied: {message}", short(commit)),
        ),
    };
    Stop::stalled(reason, message)
}

#[async_trait::async_trait]
impl Reconciler for GitSyncController {
    fn name(&self) -> &'static str {
        "gitsource"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let object = match self.sources.get(key) {
            Some(object) if !super::super::is_deleting(&object) => object,
            _ => {
                self.unwatch(key);
                self.declared.forget(key);
                self.waiting.lock().expect("waiting lock").remove(key);
                return Ok(Action::await_change());
            }
        };
        let (namespace, name) = split_key(key);
        // The cache may not have seen this controller's own last status write yet, and the
        // status decides whether the last commit's index is reused (a stale one would apply
        // the whole commit again): read the source as stored.
        let stored = crate::cluster::controllers::client::path(
            crate::cluster::controllers::client::resource("berth.dev/v1", "GitSource"),
            namespace,
            Some(name),
            None,
        );
        let object = match self.api.get(&stored).await {
            Ok(fresh) if !super::super::is_deleting(&fresh) => std::sync::Arc::new(fresh),
            Ok(_) => return Ok(Action::await_change()),
            Err(_) => object,
        };
        let source: GitSource = serde_json::from_value((*object).clone())
            .map_err(|e| ReconcileError::Invalid(format!("GitSource {key}: {e}")))?;
        let mut pass = Pass {
            key,
            object: &object,
            namespace: namespace.unwrap_or("default"),
            name,
            interval: source
                .spec
                .interval
                .as_deref()
                .and_then(parse_interval)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_INTERVAL),
            conditions: Conditions::new(&object, source.metadata.generation),
            status: carried_over(&source, &source.status.clone().unwrap_or_default()),
            source,
            post: PostBuild::default(),
        };
        match self.run(&mut pass).await {
            Ok(action) => Ok(action),
            Err(Stop::Error(e)) => Err(e),
            Err(Stop::Status {
                reason,
                message,
                stalled,
                retry,
            }) => {
                pass.conditions.set("Ready", false, reason, &message);
                if stalled {
                    pass.conditions.set("Stalled", true, reason, &message);
                }
                pass.request_handled();
                self.write_status(pass.object, pass.take_status()).await?;
                match retry {
                    Retry::AfterInterval => Ok(Action::requeue(pass.interval)),
                    Retry::After(after) => Ok(Action::requeue(after)),
                    Retry::Backoff => Err(ReconcileError::Invalid(message)),
                }
            }
        }
    }
}

impl GitSyncController {
    /// The steps of a reconcile, each stopping it with the reason to record.
    async fn run(&self, pass: &mut Pass<'_>) -> Result<Action, Stop> {
        if pass.source.spec.suspend {
            self.unwatch(pass.key);
            pass.conditions.set(
                "Ready",
                false,
                "Suspended",
                "sync is suspended (spec.suspend)",
            );
            pass.request_handled();
            self.write_status(pass.object, pass.take_status()).await?;
            return Ok(Action::await_change());
        }
        match fetch::local_path(&pass.source.spec.url) {
            Some(p) => self.watch(pass.key, &p),
            None => self.unwatch(pass.key),
        }
        self.dependencies_ready(pass)?;
        pass.post = self.post_build(pass).await?;
        let fingerprint = pass.post.fingerprint();
        // What the last applied commit declared, if it was applied with this spec and these
        // variables (a changed ConfigMap of `substituteFrom` reads every file again).
        let last = pass.last();
        // Applied with other variables or another target namespace: the same commit gives
        // other objects, applied again (not drift).
        let rebased = self
            .declared
            .get(pass.key)
            .is_some_and(|d| d.fingerprint != fingerprint);
        let base = self.declared.get(pass.key).filter(|d| {
            d.generation == pass.source.metadata.generation
                && d.fingerprint == fingerprint
                && last.last_applied_commit.as_deref() == Some(d.index.commit.as_str())
        });
        let known = base.as_ref().map(|d| d.index.clone());
        let Fetched {
            commit,
            entries,
            files,
        } = self.fetch_commit(pass, known).await?;
        pass.status["lastAttemptedCommit"] = json!(commit);
        let sync_request = pass.sync_request();
        let requested = sync_request.is_some() && sync_request != last.last_handled_sync_request;
        if requested {
            pass.request_handled();
        }
        let loaded = load_commit(files, &commit, pass.key, &pass.post)
            .map_err(|errors| invalid_manifests(&commit, &errors))?;
        match base {
            // The commit applied and looked at within the interval: nothing to do but health.
            Some(base)
                if base.index.commit == commit
                    && !requested
                    && base.checked.elapsed() < pass.interval =>
            {
                let drift = last.drift.clone();
                let count = last.drift_count.map_or(drift.len(), |c| c as usize);
                self.record_applied(pass, &commit, &base.index, drift, count)
                    .await
            }
            // A new commit: apply what changed since the last one.
            Some(base) if base.index.commit != commit && !requested => {
                let (index, change) = base
                    .index
                    .next(&commit, &entries, loaded)
                    .map_err(|errors| invalid_manifests(&commit, &errors))?;
                self.apply_change(pass, &commit, &base.index, index, change)
                    .await
            }
            // The whole commit: after a restart or a spec change, to look for drift, or asked.
            base => {
                let index = match base {
                    Some(base) if base.index.commit == commit => base.index,
                    Some(base) => base
                        .index
                        .next(&commit, &entries, loaded)
                        .map(|(i, _)| Arc::new(i))
                        .map_err(|errors| invalid_manifests(&commit, &errors))?,
                    None => Index::full(&commit, &entries, loaded)
                        .map(Arc::new)
                        .map_err(|errors| invalid_manifests(&commit, &errors))?,
                };
                self.sync(pass, &commit, index, requested, rebased).await
            }
        }
    }

    /// Fetches the source's commit with the credentials of its Secret.
    /// Blobs `known` already holds are listed, not read.
    async fn fetch_commit(
        &self,
        pass: &Pass<'_>,
        known: Option<Arc<Index>>,
    ) -> Result<Fetched, Stop> {
        let spec = &pass.source.spec;
        let credentials = match &spec.secret_ref {
            Some(r) => match self.credentials(pass.namespace, &r.name).await {
                Ok(c) => Some(c),
                Err(ReconcileError::Invalid(message)) => {
                    return Err(Stop::Status {
                        reason: "SecretMissing",
                        message,
                        stalled: true,
                        retry: Retry::Backoff,
                    });
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let (url, git_ref, folder) = (spec.url.clone(), spec.git_ref.clone(), spec.path.clone());
        let mirror = self
            .mirrors
            .join(format!("{}_{}", pass.namespace, pass.name));
        let fetched = tokio::task::spawn_blocking(move || {
            fetch::fetch(
                &url,
                git_ref.as_deref(),
                folder.as_deref(),
                credentials.as_ref(),
                &mirror,
                &|path, blob| {
                    known
                        .as_ref()
                        .and_then(|k| k.files.get(path))
                        .is_some_and(|f| f.blob == blob)
                },
            )
        })
        .await
        .map_err(|e| ReconcileError::Invalid(format!("the fetch task failed: {e}")))?;
        fetched.map_err(|e| Stop::Status {
            reason: match e {
                FetchError::NoPath { .. } | FetchError::Ref { .. } => "NotFound",
                FetchError::HostKey { .. } | FetchError::NoKnownHosts { .. } => {
                    "HostKeyNotVerified"
                }
                _ => "FetchFailed",
            },
            message: e.to_string(),
            stalled: false,
            retry: Retry::Backoff,
        })
    }

    /// Applies a new commit's change over the last applied one: the objects that changed
    /// and, with prune, the removal of those that left, in one [`Delta`] batch (dry-run first:
    /// objects that belong to someone else hold the commit).
    async fn apply_change(
        &self,
        pass: &mut Pass<'_>,
        commit: &str,
        base: &Index,
        index: Index,
        change: Change,
    ) -> Result<Action, Stop> {
        let state = self.api.state();
        let (namespace, name) = (pass.namespace, pass.name);
        let mut member_kinds = index.member_kinds();
        if !pass.source.spec.prune {
            // Members left in place stay in the set: the parent keeps listing their kinds.
            member_kinds.extend(change.removed.iter().cloned());
        }
        let delta = Delta {
            removed: change.removed,
            members_before: base.object_count(),
            member_kinds,
        };
        let mut objects = change.changed;
        let dry = source_dry_run(
            state,
            namespace,
            name,
            &pass.source,
            &mut objects,
            Some(&delta),
        )
        .await
        .map_err(|r| refused(commit, r))?;
        let foreign = foreign_objects(&dry, namespace, name);
        if !foreign.is_empty() {
            return Err(not_owned(commit, &foreign));
        }
        drop(dry);
        let changed = objects.len();
        let applied = source_batch(
            state,
            namespace,
            name,
            &pass.source,
            objects,
            false,
            Some(delta),
        )
        .await
        .map_err(|r| refused(commit, r))?;
        tracing::info!(source = pass.key, commit = %commit, changed,
            pruned = applied.results.iter().filter(|r| r.outcome == Outcome::Pruned).count(),
            objects = index.object_count(), "applied a commit's changes");
        let index = Arc::new(index);
        self.declared.remember(
            pass.key,
            Declared {
                index: index.clone(),
                generation: pass.source.metadata.generation,
                fingerprint: pass.post.fingerprint(),
                checked: Instant::now(),
            },
        );
        self.record_applied(pass, commit, &index, Vec::new(), 0)
            .await
    }

    /// Dry-runs the whole commit; applies it when it is new (or `rebased`: its variables or
    /// target namespace changed), asked for, or has drift to heal;
    /// records what was applied.
    async fn sync(
        &self,
        pass: &mut Pass<'_>,
        commit: &str,
        index: Arc<Index>,
        requested: bool,
        rebased: bool,
    ) -> Result<Action, Stop> {
        let last = pass.last();
        let new_commit = last.last_applied_commit.as_deref() != Some(commit);
        let mut objects: Vec<Value> = index.objects().cloned().collect();
        let state = self.api.state();
        let (namespace, name) = (pass.namespace, pass.name);
        let dry = source_dry_run(state, namespace, name, &pass.source, &mut objects, None)
            .await
            .map_err(|r| refused(commit, r))?;
        let foreign = foreign_objects(&dry, namespace, name);
        if !foreign.is_empty() {
            return Err(not_owned(commit, &foreign));
        }
        // What differs after a change of the variables is that change, not drift.
        let drift = if new_commit || rebased {
            Vec::new()
        } else {
            drift_of(&dry)
        };
        let heal = !drift.is_empty() && pass.source.spec.self_heal;
        let writers = overruled_writers(&dry);
        drop(dry);
        if new_commit || rebased || requested || heal {
            let applied = source_batch(state, namespace, name, &pass.source, objects, false, None)
                .await
                .map_err(|r| refused(commit, r))?;
            if new_commit {
                tracing::info!(source = pass.key, commit = %commit, objects = applied.results.len(), "applied a commit");
            } else if rebased {
                tracing::info!(source = pass.key, commit = %commit, objects = applied.results.len(),
                    "applied a commit again: its variables or target namespace changed");
            }
        }
        if heal {
            let by = if writers.is_empty() {
                String::new()
            } else {
                format!(" (overruled: {})", writers.join(", "))
            };
            let message = format!(
                "reverted changes made outside git to {}{by}",
                listed(&drift)
            );
            tracing::info!(source = pass.key, "self-heal: {message}");
            self.api
                .event(pass.object, "Warning", "SelfHealed", &message)
                .await;
        }
        self.declared.remember(
            pass.key,
            Declared {
                index: index.clone(),
                generation: pass.source.metadata.generation,
                fingerprint: pass.post.fingerprint(),
                checked: Instant::now(),
            },
        );
        let in_sync = drift.is_empty() || heal;
        let drift = if in_sync { Vec::new() } else { drift };
        let count = drift.len();
        self.record_applied(pass, commit, &index, drift, count)
            .await
    }

    /// Writes what a commit left: how many objects it holds, their health, and whether the
    /// cluster matches the commit (`drift` empty) or has changed outside git (`count` objects,
    /// at most [`MAX_LISTED`] of them in `drift`).
    async fn record_applied(
        &self,
        pass: &mut Pass<'_>,
        commit: &str,
        index: &Index,
        mut drift: Vec<String>,
        count: usize,
    ) -> Result<Action, Stop> {
        let readiness = self.readiness(pass, commit, index).await?;
        let (health, timed_out) = (readiness.health, readiness.timed_out());
        pass.status["lastAppliedCommit"] = json!(commit);
        pass.status["objects"] = json!(index.object_count());
        pass.status["health"] = json!(health);
        let conditions = &mut pass.conditions;
        conditions.set("Stalled", false, "Applied", "");
        if drift.is_empty() {
            conditions.set(
                "Synced",
                true,
                "Synced",
                &format!("the cluster matches commit {}", short(commit)),
            );
        } else {
            conditions.set(
                "Synced",
                false,
                "OutOfSync",
                &format!(
                    "changed outside git since commit {}: {}",
                    short(commit),
                    listed(&drift)
                ),
            );
        }
        drift.truncate(MAX_LISTED);
        pass.status["drift"] = json!(drift);
        pass.status["driftCount"] = if count == 0 {
            Value::Null
        } else {
            json!(count)
        };
        match health {
            _ if timed_out => {
                conditions.set("Ready", false, "HealthCheckFailed", &readiness.failure())
            }
            "Degraded" => conditions.set("Ready", false, "Degraded", &readiness.message),
            "Progressing" => conditions.set("Ready", false, "Progressing", &readiness.message),
            _ => conditions.set(
                "Ready",
                true,
                "Applied",
                &format!("commit {} applied", short(commit)),
            ),
        }
        self.write_status(pass.object, pass.take_status()).await?;
        if let Some(waited) = readiness.waited
            && !timed_out
        {
            // Look again soon enough to turn HealthCheckFailed on time.
            let left = readiness
                .timeout
                .saturating_sub(waited)
                .max(Duration::from_millis(100));
            return Ok(Action::requeue(PROGRESS_RECHECK.min(left)));
        }
        if health == "Progressing" {
            return Ok(Action::requeue(PROGRESS_RECHECK.min(pass.interval)));
        }
        Ok(Action::requeue(pass.interval))
    }
}

/// The commit's manifests have problems: nothing is applied.
fn invalid_manifests(commit: &str, errors: &[String]) -> Stop {
    Stop::stalled(
        "InvalidManifests",
        format!(
            "commit {} not applied: {} problem{} in the manifests: {}",
            short(commit),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            listed(errors)
        ),
    )
}

/// Objects of the commit exist and belong to someone else: nothing is applied.
fn not_owned(commit: &str, foreign: &[String]) -> Stop {
    Stop::stalled(
        "NotOwned",
        format!(
            "commit {} not applied: these objects exist and do not belong to this source, so \
             they are left alone: {}; delete them or remove them from the repository",
            short(commit),
            listed(foreign)
        ),
    )
}
