//! The Kubernetes server defaults users see on live objects, in one table.
//!
//! [`apply_defaults`] fills in what an API server would (so the API server can reuse it);
//! [`strip_defaults`] removes every value equal to its default, so a diff of a manifest against
//! the object a server returns shows only what the user wrote. Both walk the same table.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Computes a field's default from the whole object and the field's parent mapping, or `None`
/// when the field has no default there (`rollingUpdate` only exists for `RollingUpdate`).
type DefaultFn = fn(&Value, &Map<String, Value>) -> Option<Value>;

/// One defaulted field: `parent` is a path of keys from the object's root, `*` meaning every
/// item of a list; `field` is the key in that parent.
struct Rule {
    parent: Vec<&'static str>,
    field: &'static str,
    default: DefaultFn,
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

fn is_str(parent: &Map<String, Value>, key: &str, expected: &str) -> bool {
    parent.get(key).and_then(Value::as_str) == Some(expected)
}

/// `Always` for `:latest` or an untagged image, else `IfNotPresent` (a digest counts as a tag).
fn image_pull_policy(_: &Value, container: &Map<String, Value>) -> Option<Value> {
    let image = container.get("image")?.as_str()?;
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = image.contains('@') || last.contains(':');
    let latest = !image.contains('@') && last.ends_with(":latest");
    Some(json!(if !tagged || latest {
        "Always"
    } else {
        "IfNotPresent"
    }))
}

struct Table(Vec<Rule>);

impl Table {
    fn add(&mut self, parent: &[&'static str], field: &'static str, default: DefaultFn) {
        self.0.push(Rule {
            parent: parent.to_vec(),
            field,
            default,
        });
    }

    /// `spec` with the field's path appended.
    fn at(base: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
        base.iter().chain(rest).copied().collect()
    }

    fn pod_spec(&mut self, base: &[&'static str], bare_pod: bool) {
        let at = |rest: &[&'static str]| Table::at(base, rest);
        self.add(&at(&[]), "restartPolicy", |_, _| Some(json!("Always")));
        self.add(&at(&[]), "dnsPolicy", |_, _| Some(json!("ClusterFirst")));
        self.add(&at(&[]), "schedulerName", |_, _| {
            Some(json!("default-scheduler"))
        });
        self.add(&at(&[]), "securityContext", |_, _| Some(json!({})));
        self.add(&at(&[]), "terminationGracePeriodSeconds", |_, _| {
            Some(json!(30))
        });
        if bare_pod {
            // Set by admission on Pods only, never on templates.
            self.add(&at(&[]), "enableServiceLinks", |_, _| Some(json!(true)));
            self.add(&at(&[]), "preemptionPolicy", |_, _| {
                Some(json!("PreemptLowerPriority"))
            });
            self.add(&at(&[]), "priority", |_, _| Some(json!(0)));
            self.add(&at(&[]), "serviceAccountName", |_, _| {
                Some(json!("default"))
            });
            self.add(&at(&[]), "serviceAccount", |_, spec| {
                spec.get("serviceAccountName").cloned()
            });
            self.add(&at(&[]), "tolerations", |_, _| {
                Some(json!([
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
                     "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
                     "operator": "Exists", "tolerationSeconds": 300},
                ]))
            });
        }
        for list in ["containers", "initContainers"] {
            let c = at(&[list, "*"]);
            self.add(&c, "imagePullPolicy", image_pull_policy);
            self.add(&c, "terminationMessagePath", |_, _| {
                Some(json!("/dev/termination-log"))
            });
            self.add(&c, "terminationMessagePolicy", |_, _| Some(json!("File")));
            self.add(&c, "resources", |_, _| Some(json!({})));
            self.add(&at(&[list, "*", "ports", "*"]), "protocol", |_, _| {
                Some(json!("TCP"))
            });
            self.add(
                &at(&[list, "*", "env", "*", "valueFrom", "fieldRef"]),
                "apiVersion",
                |_, _| Some(json!("v1")),
            );
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                let p = at(&[list, "*", probe]);
                self.add(&p, "timeoutSeconds", |_, _| Some(json!(1)));
                self.add(&p, "periodSeconds", |_, _| Some(json!(10)));
                self.add(&p, "successThreshold", |_, _| Some(json!(1)));
                self.add(&p, "failureThreshold", |_, _| Some(json!(3)));
                self.add(&at(&[list, "*", probe, "httpGet"]), "scheme", |_, _| {
                    Some(json!("HTTP"))
                });
            }
        }
        for source in ["configMap", "secret", "projected", "downwardAPI"] {
            self.add(&at(&["volumes", "*", source]), "defaultMode", |_, _| {
                Some(json!(420))
            });
        }
    }

    /// A rolling-update strategy block: `{type: RollingUpdate, rollingUpdate: {...}}`.
    fn rolling_update(&mut self, strategy: &'static str, fields: &[(&'static str, DefaultFn)]) {
        self.add(&["spec"], strategy, |_, _| Some(json!({})));
        self.add(&["spec", strategy], "type", |_, _| {
            Some(json!("RollingUpdate"))
        });
        self.add(&["spec", strategy], "rollingUpdate", |_, s| {
            is_str(s, "type", "RollingUpdate").then(|| json!({}))
        });
        for (field, default) in fields {
            self.add(&["spec", strategy, "rollingUpdate"], field, *default);
        }
    }
}

/// The rules for one kind, parents before children (strip walks them in reverse).
fn table_for(group: &str, kind: &str) -> Option<&'static [Rule]> {
    static TABLES: OnceLock<Vec<(&str, &str, Table)>> = OnceLock::new();
    let tables = TABLES.get_or_init(build_tables);
    tables
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, t)| t.0.as_slice())
}

fn build_tables() -> Vec<(&'static str, &'static str, Table)> {
    let mut out = Vec::new();
    let template = ["spec", "template", "spec"];

    let mut t = Table(Vec::new());
    t.pod_spec(&["spec"], true);
    out.push(("", "Pod", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "replicas", |_, _| Some(json!(1)));
    t.add(&["spec"], "revisionHistoryLimit", |_, _| Some(json!(10)));
    t.add(&["spec"], "progressDeadlineSeconds", |_, _| {
        Some(json!(600))
    });
    t.rolling_update(
        "strategy",
        &[
            ("maxSurge", |_, _| Some(json!("25%"))),
            ("maxUnavailable", |_, _| Some(json!("25%"))),
        ],
    );
    t.pod_spec(&template, false);
    out.push(("apps", "Deployment", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "replicas", |_, _| Some(json!(1)));
    t.add(&["spec"], "revisionHistoryLimit", |_, _| Some(json!(10)));
    t.add(&["spec"], "podManagementPolicy", |_, _| {
        Some(json!("OrderedReady"))
    });
    t.rolling_update("updateStrategy", &[("partition", |_, _| Some(json!(0)))]);
    t.add(&["spec"], "persistentVolumeClaimRetentionPolicy", |_, _| {
        Some(json!({}))
    });
    for field in ["whenDeleted", "whenScaled"] {
        t.add(
            &["spec", "persistentVolumeClaimRetentionPolicy"],
            field,
            |_, _| Some(json!("Retain")),
        );
    }
    t.add(
        &["spec", "volumeClaimTemplates", "*", "spec"],
        "volumeMode",
        |_, _| Some(json!("Filesystem")),
    );
    t.pod_spec(&template, false);
    out.push(("apps", "StatefulSet", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "revisionHistoryLimit", |_, _| Some(json!(10)));
    t.rolling_update(
        "updateStrategy",
        &[
            ("maxSurge", |_, _| Some(json!(0))),
            ("maxUnavailable", |_, _| Some(json!(1))),
        ],
    );
    t.pod_spec(&template, false);
    out.push(("apps", "DaemonSet", t));

    for (group, kind) in [("apps", "ReplicaSet"), ("", "ReplicationController")] {
        let mut t = Table(Vec::new());
        t.add(&["spec"], "replicas", |_, _| Some(json!(1)));
        t.pod_spec(&template, false);
        out.push((group, kind, t));
    }

    let mut t = Table(Vec::new());
    t.add(&["spec"], "backoffLimit", |_, _| Some(json!(6)));
    // Both are 1 when neither is given; a lone parallelism leaves completions unset.
    t.add(&["spec"], "completions", |_, s| {
        (!s.contains_key("parallelism")).then(|| json!(1))
    });
    t.add(&["spec"], "parallelism", |_, _| Some(json!(1)));
    t.add(&["spec"], "completionMode", |_, _| {
        Some(json!("NonIndexed"))
    });
    t.add(&["spec"], "suspend", |_, _| Some(json!(false)));
    t.add(&["spec"], "podReplacementPolicy", |_, s| {
        (!s.contains_key("podFailurePolicy")).then(|| json!("TerminatingOrFailed"))
    });
    t.pod_spec(&template, false);
    out.push(("batch", "Job", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "concurrencyPolicy", |_, _| Some(json!("Allow")));
    t.add(&["spec"], "suspend", |_, _| Some(json!(false)));
    t.add(&["spec"], "successfulJobsHistoryLimit", |_, _| {
        Some(json!(3))
    });
    t.add(&["spec"], "failedJobsHistoryLimit", |_, _| Some(json!(1)));
    t.pod_spec(&["spec", "jobTemplate", "spec", "template", "spec"], false);
    out.push(("batch", "CronJob", t));

    let mut t = Table(Vec::new());
    t.pod_spec(&["template", "spec"], false);
    out.push(("", "PodTemplate", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "type", |_, _| Some(json!("ClusterIP")));
    t.add(&["spec"], "sessionAffinity", |_, _| Some(json!("None")));
    t.add(&["spec"], "ipFamilyPolicy", |_, s| {
        (!is_str(s, "type", "ExternalName")).then(|| json!("SingleStack"))
    });
    t.add(&["spec"], "ipFamilies", |_, s| {
        (!is_str(s, "type", "ExternalName") && is_str(s, "ipFamilyPolicy", "SingleStack"))
            .then(|| json!(["IPv4"]))
    });
    t.add(&["spec"], "internalTrafficPolicy", |_, s| {
        (!is_str(s, "type", "ExternalName")).then(|| json!("Cluster"))
    });
    t.add(&["spec"], "externalTrafficPolicy", |_, s| {
        (is_str(s, "type", "NodePort") || is_str(s, "type", "LoadBalancer"))
            .then(|| json!("Cluster"))
    });
    t.add(&["spec"], "allocateLoadBalancerNodePorts", |_, s| {
        is_str(s, "type", "LoadBalancer").then(|| json!(true))
    });
    t.add(&["spec", "ports", "*"], "protocol", |_, _| {
        Some(json!("TCP"))
    });
    t.add(&["spec", "ports", "*"], "targetPort", |_, p| {
        p.get("port").cloned()
    });
    out.push(("", "Service", t));

    let mut t = Table(Vec::new());
    t.add(&[], "type", |_, _| Some(json!("Opaque")));
    out.push(("", "Secret", t));

    let mut t = Table(Vec::new());
    t.add(&["metadata"], "labels", |_, _| Some(json!({})));
    t.add(
        &["metadata", "labels"],
        "kubernetes.io/metadata.name",
        |o, _| o.pointer("/metadata/name").cloned(),
    );
    t.add(&[], "spec", |_, _| Some(json!({})));
    t.add(&["spec"], "finalizers", |_, _| Some(json!(["kubernetes"])));
    out.push(("", "Namespace", t));

    let mut t = Table(Vec::new());
    t.add(&["spec"], "volumeMode", |_, _| Some(json!("Filesystem")));
    out.push(("", "PersistentVolumeClaim", t));

    out
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

/// Fills in every absent field that has a server default, as a Kubernetes API server does on
/// create. Namespaces are not touched: the caller knows the request's namespace.
pub fn apply_defaults(object: &mut Value) {
    let (group, kind) = group_kind(object);
    let Some(rules) = table_for(group, kind) else {
        return;
    };
    for rule in rules {
        for path in parents(object, &rule.parent) {
            let Some(Value::Object(parent)) = get(object, &path) else {
                continue;
            };
            if parent.contains_key(rule.field) {
                continue;
            }
            let Some(default) = (rule.default)(object, parent) else {
                continue;
            };
            if let Some(Value::Object(parent)) = get_mut(object, &path) {
                parent.insert(rule.field.to_string(), default);
            }
        }
    }
}

/// Removes every value equal to its server default, children before parents (so a strategy
/// whose fields are all defaults goes as a whole). Returns what it removed, in removal order.
pub fn strip_defaults(object: &mut Value) -> Vec<Stripped> {
    let mut removed = Vec::new();
    let (group, kind) = group_kind(object);
    let Some(rules) = table_for(group, kind) else {
        return removed;
    };
    for rule in rules.iter().rev() {
        // Later items first, so earlier indexes stay valid; none are removed anyway.
        for path in parents(object, &rule.parent).into_iter().rev() {
            let Some(Value::Object(parent)) = get(object, &path) else {
                continue;
            };
            let Some(current) = parent.get(rule.field) else {
                continue;
            };
            if (rule.default)(object, parent).as_ref() != Some(current) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80}]}]}}}
        })
    }

    #[test]
    fn apply_then_strip_gives_back_the_manifest() {
        let original = deployment();
        let mut object = original.clone();
        apply_defaults(&mut object);
        assert_eq!(
            object.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            Some(&json!("25%"))
        );
        assert_eq!(
            object.pointer("/spec/template/spec/containers/0/imagePullPolicy"),
            Some(&json!("IfNotPresent"))
        );
        assert_eq!(
            object.pointer("/spec/template/spec/containers/0/ports/0/protocol"),
            Some(&json!("TCP"))
        );
        strip_defaults(&mut object);
        assert_eq!(object, original);
    }

    #[test]
    fn a_recreate_strategy_is_kept_and_gets_no_rolling_update() {
        let mut object = deployment();
        object["spec"]["strategy"] = json!({"type": "Recreate"});
        apply_defaults(&mut object);
        assert_eq!(object["spec"]["strategy"], json!({"type": "Recreate"}));
        strip_defaults(&mut object);
        assert_eq!(object["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let policy = |image: &str| {
            let c = json!({"image": image});
            image_pull_policy(&Value::Null, c.as_object().unwrap()).unwrap()
        };
        assert_eq!(policy("nginx"), json!("Always"));
        assert_eq!(policy("nginx:latest"), json!("Always"));
        assert_eq!(policy("registry:5000/nginx"), json!("Always"));
        assert_eq!(policy("registry:5000/nginx:1.2"), json!("IfNotPresent"));
        assert_eq!(policy("nginx@sha256:abcd"), json!("IfNotPresent"));
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": 8443}]}});
        apply_defaults(&mut svc);
        assert_eq!(svc.pointer("/spec/ports/0/targetPort"), Some(&json!(80)));
        strip_defaults(&mut svc);
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80}, {"port": 443, "targetPort": 8443}])
        );
    }
}
