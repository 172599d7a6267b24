//! The resources the API server serves: one line per resource, with what discovery, routing
//! and storage need to know. Plural and scope come from [`crate::manifest::kinds`], so the
//! server and `berth validate` cannot disagree about a kind.

use std::sync::LazyLock;

use crate::manifest::kinds;

/// A subresource a resource offers (`pods/status`, `deployments/scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// Writes only `.status`; writes to the main resource leave `.status` alone.
    Status,
    /// `autoscaling/v1` `Scale` view of `.spec.replicas`.
    Scale,
    /// `pods/binding`: assigns a pod to a node.
    Binding,
    /// `pods/log`: a container's log, proxied to the pod's agent.
    Log,
    /// `pods/exec`: a command in a container, proxied to the pod's agent.
    Exec,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
        }
    }

    pub fn parse(s: &str) -> Option<Subresource> {
        [
            Subresource::Status,
            Subresource::Scale,
            Subresource::Binding,
            Subresource::Log,
            Subresource::Exec,
        ]
        .into_iter()
        .find(|sub| sub.name() == s)
    }
}

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// `v1` or `apps/v1`.
    pub api_version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs and store keys.
    pub plural: &'static str,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` for the kinds `kubectl get all` shows.
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Whether `spec` exists, so `generation` tracks it (ConfigMaps have none).
    pub has_spec: bool,
}

impl Resource {
    /// `deployments.apps`, or `pods` for the core group: how Status messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `/registry/pods/` or `/registry/pods/default/`: the store prefix to list.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("/registry/{}/{}/", self.plural, ns),
            None => format!("/registry/{}/", self.plural),
        }
    }

    /// `/registry/<plural>/<namespace>/<name>` (cluster-scoped: without the namespace).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}", self.prefix(namespace), name)
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// `ConfigMapList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];
const POD_SUBS: &[Subresource] = &[
    Subresource::Status,
    Subresource::Binding,
    Subresource::Log,
    Subresource::Exec,
];
const NONE: &[Subresource] = &[];
const ALL: &[&str] = &["all"];
const NO_CATEGORY: &[&str] = &[];

/// Declares one served resource. Everything else about it comes from the kinds table.
fn served(
    api_version: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
) -> Resource {
    let info = kinds::find(api_version, kind)
        .unwrap_or_else(|| panic!("{api_version} {kind} is not in manifest::kinds"));
    let has_spec = !matches!(
        kind,
        "ConfigMap" | "Secret" | "Endpoints" | "EndpointSlice" | "Event" | "Binding"
    );
    Resource {
        group: info.group(),
        version: info.version(),
        api_version,
        kind,
        plural: info.plural,
        singular: kind.to_lowercase(),
        namespaced: info.namespaced,
        short_names,
        categories,
        subresources,
        has_spec,
    }
}

/// Every served resource. Adding one is one line here.
pub static RESOURCES: LazyLock<Vec<Resource>> = LazyLock::new(|| {
    vec![
        served("v1", "Namespace", &["ns"], NO_CATEGORY, STATUS),
        served("v1", "Pod", &["po"], ALL, POD_SUBS),
        served("v1", "Service", &["svc"], ALL, STATUS),
        served("v1", "Endpoints", &["ep"], NO_CATEGORY, NONE),
        served("v1", "ConfigMap", &["cm"], NO_CATEGORY, NONE),
        served("v1", "Secret", &[], NO_CATEGORY, NONE),
        served("v1", "Node", &["no"], NO_CATEGORY, STATUS),
        served("v1", "Event", &["ev"], NO_CATEGORY, NONE),
        served("apps/v1", "Deployment", &["deploy"], ALL, STATUS_SCALE),
        served("apps/v1", "ReplicaSet", &["rs"], ALL, STATUS_SCALE),
        served("coordination.k8s.io/v1", "Lease", &[], NO_CATEGORY, NONE),
        served(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            &[],
            NO_CATEGORY,
            NONE,
        ),
        served("berth.dev/v1", "GitSource", &["gs"], NO_CATEGORY, STATUS),
    ]
});

/// The resource served at `group`/`version` under this plural.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an `apiVersion` and `kind`, as a manifest names it.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

/// The served group/versions, in the order discovery lists them (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_matches_the_kinds_table_and_keys_are_laid_out_as_designed() {
        assert!(RESOURCES.len() >= 12);
        let deploy = by_plural("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.kind, "Deployment");
        assert!(deploy.has(Subresource::Scale));
        assert_eq!(deploy.qualified(), "deployments.apps");
        assert_eq!(
            deploy.key(Some("shop"), "web"),
            "/registry/deployments/shop/web"
        );
        let ns = by_kind("v1", "Namespace").unwrap();
        assert!(!ns.namespaced);
        assert_eq!(ns.key(Some("ignored"), "shop"), "/registry/namespaces/shop");
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
