//! One reconcile of a GitSource, step by step: fetch the commit, load and validate its
//! manifests, dry-run them (which finds objects owned by someone else, drift and who made it),
//! apply when there is a new commit, a sync request or drift to heal, then roll up health
//! and write the status. A step that cannot go on records why in the status and stops; a sync
//! asked for (`berth.dev/sync-requested-at`) is marked handled (`lastHandledSyncRequest`)
//! either way.

use std::time::Duration;

use serde_json::{Value, json};

use super::fetch::{self, FetchError, Fetched};
use super::state::{Conditions, drift_of, drifted_fields, writers_of};
use super::{
    DEFAULT_INTERVAL, FIELD_MANAGER, GitSyncController, PROGRESS_RECHECK, SOURCE_ANNOTATION,
    SOURCE_COMMIT_ANNOTATION, SOURCE_LINE_ANNOTATION, SOURCE_PATH_ANNOTATION, applyset_name,
    health, parse_interval, short, source_batch, source_dry_run,
};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::BatchRefusal;
use crate::apply::batch::{BatchResponse, Outcome};
use crate::cluster::controllers::cache::split_key;
use crate::cluster::controllers::runtime::{Action, ReconcileError, Reconciler};
use crate::manifest::gitsource::{GitSource, GitSourceStatus, SYNC_REQUESTED_ANNOTATION};
use crate::manifest::{Input, Loaded, SetOptions, Severity, ValidateOptions, load_set};

/// One reconcile's view of a source: the object as stored, its spec, and the status being
/// built from the one it has.
struct Pass<'a> {
    key: &'a str,
    object: &'a Value,
    source: GitSource,
    namespace: &'a str,
    name: &'a str,
    interval: Duration,
    conditions: Conditions,
    status: Value,
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
enum Retry {
    /// After the source's interval: nothing will change before a new commit or edit.
    AfterInterval,
    /// With the controller's back-off, as after any error.
    Backoff,
}

/// Why a reconcile stops before the end.
enum Stop {
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
    fn stalled(reason: &'static str, message: String) -> Stop {
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
        "inventory": status.inventory,
        "health": status.health,
        "lastHandledSyncRequest": status.last_handled_sync_request,
        "drift": status.drift,
    })
}

/// Loads and validates the commit's manifests with the one loader; marks each object with
/// where it came from. `Err`: `file:line:col: message` for each error, Secret data left out.
fn load_commit(
    files: Vec<Input>,
    commit: &str,
    source_key: &str,
) -> Result<Vec<Value>, Vec<String>> {
    let (objects, report) = load_set(files, SetOptions::keep(ValidateOptions::default()));
    if report.error_count() > 0 {
        return Err(report
            .problems_without_secret_values()
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| format!("{}: {}", p.location(), p.message()))
            .collect());
    }
    let annotate = |o: Loaded| {
        let mut value = o.value;
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(SOURCE_ANNOTATION.into(), json!(source_key));
                a.insert(SOURCE_COMMIT_ANNOTATION.into(), json!(commit));
                a.insert(SOURCE_PATH_ANNOTATION.into(), json!(o.path));
                a.insert(SOURCE_LINE_ANNOTATION.into(), json!(o.line.to_string()));
            }
        }
        value
    };
    Ok(objects.into_iter().map(annotate).collect())
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

/// The objects a batch applied (pruned ones left out), as the status lists them.
fn inventory_of(applied: &BatchResponse) -> Vec<Value> {
    applied
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pruned)
        .map(|r| {
            json!({"apiVersion": r.api_version, "kind": r.kind,
                "namespace": r.namespace, "name": r.name})
        })
        .collect()
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
                would_go.join(", ")
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
                return Ok(Action::await_change());
            }
        };
        let (namespace, name) = split_key(key);
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
        let Fetched { commit, files } = self.fetch_commit(pass).await?;
        pass.status["lastAttemptedCommit"] = json!(commit);
        let objects = load_commit(files, &commit, pass.key).map_err(|errors| {
            Stop::stalled(
                "InvalidManifests",
                format!(
                    "commit {} not applied: {} problem{} in the manifests: {}",
                    short(&commit),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" },
                    errors.join("; ")
                ),
            )
        })?;
        self.sync(pass, &commit, objects).await
    }

    /// Fetches the source's commit with the credentials of its Secret.
    async fn fetch_commit(&self, pass: &Pass<'_>) -> Result<Fetched, Stop> {
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

    /// Dry-runs the commit's objects; applies them when there is a new commit, a sync request
    /// or drift to heal; records what was applied.
    async fn sync(
        &self,
        pass: &mut Pass<'_>,
        commit: &str,
        mut objects: Vec<Value>,
    ) -> Result<Action, Stop> {
        let last = pass.last();
        let sync_request = pass.sync_request();
        let requested = sync_request.is_some() && sync_request != last.last_handled_sync_request;
        let new_commit = last.last_applied_commit.as_deref() != Some(commit);
        let declared = objects.clone();
        let state = self.api.state();
        let (namespace, name) = (pass.namespace, pass.name);
        let dry = source_dry_run(state, namespace, name, &pass.source, &mut objects)
            .await
            .map_err(|r| refused(commit, r))?;
        let foreign = foreign_objects(&dry, namespace, name);
        if !foreign.is_empty() {
            return Err(Stop::stalled(
                "NotOwned",
                format!(
                    "commit {} not applied: these objects exist and do not belong to this \
                     source, so they are left alone: {}; delete them or remove them from the \
                     repository",
                    short(commit),
                    foreign.join(", ")
                ),
            ));
        }
        let drift = if new_commit {
            Vec::new()
        } else {
            drift_of(&dry)
        };
        let heal = !drift.is_empty() && pass.source.spec.self_heal;
        let writers = overruled_writers(&dry);
        let applied = if new_commit || requested || heal {
            source_batch(state, namespace, name, &pass.source, objects, false)
                .await
                .map_err(|r| refused(commit, r))?
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
            tracing::info!(source = pass.key, "self-heal: {message}");
            self.api
                .event(pass.object, "Warning", "SelfHealed", &message)
                .await;
        }
        if new_commit {
            tracing::info!(source = pass.key, commit = %commit, objects = applied.results.len(), "applied a commit");
        }
        self.declared.remember(pass.key, commit, declared);
        if requested {
            pass.request_handled();
        }
        let in_sync = drift.is_empty() || heal;
        self.record_applied(
            pass,
            commit,
            &applied,
            if in_sync { Vec::new() } else { drift },
        )
        .await
    }

    /// Writes what a commit's batch left: the inventory, its health, and whether the cluster
    /// matches the commit (`drift` empty) or has changed outside git.
    async fn record_applied(
        &self,
        pass: &mut Pass<'_>,
        commit: &str,
        applied: &BatchResponse,
        drift: Vec<String>,
    ) -> Result<Action, Stop> {
        let inventory = inventory_of(applied);
        let (health, health_message) = health::roll_up(&inventory, &self.caches);
        pass.status["lastAppliedCommit"] = json!(commit);
        pass.status["inventory"] = json!(inventory);
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
                    drift.join("; ")
                ),
            );
        }
        pass.status["drift"] = json!(drift);
        match health {
            "Degraded" => conditions.set("Ready", false, "Degraded", &health_message),
            "Progressing" => conditions.set("Ready", false, "Progressing", &health_message),
            _ => conditions.set(
                "Ready",
                true,
                "Applied",
                &format!("commit {} applied", short(commit)),
            ),
        }
        self.write_status(pass.object, pass.take_status()).await?;
        if health == "Progressing" {
            return Ok(Action::requeue(PROGRESS_RECHECK.min(pass.interval)));
        }
        Ok(Action::requeue(pass.interval))
    }
}
