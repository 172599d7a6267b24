//! CustomResourceDefinitions served: a CRD in the store puts its resource in the registry
//! ([`super::resources`]) at every served version, so custom resources go through the one
//! generic storage path (`dispatch` → `handlers`, `list`, `watch`, `delete`), pruned,
//! defaulted and validated on write by [`crate::manifest::crd`], printed with their
//! `additionalPrinterColumns` and described in OpenAPI for `kubectl explain`.
//!
//! What is served follows the store, not one write path: [`sync`] reads every CRD and makes
//! the registry match (it runs after each CRD write through this server, so a CRD is served
//! when its create returns, and on every change a store watch sees, [`follow`], so a CRD
//! another master wrote is served too). A CRD that leaves the store takes its custom
//! resources with it. A batch that holds CRDs and their custom resources registers the CRDs
//! first ([`establish`]), so both go in its one transaction.
//!
//! The registry is one per process, and several servers may run in one process (tests build
//! routers side by side). Each server is an owner ([`Served`]); a definition stays registered
//! while any owner has it in its store, and a server dropping it only drops its claim. Two
//! in-process stores that define the same group and plural differently share one definition
//! (the last one read), and a server routes a kind another in-process server's store defines
//! (its own store holds none of those objects): only tests run servers side by side.

mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use self::registry::{NEXT_OWNER, register, storage_key, unregister};
pub use self::registry::{catalog, definition, is_custom, resource_of};
use super::SharedState;
use super::resources::{self, Resource};
use super::status::{ApiError, Cause};
use crate::cluster::store::{Op, Txn};
use crate::manifest::crd::{self, Definition, FieldError};

/// What one server registered, by CRD name.
pub struct Served {
    owner: u64,
    registered: tokio::sync::Mutex<BTreeMap<String, Registration>>,
    /// Batches between [`establish`] and [`Establishing::settle`]: while any runs, [`sync`]
    /// serves what is new but neither takes away nor replaces what it serves, so no kind a
    /// batch planned with changes under it (a CRD deleted meanwhile goes, with its custom
    /// resources, when the batch settles).
    batches: AtomicUsize,
}

struct Registration {
    /// The storage key segment of its resource.
    key: String,
    /// The CRD's mod revision when registered; `None` before the store holds it (a batch's
    /// CRD registered ahead of its transaction).
    revision: Option<i64>,
}

impl Default for Served {
    fn default() -> Self {
        Served {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            registered: Default::default(),
            batches: AtomicUsize::new(0),
        }
    }
}

impl Drop for Served {
    /// A server that goes away gives up its claims (an in-process server of a test).
    fn drop(&mut self) {
        let keys: Vec<String> = self
            .registered
            .get_mut()
            .values()
            .map(|r| r.key.clone())
            .collect();
        for key in keys {
            unregister(self.owner, &key);
        }
    }
}

fn crd_resource() -> &'static Resource {
    resources::by_kind(crd::API_VERSION, crd::KIND).expect("CustomResourceDefinitions are served")
}

/// Makes what this server serves match the CRDs in its store: registers new and changed
/// ones, and for each one gone deletes its custom resources and unregisters it. Returns the
/// store revision it read at.
pub async fn sync(state: &SharedState) -> Result<i64, ApiError> {
    let mut registered = state.crds.registered.lock().await;
    let page = state
        .storage
        .list(crd_resource(), None, 0, None, None)
        .await?;
    let mut live: BTreeMap<String, (Arc<Definition>, i64)> = BTreeMap::new();
    for stored in &page.items {
        let object = stored.decode()?;
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        match Definition::parse(&object) {
            Ok(d) => {
                live.insert(d.name.clone(), (Arc::new(d), stored.mod_revision));
            }
            Err(errors) => {
                tracing::warn!(key = %stored.key, errors = errors.len(), first = %errors[0], "a stored CustomResourceDefinition does not pass the checks; not served");
            }
        }
    }
    let gone: Vec<String> = registered
        .keys()
        .filter(|name| !live.contains_key(*name))
        .cloned()
        .collect();
    let batches = state.crds.batches.load(Ordering::Acquire);
    for name in gone {
        if batches > 0 {
            continue;
        }
        let Some(was) = registered.remove(&name) else {
            continue;
        };
        if was.revision.is_some() {
            delete_custom_resources(state, &was.key).await?;
        }
        unregister(state.crds.owner, &was.key);
        tracing::info!(crd = %name, "stopped serving a custom resource");
    }
    for (name, (d, revision)) in live {
        if let Some(was) = registered.get(&name) {
            // While a batch runs, what it registered ahead stays as it registered it.
            if was.revision == Some(revision) || batches > 0 {
                continue;
            }
            if was.key != storage_key(&d) {
                unregister(state.crds.owner, &was.key);
            }
        }
        let key = storage_key(&d);
        tracing::info!(crd = %name, versions = ?d.served_names(), "serving a custom resource");
        register(state.crds.owner, d);
        registered.insert(
            name,
            Registration {
                key,
                revision: Some(revision),
            },
        );
    }
    Ok(page.revision)
}

/// Deletes every object stored under `/registry/<key>/` (a deleted CRD's custom resources),
/// one key at a time so no store limit on a transaction's size is reached.
async fn delete_custom_resources(state: &SharedState, key: &str) -> Result<(), ApiError> {
    let prefix = format!("/registry/{key}/");
    let listed = state
        .storage
        .store
        .list(&prefix, Default::default())
        .await?;
    let count = listed.items.len();
    for kv in listed.items {
        state
            .storage
            .store
            .txn(Txn::new().then([Op::Delete { key: kv.key }]))
            .await?;
    }
    if count > 0 {
        tracing::info!(resource = %key, count, "deleted the custom resources of a deleted CustomResourceDefinition");
    }
    Ok(())
}

/// Registers the valid CRDs among a batch's objects ahead of its transaction, so the planner
/// knows their kinds and the custom resources of the same batch are admitted against them.
/// Every batch calls it, CRDs or not, and settles what it returns once done, which keeps
/// what the store holds and drops the rest (see `Served::batches`).
pub async fn establish(state: &SharedState, objects: &[Value]) -> Establishing {
    let mut registered = state.crds.registered.lock().await;
    state.crds.batches.fetch_add(1, Ordering::AcqRel);
    let running = Establishing {
        state: state.clone(),
        settled: false,
    };
    for object in objects.iter().filter(|o| crd::is_definition(o)) {
        let Ok(d) = Definition::parse(object) else {
            continue;
        };
        if builtin_conflict(&d).is_some() {
            continue;
        }
        let key = storage_key(&d);
        let name = d.name.clone();
        let was_stored = registered
            .get(&name)
            .is_some_and(|was| was.revision.is_some());
        if let Some(was) = registered.get(&name)
            && was.key != key
        {
            unregister(state.crds.owner, &was.key);
        }
        register(state.crds.owner, Arc::new(d));
        // A revision no store write has (`-1`) or none: either way `sync` reads it again; one
        // the batch did not store is dropped, its custom resources deleted only if an earlier
        // write had stored it.
        registered.insert(
            name.clone(),
            Registration {
                key,
                revision: was_stored.then_some(-1),
            },
        );
    }
    running
}

/// A batch between [`establish`] and [`Establishing::settle`]. Dropped unsettled (a request
/// whose client went away), it settles in a task of its own.
pub struct Establishing {
    state: SharedState,
    settled: bool,
}

impl Establishing {
    /// Ends the batch's part in what is served, then [`sync`]s: what is served follows the
    /// store again.
    pub async fn settle(mut self) {
        self.settled = true;
        self.state.crds.batches.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = sync(&self.state).await {
            tracing::warn!(error = %e, "cannot read the CustomResourceDefinitions after a batch");
        }
    }
}

impl Drop for Establishing {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.state.crds.batches.fetch_sub(1, Ordering::AcqRel);
        let state = self.state.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = sync(&state).await {
                    tracing::warn!(error = %e, "cannot read the CustomResourceDefinitions after a batch");
                }
            });
        }
    }
}

/// Follows the CRDs in the store while the server runs: [`sync`] at start and after every
/// change a watch sees (another master's writes included), with bounded backoff on errors.
pub async fn follow(state: SharedState) {
    let prefix = crd_resource().prefix(None);
    let mut closing = state.closing.subscribe();
    let mut backoff = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(10);
    loop {
        if *closing.borrow() {
            return;
        }
        let watched = match sync(&state).await {
            Ok(revision) => state.storage.store.watch(&prefix, revision).await.ok(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the CustomResourceDefinitions");
                None
            }
        };
        if let Some(mut stream) = watched {
            backoff = Duration::from_millis(200);
            loop {
                tokio::select! {
                    _ = closing.changed() => return,
                    next = stream.next() => match next {
                        Some(Ok(_)) => {
                            if let Err(e) = sync(&state).await {
                                tracing::warn!(error = %e, "cannot read the CustomResourceDefinitions");
                                break;
                            }
                        }
                        _ => break,
                    },
                }
            }
        }
        tokio::select! {
            _ = closing.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A built-in resource the definition would shadow, if any.
fn builtin_conflict(d: &Definition) -> Option<&'static Resource> {
    d.versions.iter().find_map(|v| {
        resources::by_plural(&d.group, &v.name, &d.names.plural)
            .or_else(|| resources::by_kind(&d.api_version(&v.name), &d.names.kind))
            .filter(|r| !is_custom(r))
    })
}

/// Admission of a CRD the API writes (after its checks passed): refuses one that would
/// shadow a built-in resource, and sets the status the apiextensions controllers would
/// (`acceptedNames`, `NamesAccepted`, `Established`, `storedVersions`). No-op for any other
/// kind.
pub fn accept(r: &Resource, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    if r.group != "apiextensions.k8s.io" || r.kind != crd::KIND {
        return Ok(());
    }
    let Ok(d) = Definition::parse(object) else {
        return Ok(());
    };
    if let Some(builtin) = builtin_conflict(&d) {
        return Err(ApiError::Invalid {
            kind: crd::KIND.into(),
            group: "apiextensions.k8s.io".into(),
            name: d.name.clone(),
            causes: vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {:?}: {} is served by the API server itself",
                    d.names.plural,
                    builtin.qualified()
                ),
                field: "spec.names.plural".into(),
            }],
        });
    }
    let old_status = old.and_then(|o| o.get("status"));
    let mut stored: BTreeSet<String> = old_status
        .and_then(|s| s.get("storedVersions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    stored.insert(d.storage().name.clone());
    let since = |kind: &str| {
        old_status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == kind && c["status"] == "True")
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()))
    };
    let n = &d.names;
    object["status"] = json!({
        "acceptedNames": {
            "plural": n.plural, "singular": n.singular, "kind": n.kind, "listKind": n.list_kind,
            "shortNames": n.short_names, "categories": n.categories,
        },
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted",
             "lastTransitionTime": since("Established")},
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// A custom resource's write, as the API server does it: prunes the fields its schema does
/// not specify (refused instead when the client asked for `fieldValidation=Strict`, as
/// kubectl does by default) and fills in the schema's defaults.
pub fn prepare(
    d: &Definition,
    r: &Resource,
    object: &mut Value,
    field_validation: Option<&str>,
) -> Result<(), ApiError> {
    let Some(version) = d.served(r.version) else {
        return Ok(());
    };
    let pruned = d.prepare(version, object);
    if field_validation == Some("Strict") && !pruned.is_empty() {
        let unknown: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            unknown.join(", ")
        )));
    }
    Ok(())
}

/// Checks a prepared custom resource against its version's schema: every error a cause of
/// one 422, as Kubernetes words them.
pub fn validate(d: &Definition, r: &Resource, object: &Value) -> Result<(), ApiError> {
    let Some(version) = d.served(r.version) else {
        return Ok(());
    };
    let errors: Vec<FieldError> = d.validate(version, object);
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: r.kind.into(),
        group: r.group.into(),
        name: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        causes: errors
            .iter()
            .map(|e| Cause {
                reason: e.kind.reason().into(),
                message: e.message(),
                field: e.field.to_string(),
            })
            .collect(),
    })
}

/// Where a resource's Scale reads and writes: JSON pointers of spec replicas, status
/// replicas and the label selector (a custom resource's from its `scale` subresource).
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub selector: Option<String>,
}

/// `.spec.replicas` → `/spec/replicas`.
fn pointer(json_path: &str) -> String {
    json_path
        .trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut out, key| {
            out.push('/');
            out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            out
        })
}

/// The Scale paths of a custom resource; `None` for built-in resources.
pub fn scale_paths(r: &Resource) -> Option<ScalePaths> {
    let d = definition(r)?;
    let scale = d.served(r.version)?.scale.as_ref()?;
    Some(ScalePaths {
        spec_replicas: pointer(&scale.spec_replicas_path),
        status_replicas: pointer(&scale.status_replicas_path),
        selector: scale.label_selector_path.as_deref().map(pointer),
    })
}

/// Sets the value at a JSON pointer, making the objects on the way.
pub fn set_at(v: &mut Value, pointer: &str, value: Value) {
    let mut at = v;
    let keys: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let map = at.as_object_mut().expect("made an object");
        if i + 1 == keys.len() {
            map.insert(key.clone(), value);
            return;
        }
        at = map.entry(key.clone()).or_insert_with(|| json!({}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::crds::registry::tests::widget_crd;

    #[test]
    fn a_crd_gets_its_status_and_may_not_shadow_a_built_in_resource() {
        let r = crd_resource();
        let mut object = widget_crd("status-test.berth.dev");
        accept(r, &mut object, None).unwrap();
        assert_eq!(object["status"]["acceptedNames"]["kind"], "Widget");
        assert_eq!(object["status"]["conditions"][1]["type"], "Established");
        assert_eq!(object["status"]["storedVersions"], json!(["v1"]));
        let mut events = widget_crd("events.k8s.io");
        events["metadata"]["name"] = json!("events.events.k8s.io");
        events["spec"]["names"] = json!({"plural": "events", "singular": "event", "kind": "Event"});
        let Err(ApiError::Invalid { causes, .. }) = accept(r, &mut events, None) else {
            panic!("a CRD over events.k8s.io/v1 events is refused");
        };
        assert_eq!(causes[0].field, "spec.names.plural");
    }

    #[test]
    fn scale_paths_become_pointers_and_values_are_set_through_them() {
        assert_eq!(pointer(".spec.size"), "/spec/size");
        let mut v = json!({"spec": {}});
        set_at(&mut v, "/spec/deep/size", json!(3));
        assert_eq!(v, json!({"spec": {"deep": {"size": 3}}}));
    }
}
