//! The diff engine: desired objects against live ones, as a structured [`ApplyPlan`]
//! (create / update / delete / unchanged), and its rendering for people and machines.
//!
//! Everything here is pure: values in, values and text out. `berth diff` calls [`plan`] and
//! renders it: between two git revisions, against a cluster (`-f`, where the pairs come from
//! the API server's dry-run batch) and for a GitSource's drift (`--source`). Applying does
//! not go through this plan: `berth apply`, `berth up` and git sync are planned by the apply
//! planner, `crate::apply::plan`, on the server. Secret values are masked in every rendering
//! and in `Debug`; see [`mask`].

pub mod mask;
pub mod normalize;
pub mod render;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::manifest::kinds::KINDS;

pub use render::{Format, RenderOptions, render};

/// Identity of an object across both sides: API group, kind, namespace and name. The version
/// is left out: `apps/v1` and `apps/v1beta2` name the same object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `""` for the core group.
    pub group: String,
    pub kind: String,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    /// `Deployment shop/web`, as `berth validate` names objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What applying the desired state would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Create,
    Update,
    /// Pruned: live, no longer desired.
    Delete,
    Unchanged,
}

impl Action {
    /// `created`, `changed`, `deleted`, `unchanged`.
    pub fn past_tense(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Update => "changed",
            Action::Delete => "deleted",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One object of the plan, both sides normalised (see [`normalize`]).
#[derive(Clone, PartialEq)]
pub struct PlanEntry {
    pub key: ObjectKey,
    /// The desired side's `apiVersion`, else the live side's.
    pub api_version: String,
    pub action: Action,
    /// The live object, normalised; `None` for a create.
    pub before: Option<Value>,
    /// The desired object, normalised; `None` for a delete.
    pub after: Option<Value>,
    /// Where the object is in the `desired` slice given to [`plan`], to apply it as written.
    pub desired_index: Option<usize>,
    /// Where the object is in the `live` slice given to [`plan`].
    pub live_index: Option<usize>,
}

impl PlanEntry {
    /// Both sides with Secret values replaced by `***` markers: the only form that is shown.
    pub fn masked(&self) -> (Option<Value>, Option<Value>) {
        let mut before = self.before.clone();
        let mut after = self.after.clone();
        mask::mask_pair(before.as_mut(), after.as_mut());
        (before, after)
    }

    /// The fields that differ, as `spec.template.spec.containers[0].image`.
    pub fn changed_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.action == Action::Update
            && let (Some(b), Some(a)) = (&self.before, &self.after)
        {
            changed_fields(b, a, String::new(), &mut out);
        }
        out
    }
}

/// Never prints Secret values, so a plan can be logged.
impl fmt::Debug for PlanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, after) = self.masked();
        f.debug_struct("PlanEntry")
            .field("key", &self.key)
            .field("api_version", &self.api_version)
            .field("action", &self.action)
            .field("before", &before)
            .field("after", &after)
            .field("desired_index", &self.desired_index)
            .field("live_index", &self.live_index)
            .finish()
    }
}

fn changed_fields(before: &Value, after: &Value, path: String, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (b.get(key), a.get(key)) {
                    (Some(x), Some(y)) => changed_fields(x, y, child, out),
                    _ => out.push(child),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (x, y)) in b.iter().zip(a).enumerate() {
                changed_fields(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ if before != after => out.push(path),
        _ => {}
    }
}

/// How many objects each action touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Counts {
    fn add(&mut self, action: Action) {
        match action {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Delete => self.delete += 1,
            Action::Unchanged => self.unchanged += 1,
        }
    }
}

/// What applying the desired objects would do, object by object, sorted by [`ObjectKey`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyPlan {
    pub entries: Vec<PlanEntry>,
}

impl ApplyPlan {
    /// Whether anything would change.
    pub fn has_changes(&self) -> bool {
        self.entries.iter().any(|e| e.action != Action::Unchanged)
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        self.entries.iter().for_each(|e| counts.add(e.action));
        counts
    }

    /// Counts per kind, kinds in alphabetical order.
    pub fn counts_by_kind(&self) -> BTreeMap<&str, Counts> {
        let mut out: BTreeMap<&str, Counts> = BTreeMap::new();
        for e in &self.entries {
            out.entry(e.key.kind.as_str()).or_default().add(e.action);
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The namespace of namespaced objects that name none (kubectl's `-n`).
    pub default_namespace: String,
    /// Live objects that are not desired become [`Action::Delete`]; otherwise they are left out.
    pub prune: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            default_namespace: "default".into(),
            prune: false,
        }
    }
}

/// Which side of the plan an object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Desired,
    Live,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Desired => "desired",
            Side::Live => "live",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "{side} object #{index} has no {field}; every object needs apiVersion, kind and metadata.name"
    )]
    MissingIdentity {
        side: Side,
        index: usize,
        field: &'static str,
    },
    #[error("{side} objects name {key} twice (#{first} and #{second})")]
    Duplicate {
        side: Side,
        key: ObjectKey,
        first: usize,
        second: usize,
    },
}

/// Whether a kind is namespaced; kinds berth does not know are taken to be (as most are).
fn namespaced(group: &str, kind: &str) -> bool {
    KINDS
        .iter()
        .find(|k| k.group() == group && k.kind == kind)
        .is_none_or(|k| k.namespaced)
}

/// The identity of one object.
pub fn object_key(
    object: &Value,
    default_namespace: &str,
    side: Side,
    index: usize,
) -> Result<ObjectKey, PlanError> {
    let missing = |field| PlanError::MissingIdentity { side, index, field };
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str);
    let api_version = text("/apiVersion").ok_or_else(|| missing("apiVersion"))?;
    let kind = text("/kind").ok_or_else(|| missing("kind"))?;
    let name = text("/metadata/name").ok_or_else(|| missing("metadata.name"))?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let namespace = namespaced(group, kind).then(|| {
        text("/metadata/namespace")
            .unwrap_or(default_namespace)
            .to_string()
    });
    Ok(ObjectKey {
        group: group.to_string(),
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
    })
}

fn index_by_key(
    objects: &[Value],
    options: &PlanOptions,
    side: Side,
) -> Result<BTreeMap<ObjectKey, usize>, PlanError> {
    let mut out = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        let key = object_key(object, &options.default_namespace, side, index)?;
        if let Some(&first) = out.get(&key) {
            return Err(PlanError::Duplicate {
                side,
                key,
                first,
                second: index,
            });
        }
        out.insert(key, index);
    }
    Ok(out)
}

/// Compares desired objects with live ones. Both are plain values, as manifests or as a
/// Kubernetes server returns them; neither is changed.
pub fn plan(
    desired: &[Value],
    live: &[Value],
    options: &PlanOptions,
) -> Result<ApplyPlan, PlanError> {
    let desired_keys = index_by_key(desired, options, Side::Desired)?;
    let live_keys = index_by_key(live, options, Side::Live)?;
    let mut keys: Vec<&ObjectKey> = desired_keys.keys().collect();
    if options.prune {
        keys.extend(live_keys.keys().filter(|k| !desired_keys.contains_key(*k)));
    }
    keys.sort();
    let entries = keys
        .into_iter()
        .map(|key| {
            let desired_index = desired_keys.get(key).copied();
            let live_index = live_keys.get(key).copied();
            let d = desired_index.map(|i| &desired[i]);
            let l = live_index.map(|i| &live[i]);
            let (before, after) = normalize::normalize_pair(l, d, &options.default_namespace);
            let action = match (&before, &after) {
                (None, _) => Action::Create,
                (_, None) => Action::Delete,
                (Some(b), Some(a)) if b == a => Action::Unchanged,
                _ => Action::Update,
            };
            let api_version = d
                .or(l)
                .and_then(|o| o.get("apiVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            PlanEntry {
                key: key.clone(),
                api_version,
                action,
                before,
                after,
                desired_index,
                live_index,
            }
        })
        .collect();
    Ok(ApplyPlan { entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": value}})
    }

    #[test]
    fn create_update_delete_unchanged() {
        let desired = [cm("same", "1"), cm("changed", "2"), cm("new", "3")];
        let live = [cm("same", "1"), cm("changed", "1"), cm("gone", "1")];
        let actions = |prune| {
            let options = PlanOptions {
                prune,
                ..PlanOptions::default()
            };
            plan(&desired, &live, &options)
                .unwrap()
                .entries
                .iter()
                .map(|e| (e.key.name.clone(), e.action))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(true),
            [
                ("changed".to_string(), Action::Update),
                ("gone".to_string(), Action::Delete),
                ("new".to_string(), Action::Create),
                ("same".to_string(), Action::Unchanged),
            ]
        );
        assert_eq!(actions(false).len(), 3, "without prune nothing is deleted");
    }

    #[test]
    fn namespaces_default_and_cluster_scoped_kinds_have_none() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        let key = object_key(&ns, "default", Side::Desired, 0).unwrap();
        assert_eq!(key.namespace, None);
        let key = object_key(&cm("a", "1"), "default", Side::Desired, 0).unwrap();
        assert_eq!(key.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn duplicates_and_nameless_objects_are_errors() {
        let err = plan(&[cm("a", "1"), cm("a", "2")], &[], &PlanOptions::default()).unwrap_err();
        assert!(matches!(err, PlanError::Duplicate { second: 1, .. }));
        let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        let err = plan(&[], &[nameless], &PlanOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "live object #0 has no metadata.name; every object needs apiVersion, kind and metadata.name"
        );
    }

    #[test]
    fn debug_output_masks_secrets() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"password": "correct-horse"}});
        let plan = plan(&[secret], &[], &PlanOptions::default()).unwrap();
        let debug = format!("{plan:?}");
        assert!(!debug.contains("correct-horse") && !debug.contains("Y29ycmVjdC1ob3JzZQ"));
        assert!(debug.contains("***"));
    }

    proptest::proptest! {
        /// A manifest never differs from what a server makes of it: defaults filled in,
        /// server-set fields and status added, keys in another order.
        #[test]
        fn a_manifest_is_unchanged_against_its_server_form(
            replicas in proptest::option::of(0u32..5),
            image in "(nginx|nginx:latest|nginx:1\\.2[0-9]|r:5000/app@sha256:ab)",
            recreate: bool,
            port in proptest::option::of(1u16..9000),
            namespace in proptest::option::of("(default|shop)"),
        ) {
            let mut manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": image}]}}}});
            if let Some(r) = replicas { manifest["spec"]["replicas"] = json!(r); }
            if recreate { manifest["spec"]["strategy"] = json!({"type": "Recreate"}); }
            if let Some(p) = port {
                manifest["spec"]["template"]["spec"]["containers"][0]["ports"] =
                    json!([{"containerPort": p}]);
            }
            if let Some(ns) = &namespace { manifest["metadata"]["namespace"] = json!(ns); }
            let mut live = manifest.clone();
            crate::manifest::defaults::apply_defaults(&mut live);
            live["metadata"]["namespace"] = json!(namespace.as_deref().unwrap_or("default"));
            live["metadata"]["uid"] = json!("u-1");
            live["metadata"]["resourceVersion"] = json!("7");
            live["status"] = json!({"replicas": 1});
            if let Value::Object(m) = live.clone() {
                live = Value::Object(m.into_iter().rev().collect());
            }
            let p = plan(&[manifest], &[live], &PlanOptions::default()).unwrap();
            proptest::prop_assert_eq!(p.entries[0].action, Action::Unchanged, "{:?}", p.entries[0]);
        }
    }

    #[test]
    fn changed_fields_name_the_leaves() {
        let mut after = cm("a", "2");
        after["data"]["extra"] = json!("x");
        let p = plan(&[after], &[cm("a", "1")], &PlanOptions::default()).unwrap();
        assert_eq!(p.entries[0].changed_fields(), ["data.extra", "data.k"]);
    }
}
