//! The built-in resources: every stored kind of [`crate::manifest::kinds`] at its preferred
//! version, with Kubernetes' short names and categories, and the subresources each has.

use super::{Resource, Subresource};
use crate::manifest::kinds;

const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];
const POD_SUBS: &[Subresource] = &[
    Subresource::Status,
    Subresource::Binding,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Eviction,
];
const NONE: &[Subresource] = &[];

/// Kubernetes' short names, by plural (`kubectl api-resources` on a Kubernetes cluster).
const SHORT_NAMES: &[(&str, &[&str])] = &[
    ("componentstatuses", &["cs"]),
    ("configmaps", &["cm"]),
    ("endpoints", &["ep"]),
    ("events", &["ev"]),
    ("limitranges", &["limits"]),
    ("namespaces", &["ns"]),
    ("nodes", &["no"]),
    ("persistentvolumeclaims", &["pvc"]),
    ("persistentvolumes", &["pv"]),
    ("pods", &["po"]),
    ("replicationcontrollers", &["rc"]),
    ("resourcequotas", &["quota"]),
    ("serviceaccounts", &["sa"]),
    ("services", &["svc"]),
    ("customresourcedefinitions", &["crd", "crds"]),
    ("daemonsets", &["ds"]),
    ("deployments", &["deploy"]),
    ("replicasets", &["rs"]),
    ("statefulsets", &["sts"]),
    ("horizontalpodautoscalers", &["hpa"]),
    ("cronjobs", &["cj"]),
    ("certificatesigningrequests", &["csr"]),
    ("ingresses", &["ing"]),
    ("networkpolicies", &["netpol"]),
    ("ipaddresses", &["ip"]),
    ("poddisruptionbudgets", &["pdb"]),
    ("priorityclasses", &["pc"]),
    ("storageclasses", &["sc"]),
    ("gitsources", &["gs"]),
];

/// The kinds `kubectl get all` shows: Kubernetes' category `all`.
pub(super) const CATEGORY_ALL: &[&str] = &[
    "pods",
    "services",
    "daemonsets",
    "deployments",
    "replicasets",
    "statefulsets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
    "horizontalpodautoscalers",
];

/// Kubernetes' category `api-extensions`.
const CATEGORY_API_EXTENSIONS: &[&str] = &[
    "customresourcedefinitions",
    "apiservices",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "mutatingadmissionpolicies",
    "mutatingadmissionpolicybindings",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
];

/// Served kinds whose type has no `status`, so no status subresource (a unit test checks
/// this list against the kinds' schemas).
const NO_STATUS: &[&str] = &[
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrustBundle",
    "ComponentStatus",
    "ConfigMap",
    "ControllerRevision",
    "CSIDriver",
    "CSIStorageCapacity",
    "DeviceClass",
    "Endpoints",
    "EndpointSlice",
    "Event",
    "IngressClass",
    "IPAddress",
    "Lease",
    "LeaseCandidate",
    "LimitRange",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "NetworkPolicy",
    "PodTemplate",
    "PriorityClass",
    "ResourceClaimTemplate",
    "ResourceSlice",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Secret",
    "ServiceAccount",
    "StorageClass",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttributesClass",
    "Workload",
];

/// Served kinds whose type has no `spec`, so no `generation` (checked like [`NO_STATUS`]).
const NO_SPEC: &[&str] = &[
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "ConfigMap",
    "ControllerRevision",
    "CSIStorageCapacity",
    "Endpoints",
    "EndpointSlice",
    "Event",
    "MutatingWebhookConfiguration",
    "PodTemplate",
    "PriorityClass",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Secret",
    "ServiceAccount",
    "StorageClass",
    "ValidatingWebhookConfiguration",
    "VolumeAttributesClass",
];

/// The kinds with a `scale` subresource.
const SCALABLE: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "ReplicationController",
];

/// Kubernetes' order of versions: GA before beta before alpha, higher numbers first
/// (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1`). Greater is preferred.
pub fn version_rank(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let major = rest[..digits].parse().unwrap_or(0);
    let tail = &rest[digits..];
    let number = |n: &str| n.parse().unwrap_or(0);
    match tail {
        "" => (2, major, 0),
        t if t.starts_with("beta") => (1, major, number(&t[4..])),
        t if t.starts_with("alpha") => (0, major, number(&t[5..])),
        _ => (0, 0, 0),
    }
}

/// The built-in resource of one kind of the kinds table.
fn served(info: &'static kinds::KindInfo, storage: &'static str) -> Resource {
    let kind = info.kind;
    let subresources = match kind {
        "Pod" => POD_SUBS,
        k if SCALABLE.contains(&k) => STATUS_SCALE,
        k if NO_STATUS.contains(&k) => NONE,
        _ => STATUS,
    };
    let listed = |table: &[&str], name: &'static [&'static str]| -> &'static [&'static str] {
        if table.contains(&info.plural) {
            name
        } else {
            &[]
        }
    };
    let mut categories = listed(CATEGORY_ALL, &["all"]);
    if categories.is_empty() {
        categories = listed(CATEGORY_API_EXTENSIONS, &["api-extensions"]);
    }
    Resource {
        group: info.group(),
        version: info.version(),
        api_version: info.api_version,
        kind,
        plural: info.plural,
        storage,
        singular: kind.to_lowercase(),
        namespaced: info.namespaced,
        short_names: SHORT_NAMES
            .iter()
            .find(|(plural, _)| *plural == info.plural)
            .map(|(_, names)| *names)
            .unwrap_or(&[]),
        categories,
        subresources,
        has_spec: !NO_SPEC.contains(&kind),
        stored_as: None,
    }
}

/// The built-in resources the server starts with: every kind of [`kinds::KINDS`] that is
/// stored in Kubernetes (not the reviews, which are only ever created, nor `Binding`, which
/// is `pods/binding`), each group and plural at one version, the one Kubernetes prefers
/// (`autoscaling/v2` HorizontalPodAutoscalers, not `v1`): objects are stored as JSON of
/// their version and berth converts between none. Core first, then the groups served before
/// all kinds were, then the rest in the kinds table's order.
pub(super) fn built_in() -> Vec<Resource> {
    let mut chosen: Vec<&'static kinds::KindInfo> = Vec::new();
    for info in kinds::KINDS.iter().filter(|k| k.listable) {
        match chosen
            .iter_mut()
            .find(|c| c.group() == info.group() && c.plural == info.plural)
        {
            Some(c) if version_rank(info.version()) > version_rank(c.version()) => *c = info,
            Some(_) => {}
            None => chosen.push(info),
        }
    }
    let first = ["", "apps", "coordination.k8s.io", "discovery.k8s.io"];
    chosen.sort_by_key(|info| {
        first
            .iter()
            .position(|g| *g == info.group())
            .unwrap_or(first.len())
    });
    let mut out: Vec<Resource> = Vec::with_capacity(chosen.len());
    for info in chosen {
        let storage: &'static str = if out.iter().any(|r| r.plural == info.plural) {
            format!("{}/{}", info.group(), info.plural).leak()
        } else {
            info.plural
        };
        out.push(served(info, storage));
    }
    out
}
