//! The values a Kubernetes API server fills in on write, in one table per kind: what the API
//! server stores ([`apply_server_defaults`]), and what the diff strips so a manifest compares
//! equal to the object a server returns ([`apply_defaults`], [`strip_defaults`]).
//!
//! Each kind's table lists where its values come from: Kubernetes' defaulting functions
//! (`pkg/apis/*/v1/defaults.go` and the generated `zz_generated.defaults.go`, run on every
//! write), what its registry sets on create (a Pod's phase and QoS class, a Namespace's
//! finalizer, a Service's IP families), and, for the diff only, what a stock kube-apiserver's
//! admission plugins add to Pods (berth's server runs none of them). Adding a kind is one
//! function in [`kinds`] (or [`pod`] for pod templates) and one line in [`build`].
//!
//! Pure: functions over an object's JSON, no I/O.

mod kinds;
mod pod;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// Where a default comes from, which decides who applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A defaulting function: applied on every write.
    Defaulting,
    /// The kind's registry (create strategy, allocation): berth's server applies it on every
    /// write too, so an object keeps it across updates.
    Registry,
    /// An admission plugin berth's server does not run: only the diff knows it.
    Admission,
}

/// Computes a field's default from the whole object and the field's parent mapping, or `None`
/// when the field has no default there (`rollingUpdate` only exists for `RollingUpdate`).
pub(crate) type DefaultFn = fn(&Value, &Map<String, Value>) -> Option<Value>;

/// A field's default value.
pub(crate) enum Fill {
    Constant(Value),
    Computed(DefaultFn),
}

/// One defaulted field: `parent` is a path of keys from the object's root, `*` meaning every
/// item of a list; `field` is the key in that parent.
struct Rule {
    parent: Vec<&'static str>,
    field: &'static str,
    fill: Fill,
    origin: Origin,
}

impl Rule {
    fn default_in(&self, object: &Value, parent: &Map<String, Value>) -> Option<Value> {
        match &self.fill {
            Fill::Constant(v) => Some(v.clone()),
            Fill::Computed(f) => f(object, parent),
        }
    }
}

/// A default no field rule can say (a Secret's `stringData` folded into `data`, a Pod's
/// requests taken from its limits): `apply` changes the object, `strip` undoes what a
/// reader should not see as written (returning what it removed), if anything.
pub(crate) struct Hook {
    pub apply: fn(&mut Value),
    pub strip: Option<fn(&mut Value) -> Vec<Stripped>>,
    pub origin: Origin,
}

/// One step of a kind's table, applied in order (stripped in reverse).
enum Entry {
    Rule(Rule),
    Hook(Hook),
}

/// The defaults of one kind, built by the functions in [`kinds`] and [`pod`].
#[derive(Default)]
pub(crate) struct Table(Vec<Entry>);

impl Table {
    fn rule(&mut self, parent: &[&'static str], field: &'static str, fill: Fill, origin: Origin) {
        self.0.push(Entry::Rule(Rule {
            parent: parent.to_vec(),
            field,
            fill,
            origin,
        }));
    }

    /// A defaulting function's constant: `field` of every mapping at `parent`.
    pub fn constant(&mut self, parent: &[&'static str], field: &'static str, value: Value) {
        self.rule(parent, field, Fill::Constant(value), Origin::Defaulting);
    }

    /// A defaulting function's value computed from the object.
    pub fn computed(&mut self, parent: &[&'static str], field: &'static str, f: DefaultFn) {
        self.rule(parent, field, Fill::Computed(f), Origin::Defaulting);
    }

    /// A value from another origin than a defaulting function.
    pub fn with_origin(
        &mut self,
        origin: Origin,
        parent: &[&'static str],
        field: &'static str,
        fill: Fill,
    ) {
        self.rule(parent, field, fill, origin);
    }

    pub fn hook(&mut self, hook: Hook) {
        self.0.push(Entry::Hook(hook));
    }
}

/// `base` with `rest` appended: the path of a field under a pod template, say.
pub(crate) fn at(base: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(rest).copied().collect()
}

/// Whether `parent[key]` is the string `expected`.
pub(crate) fn is_str(parent: &Map<String, Value>, key: &str, expected: &str) -> bool {
    parent.get(key).and_then(Value::as_str) == Some(expected)
}

/// Every kind's table: `(group, kind, table)`.
fn build() -> Vec<(&'static str, &'static str, Table)> {
    let mut out = Vec::new();
    let mut add = |group, kind, fill: fn(&mut Table)| {
        let mut table = Table::default();
        fill(&mut table);
        out.push((group, kind, table));
    };
    add("", "Namespace", kinds::namespace);
    add("", "Pod", pod::pod);
    add("", "PodTemplate", pod::pod_template);
    add("", "ReplicationController", kinds::replication_controller);
    add("", "Service", kinds::service);
    add("", "Endpoints", kinds::endpoints);
    add("", "Secret", kinds::secret);
    add("", "Node", kinds::node);
    add("", "PersistentVolumeClaim", kinds::persistent_volume_claim);
    add("", "PersistentVolume", kinds::persistent_volume);
    add("storage.k8s.io", "StorageClass", kinds::storage_class);
    add("storage.k8s.io", "CSIDriver", kinds::csi_driver);
    add("scheduling.k8s.io", "PriorityClass", kinds::priority_class);
    add("discovery.k8s.io", "EndpointSlice", kinds::endpoint_slice);
    add("apps", "Deployment", kinds::deployment);
    add("apps", "ReplicaSet", kinds::replica_set);
    add("apps", "StatefulSet", kinds::stateful_set);
    add("apps", "DaemonSet", kinds::daemon_set);
    add("batch", "Job", kinds::job);
    add("batch", "CronJob", kinds::cron_job);
    // ConfigMap, Event, Lease, GitSource, RBAC, ServiceAccount, Ingress and the other kinds
    // not listed have no defaults this table sets yet: a ConfigMap's empty `data` is
    // not written out, and a Lease's `strategy` belongs to a feature off by default.
    out
}

/// The table of a kind, if it has defaults.
fn table_for(group: &str, kind: &str) -> Option<&'static [Entry]> {
    static TABLES: OnceLock<Vec<(&str, &str, Table)>> = OnceLock::new();
    TABLES
        .get_or_init(build)
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, t)| t.0.as_slice())
}

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A value [`strip_defaults`] removed, and where it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Stripped {
    pub path: Vec<Step>,
    pub value: Value,
}

/// Every path matching `pattern` (with `*` for list items) that leads to a mapping.
fn parents(root: &Value, pattern: &[&str]) -> Vec<Vec<Step>> {
    let mut found = vec![(Vec::new(), root)];
    for part in pattern {
        let mut next = Vec::new();
        for (path, value) in found {
            match (*part, value) {
                ("*", Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let mut p = path.clone();
                        p.push(Step::Index(i));
                        next.push((p, item));
                    }
                }
                (key, Value::Object(map)) => {
                    if let Some(child) = map.get(key) {
                        let mut p = path.clone();
                        p.push(Step::Key(key.to_string()));
                        next.push((p, child));
                    }
                }
                _ => {}
            }
        }
        found = next;
    }
    found
        .into_iter()
        .filter(|(_, v)| v.is_object())
        .map(|(p, _)| p)
        .collect()
}

/// The value at `path`.
pub fn get<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(*i),
    })
}

/// The value at `path`, mutably.
pub fn get_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |v, step| match step {
        Step::Key(k) => v.get_mut(k),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// `(group, kind)` of an object, from its `apiVersion` and `kind`.
pub fn group_kind(object: &Value) -> (&str, &str) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    (group, kind)
}

/// Fills in every absent (or null) field with a default of one of `origins`, in table order.
fn fill(object: &mut Value, origins: &[Origin]) {
    let (group, kind) = group_kind(object);
    let Some(entries) = table_for(group, kind) else {
        return;
    };
    for entry in entries {
        let rule = match entry {
            Entry::Hook(hook) if origins.contains(&hook.origin) => {
                (hook.apply)(object);
                continue;
            }
            Entry::Rule(rule) if origins.contains(&rule.origin) => rule,
            _ => continue,
        };
        for path in parents(object, &rule.parent) {
            let Some(Value::Object(parent)) = get(object, &path) else {
                continue;
            };
            if parent.get(rule.field).is_some_and(|v| !v.is_null()) {
                continue;
            }
            let Some(default) = rule.default_in(object, parent) else {
                continue;
            };
            if let Some(Value::Object(parent)) = get_mut(object, &path) {
                parent.insert(rule.field.to_string(), default);
            }
        }
    }
}

/// What berth's API server fills in on every create and update, as a Kubernetes API server
/// does: defaulting functions and registry values. Namespaces of namespaced objects are not
/// touched: the caller knows the request's namespace.
pub fn apply_server_defaults(object: &mut Value) {
    fill(object, &[Origin::Defaulting, Origin::Registry]);
}

/// Everything a Kubernetes API server may fill in, admission plugins included: what the diff
/// assumes of a live object.
pub fn apply_defaults(object: &mut Value) {
    fill(
        object,
        &[Origin::Defaulting, Origin::Registry, Origin::Admission],
    );
}

/// Removes every value equal to its default (of any origin), children before parents (so a
/// strategy whose fields are all defaults goes as a whole). Returns what it removed, in
/// removal order.
pub fn strip_defaults(object: &mut Value) -> Vec<Stripped> {
    let mut removed = Vec::new();
    let (group, kind) = group_kind(object);
    let Some(entries) = table_for(group, kind) else {
        return removed;
    };
    for entry in entries.iter().rev() {
        let rule = match entry {
            Entry::Hook(hook) => {
                if let Some(strip) = hook.strip {
                    removed.extend(strip(object));
                }
                continue;
            }
            Entry::Rule(rule) => rule,
        };
        // Later items first, so earlier indexes stay valid; none are removed anyway.
        for path in parents(object, &rule.parent).into_iter().rev() {
            let Some(Value::Object(parent)) = get(object, &path) else {
                continue;
            };
            let Some(current) = parent.get(rule.field) else {
                continue;
            };
            if rule.default_in(object, parent).as_ref() != Some(current) {
                continue;
            }
            if let Some(Value::Object(parent)) = get_mut(object, &path)
                && let Some(value) = parent.shift_remove(rule.field)
            {
                let mut field_path = path.clone();
                field_path.push(Step::Key(rule.field.to_string()));
                removed.push(Stripped {
                    path: field_path,
                    value,
                });
            }
        }
    }
    removed
}
