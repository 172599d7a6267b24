//! Field specs: which fields of which kinds a transformer touches (kustomize's built-in
//! tables, restated), and walking an object along a spec's path. Lists on the way are
//! entered item by item, as kustomize does.

use serde_json::{Map, Value};

/// A field of some kinds: `kind` (and `group`) empty means every kind.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub group: &'static str,
    pub kind: &'static str,
    pub path: &'static str,
    pub create: bool,
}

const fn spec(group: &'static str, kind: &'static str, path: &'static str, create: bool) -> Spec {
    Spec {
        group,
        kind,
        path,
        create,
    }
}

/// Whether a spec (by group and kind; empty matches all) selects an object.
pub fn selects(group: &str, kind: &str, object: &Value) -> bool {
    let (g, _, k) = gvk(object);
    (kind.is_empty() || kind == k) && (group.is_empty() || group == g)
}

/// An object's group, version and kind.
pub fn gvk(object: &Value) -> (&str, &str, &str) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    (group, version, kind)
}

/// The labels that go on the object and into its pod templates (kustomize's metadata labels).
pub const TEMPLATE_LABELS: &[Spec] = &[
    spec("", "", "metadata/labels", true),
    spec(
        "",
        "ReplicationController",
        "spec/template/metadata/labels",
        true,
    ),
    spec("", "Deployment", "spec/template/metadata/labels", true),
    spec("", "ReplicaSet", "spec/template/metadata/labels", true),
    spec("", "DaemonSet", "spec/template/metadata/labels", true),
    spec("apps", "StatefulSet", "spec/template/metadata/labels", true),
    spec("batch", "Job", "spec/template/metadata/labels", true),
    spec("batch", "CronJob", "spec/jobTemplate/metadata/labels", true),
    spec(
        "batch",
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/labels",
        true,
    ),
];

const AFFINITY: [&str; 5] = [
    "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
    "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
];

/// The labels of `labels` with `includeTemplates`: the object's, its pod templates' and its
/// volume claim templates'.
pub fn template_labels() -> Vec<Spec> {
    let mut out = TEMPLATE_LABELS.to_vec();
    out.push(spec(
        "apps",
        "StatefulSet",
        "spec/volumeClaimTemplates[]/metadata/labels",
        true,
    ));
    out
}

/// The selectors `commonLabels` (and `labels` with `includeSelectors`) also change.
pub fn selector_labels() -> Vec<Spec> {
    let mut out = vec![
        spec("", "Service", "spec/selector", true),
        spec("", "ReplicationController", "spec/selector", true),
        spec("", "Deployment", "spec/selector/matchLabels", true),
        spec("", "ReplicaSet", "spec/selector/matchLabels", true),
        spec("", "DaemonSet", "spec/selector/matchLabels", true),
        spec("apps", "StatefulSet", "spec/selector/matchLabels", true),
        spec("batch", "Job", "spec/selector/matchLabels", false),
        spec(
            "batch",
            "CronJob",
            "spec/jobTemplate/spec/selector/matchLabels",
            false,
        ),
        spec(
            "policy",
            "PodDisruptionBudget",
            "spec/selector/matchLabels",
            false,
        ),
        spec(
            "networking.k8s.io",
            "NetworkPolicy",
            "spec/podSelector/matchLabels",
            false,
        ),
        spec(
            "networking.k8s.io",
            "NetworkPolicy",
            "spec/ingress/from/podSelector/matchLabels",
            false,
        ),
        spec(
            "networking.k8s.io",
            "NetworkPolicy",
            "spec/egress/to/podSelector/matchLabels",
            false,
        ),
        spec(
            "apps",
            "StatefulSet",
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ),
    ];
    for kind in ["Deployment", "StatefulSet"] {
        out.extend(AFFINITY.iter().map(|p| spec("apps", kind, p, false)));
    }
    out.extend_from_slice(TEMPLATE_LABELS);
    out
}

/// Where `commonAnnotations` go.
pub const ANNOTATIONS: &[Spec] = &[
    spec("", "", "metadata/annotations", true),
    spec(
        "",
        "ReplicationController",
        "spec/template/metadata/annotations",
        true,
    ),
    spec("", "Deployment", "spec/template/metadata/annotations", true),
    spec("", "ReplicaSet", "spec/template/metadata/annotations", true),
    spec("", "DaemonSet", "spec/template/metadata/annotations", true),
    spec(
        "",
        "StatefulSet",
        "spec/template/metadata/annotations",
        true,
    ),
    spec("batch", "Job", "spec/template/metadata/annotations", true),
    spec(
        "batch",
        "CronJob",
        "spec/jobTemplate/metadata/annotations",
        true,
    ),
    spec(
        "batch",
        "CronJob",
        "spec/jobTemplate/spec/template/metadata/annotations",
        true,
    ),
];

/// The kinds `replicas` sets `spec/replicas` of.
pub const REPLICA_KINDS: [&str; 4] = [
    "Deployment",
    "ReplicationController",
    "ReplicaSet",
    "StatefulSet",
];

/// A reference to an object of kind `to` (group `to_group`) from a field of another kind.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    pub to: &'static str,
    pub to_group: &'static str,
    pub from: Spec,
}

/// Where a pod spec sits in each workload kind.
const POD_SPECS: [(&str, &str); 8] = [
    ("Pod", "spec"),
    ("PodTemplate", "template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// kustomize's name reference table: which fields name a ConfigMap, a Secret, a Service, …
pub fn references() -> &'static [Reference] {
    static TABLE: std::sync::OnceLock<Vec<Reference>> = std::sync::OnceLock::new();
    TABLE.get_or_init(build_references)
}

fn build_references() -> Vec<Reference> {
    let mut out = Vec::new();
    let mut add = |to: &'static str,
                   to_group: &'static str,
                   group: &'static str,
                   kind: &'static str,
                   path: &'static str| {
        out.push(Reference {
            to,
            to_group,
            from: spec(group, kind, path, false),
        })
    };
    for scaled in [
        "Deployment",
        "ReplicationController",
        "ReplicaSet",
        "StatefulSet",
    ] {
        add(
            scaled,
            "",
            "",
            "HorizontalPodAutoscaler",
            "spec/scaleTargetRef/name",
        );
    }
    let configmap_in_pod = [
        "volumes/configMap/name",
        "containers/env/valueFrom/configMapKeyRef/name",
        "initContainers/env/valueFrom/configMapKeyRef/name",
        "containers/envFrom/configMapRef/name",
        "initContainers/envFrom/configMapRef/name",
        "volumes/projected/sources/configMap/name",
    ];
    let secret_in_pod = [
        "volumes/secret/secretName",
        "containers/env/valueFrom/secretKeyRef/name",
        "initContainers/env/valueFrom/secretKeyRef/name",
        "containers/envFrom/secretRef/name",
        "initContainers/envFrom/secretRef/name",
        "imagePullSecrets/name",
        "volumes/projected/sources/secret/name",
    ];
    for (kind, pod) in POD_SPECS {
        for p in configmap_in_pod {
            add("ConfigMap", "", "", kind, leak(format!("{pod}/{p}")));
        }
        for p in secret_in_pod {
            add("Secret", "", "", kind, leak(format!("{pod}/{p}")));
        }
        if kind != "PodTemplate" {
            add(
                "ServiceAccount",
                "",
                "",
                kind,
                leak(format!("{pod}/serviceAccountName")),
            );
            add(
                "PersistentVolumeClaim",
                "",
                "",
                kind,
                leak(format!("{pod}/volumes/persistentVolumeClaim/claimName")),
            );
            add(
                "PriorityClass",
                "scheduling.k8s.io",
                "",
                kind,
                leak(format!("{pod}/priorityClassName")),
            );
        }
    }
    add("ConfigMap", "", "", "Node", "spec/configSource/configMap");
    add("ConfigMap", "", "", "Role", "rules/resourceNames");
    add("ConfigMap", "", "", "ClusterRole", "rules/resourceNames");
    add(
        "ConfigMap",
        "",
        "",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
    );
    add("Secret", "", "", "Ingress", "spec/tls/secretName");
    add(
        "Secret",
        "",
        "",
        "Ingress",
        "metadata/annotations/ingress.kubernetes.io\\/auth-secret",
    );
    add(
        "Secret",
        "",
        "",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret",
    );
    add(
        "Secret",
        "",
        "",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret",
    );
    add("Secret", "", "", "ServiceAccount", "imagePullSecrets/name");
    for p in [
        "secretName",
        "adminSecretName",
        "userSecretName",
        "secretRef",
    ] {
        add(
            "Secret",
            "",
            "",
            "StorageClass",
            leak(format!("parameters/{p}")),
        );
    }
    add("Secret", "", "", "Role", "rules/resourceNames");
    add("Secret", "", "", "ClusterRole", "rules/resourceNames");
    add(
        "Secret",
        "",
        "",
        "PersistentVolume",
        "spec/azureFile/secretName",
    );
    add("Service", "", "apps", "StatefulSet", "spec/serviceName");
    add(
        "Service",
        "",
        "",
        "Ingress",
        "spec/rules/http/paths/backend/serviceName",
    );
    add("Service", "", "", "Ingress", "spec/backend/serviceName");
    add(
        "Service",
        "",
        "",
        "Ingress",
        "spec/rules/http/paths/backend/service/name",
    );
    add(
        "Service",
        "",
        "",
        "Ingress",
        "spec/defaultBackend/service/name",
    );
    add(
        "Service",
        "",
        "apiregistration.k8s.io",
        "APIService",
        "spec/service/name",
    );
    add(
        "Service",
        "",
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "webhooks/clientConfig/service",
    );
    add(
        "Service",
        "",
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "webhooks/clientConfig/service",
    );
    add(
        "Role",
        "rbac.authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "roleRef/name",
    );
    add(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "roleRef/name",
    );
    add(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "roleRef/name",
    );
    add(
        "ServiceAccount",
        "",
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "subjects",
    );
    add(
        "ServiceAccount",
        "",
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "subjects",
    );
    add(
        "ServiceAccount",
        "",
        "",
        "ReplicationController",
        "spec/template/spec/serviceAccountName",
    );
    add(
        "PersistentVolumeClaim",
        "",
        "",
        "ReplicationController",
        "spec/template/spec/volumes/persistentVolumeClaim/claimName",
    );
    add(
        "PriorityClass",
        "scheduling.k8s.io",
        "",
        "ReplicationController",
        "spec/template/spec/priorityClassName",
    );
    add(
        "PersistentVolume",
        "",
        "",
        "PersistentVolumeClaim",
        "spec/volumeName",
    );
    add(
        "PersistentVolume",
        "",
        "",
        "ClusterRole",
        "rules/resourceNames",
    );
    add(
        "StorageClass",
        "storage.k8s.io",
        "",
        "PersistentVolume",
        "spec/storageClassName",
    );
    add(
        "StorageClass",
        "storage.k8s.io",
        "",
        "PersistentVolumeClaim",
        "spec/storageClassName",
    );
    add(
        "StorageClass",
        "storage.k8s.io",
        "",
        "StatefulSet",
        "spec/volumeClaimTemplates/spec/storageClassName",
    );
    add(
        "IngressClass",
        "networking.k8s.io",
        "",
        "Ingress",
        "spec/ingressClassName",
    );
    add(
        "ValidatingAdmissionPolicy",
        "admissionregistration.k8s.io",
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "spec/policyName",
    );
    out
}

/// A path's segments: `/` separates, `\/` is a slash inside a key, a trailing `[]` is dropped
/// (lists are entered anyway).
pub fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'/') => {
                current.push('/');
                chars.next();
            }
            '/' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.strip_suffix("[]").map(str::to_string).unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Calls `f` on every value at `path` in `value` (lists on the way entered item by item).
/// With `create`, missing maps on the way and the last field are created (the last as
/// `null`, for `f` to fill).
pub fn visit(value: &mut Value, path: &[String], create: bool, f: &mut dyn FnMut(&mut Value)) {
    if let Value::Array(items) = value {
        for item in items {
            visit(item, path, create, f);
        }
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        f(value);
        return;
    };
    let Value::Object(map) = value else { return };
    if !map.contains_key(first) {
        if !create {
            return;
        }
        let fresh = if rest.is_empty() {
            Value::Null
        } else {
            Value::Object(Map::new())
        };
        map.insert(first.clone(), fresh);
    }
    if let Some(next) = map.get_mut(first) {
        if next.is_null() && !rest.is_empty() {
            if !create {
                return;
            }
            *next = Value::Object(Map::new());
        }
        visit(next, rest, create, f);
    }
}

/// Adds `pairs` to the map at every place `specs` name in `object`.
pub fn add_pairs(object: &mut Value, specs: &[Spec], pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    for s in specs {
        if !selects(s.group, s.kind, object) {
            continue;
        }
        visit(object, &segments(s.path), s.create, &mut |v| {
            if !v.is_object() {
                *v = Value::Object(Map::new());
            }
            if let Value::Object(map) = v {
                for (k, val) in pairs {
                    map.insert(k.clone(), Value::String(val.clone()));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_enter_lists_and_create_only_when_told() {
        assert_eq!(
            segments("metadata/annotations/a.io\\/b"),
            ["metadata", "annotations", "a.io/b"]
        );
        let mut v = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}});
        let mut seen = Vec::new();
        visit(
            &mut v,
            &segments("spec/containers[]/image"),
            false,
            &mut |x| seen.push(x.clone()),
        );
        assert_eq!(seen, [json!("x")]);
        visit(&mut v, &segments("spec/selector/app"), true, &mut |x| {
            *x = json!("web")
        });
        assert_eq!(v["spec"]["selector"]["app"], "web");
    }
}
