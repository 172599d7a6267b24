//! The resource registry: the resources the API server serves, with what discovery, routing
//! and storage need to know. Plural and scope come from [`crate::manifest::kinds`], so the
//! server and `berth validate` cannot disagree about a kind.
//!
//! The registry is a runtime structure: [`by_plural`] (routing) and [`by_kind`] (manifests,
//! the apply planner) look a resource up, [`all`] lists them, and [`insert`]/[`remove`] add
//! and drop resources while the server runs (how a CustomResourceDefinition's resource joins
//! the one generic storage path of `super::dispatch` and `super::handlers`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

mod built_in;

pub use built_in::version_rank;

use self::built_in::built_in;

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
    /// `pods/eviction`: a delete that honours the pod's PodDisruptionBudget.
    Eviction,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Eviction => "eviction",
        }
    }

    pub fn parse(s: &str) -> Option<Subresource> {
        [
            Subresource::Status,
            Subresource::Scale,
            Subresource::Binding,
            Subresource::Log,
            Subresource::Exec,
            Subresource::Eviction,
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
    /// Lower-case plural used in URLs.
    pub plural: &'static str,
    /// The store key segment after `/registry/`: the plural for built-in kinds (`pods`);
    /// group and plural (`events.k8s.io/events`) where two groups serve one plural, and for
    /// resources added at runtime, so they cannot collide with a built-in one.
    pub storage: &'static str,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` for the kinds `kubectl get all` shows.
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Whether `spec` exists, so `generation` tracks it (ConfigMaps have none).
    pub has_spec: bool,
    /// The `apiVersion` objects are stored at when it is not this one: a custom resource's
    /// served version that is not the CRD's storage version (objects are stored once, at the
    /// storage version, and read at any served one with `apiVersion` rewritten).
    pub stored_as: Option<&'static str>,
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
            Some(ns) => format!("/registry/{}/{}/", self.storage, ns),
            None => format!("/registry/{}/", self.storage),
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

/// The resources served right now: the built-in ones, plus any added at runtime with
/// [`insert`] (a CustomResourceDefinition's). Each entry is leaked once so lookups hand out
/// `&'static Resource` without holding the lock; inserting a resource equal to a served one
/// reuses that entry, so a CRD that is read again leaks nothing new.
type Registry = Arc<[&'static Resource]>;

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| {
    let list: Vec<&'static Resource> = built_in()
        .into_iter()
        .map(|r| &*Box::leak(Box::new(r)))
        .collect();
    RwLock::new(list.into())
});

/// Bumped on every change of the registry, so caches of what is served (OpenAPI documents)
/// know when to rebuild.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Every served resource, core first, in the order discovery lists them: a snapshot, which
/// a later [`insert`] or [`remove`] does not change.
pub fn all() -> Registry {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How many times the registry changed since the process started.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Serves `resource` from now on (discovery, routing, the generic handlers, OpenAPI),
/// replacing one served at the same group, version and plural. The entry point for
/// resources added at runtime, such as a CustomResourceDefinition's. Returns the entry.
pub fn insert(resource: Resource) -> &'static Resource {
    let mut guard = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if let Some(same) = guard.iter().find(|r| ***r == resource) {
        return same;
    }
    let leaked: &'static Resource = Box::leak(Box::new(resource));
    let mut list = guard.to_vec();
    match list.iter().position(|r| {
        r.group == leaked.group && r.version == leaked.version && r.plural == leaked.plural
    }) {
        Some(i) => list[i] = leaked,
        None => list.push(leaked),
    }
    *guard = list.into();
    GENERATION.fetch_add(1, Ordering::AcqRel);
    leaked
}

/// Stops serving the resource at `group`/`version` under `plural` (its stored objects stay
/// in the store; deleting them is the caller's business). Returns what was served.
pub fn remove(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    let mut guard = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    let i = guard
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    let mut list = guard.to_vec();
    let removed = list.remove(i);
    *guard = list.into();
    GENERATION.fetch_add(1, Ordering::AcqRel);
    Some(removed)
}

fn find(matches: impl Fn(&Resource) -> bool) -> Option<&'static Resource> {
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    registry.iter().find(|r| matches(r)).copied()
}

/// The resource served at `group`/`version` under this plural: how a URL finds its resource.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    find(|r| r.plural == plural && r.group == group && r.version == version)
}

/// The resource of an `apiVersion` and `kind`, as a manifest names it.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    find(|r| r.kind == kind && r.api_version == api_version)
}

/// The served resource of a kind in a group, at whichever version it is served (`Kind.group`
/// as ApplySets' `contains-group-kinds` name it).
pub fn by_group_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    find(|r| r.kind == kind && r.group == group)
}

/// The served group/versions, in the order discovery lists them (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all().iter() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::built_in::CATEGORY_ALL;
    use super::*;
    use crate::manifest::kinds;

    #[test]
    fn every_resource_matches_the_kinds_table_and_keys_are_laid_out_as_designed() {
        assert!(all().len() >= 12);
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
        let events = by_kind("events.k8s.io/v1", "Event").unwrap();
        assert_eq!(
            events.key(Some("shop"), "e"),
            "/registry/events.k8s.io/events/shop/e",
            "a plural served in two groups is stored apart"
        );
        assert_eq!(
            by_kind("v1", "Event").unwrap().key(Some("shop"), "e"),
            "/registry/events/shop/e"
        );
    }

    #[test]
    fn every_stored_kind_berth_validate_knows_is_served_at_its_preferred_version() {
        for info in kinds::KINDS {
            let served = by_group_kind(info.group(), info.kind);
            if !info.listable {
                assert!(served.is_none(), "{} is not stored", info.kind);
                continue;
            }
            let r = served.unwrap_or_else(|| panic!("{} {}", info.api_version, info.kind));
            assert!(
                version_rank(r.version) >= version_rank(info.version()),
                "{} served at {}, not {}",
                info.kind,
                r.version,
                info.version()
            );
            assert_eq!(r.namespaced, info.namespaced, "{}", info.kind);
        }
        assert_eq!(
            by_group_kind("autoscaling", "HorizontalPodAutoscaler")
                .unwrap()
                .version,
            "v2"
        );
        assert!(by_kind("autoscaling/v1", "HorizontalPodAutoscaler").is_none());
        for (group, kind) in [
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("", "PersistentVolume"),
            ("storage.k8s.io", "StorageClass"),
            ("networking.k8s.io", "IngressClass"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("storage.k8s.io", "CSIDriver"),
        ] {
            assert!(!by_group_kind(group, kind).unwrap().namespaced, "{kind}");
        }
    }

    #[test]
    fn versions_order_as_kubernetes_orders_them() {
        let mut versions = vec!["v1alpha1", "v1beta1", "v1", "v2", "v1beta2", "v2alpha1"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_rank(v)));
        assert_eq!(
            versions,
            ["v2", "v1", "v1beta2", "v1beta1", "v2alpha1", "v1alpha1"]
        );
    }

    #[test]
    fn status_spec_and_scale_follow_the_kinds_schemas() {
        let mut wrong = Vec::new();
        for r in built_in() {
            let Some(info) = kinds::find(r.api_version, r.kind) else {
                continue;
            };
            let schema = serde_json::to_value((info.schema)()).unwrap();
            let has = |field: &str| schema["properties"].get(field).is_some();
            if has("status") != r.has(Subresource::Status) {
                wrong.push(format!("{} status: schema {}", r.kind, has("status")));
            }
            if has("spec") != r.has_spec {
                wrong.push(format!("{} spec: schema {}", r.kind, has("spec")));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        for kind in ["Deployment", "ReplicaSet", "StatefulSet"] {
            assert!(by_group_kind("apps", kind).unwrap().has(Subresource::Scale));
        }
    }

    #[test]
    fn kubectl_get_all_covers_kubernetes_set_and_short_names_resolve() {
        let mut all_kinds: Vec<&str> = all()
            .iter()
            .filter(|r| r.categories.contains(&"all"))
            .map(|r| r.plural)
            .collect();
        all_kinds.sort();
        let mut want = CATEGORY_ALL.to_vec();
        want.sort();
        assert_eq!(all_kinds, want);
        for (group, plural, short) in [
            ("", "serviceaccounts", "sa"),
            ("", "persistentvolumeclaims", "pvc"),
            ("apps", "statefulsets", "sts"),
            ("batch", "cronjobs", "cj"),
            ("networking.k8s.io", "ingresses", "ing"),
            ("policy", "poddisruptionbudgets", "pdb"),
        ] {
            let r = all()
                .iter()
                .find(|r| r.group == group && r.plural == plural)
                .copied()
                .unwrap();
            assert!(r.short_names.contains(&short), "{plural}");
        }
    }

    #[test]
    fn resources_join_and_leave_the_registry_at_runtime() {
        let widget = Resource {
            group: "registry-test.berth.dev",
            version: "v1",
            api_version: "registry-test.berth.dev/v1",
            kind: "Widget",
            plural: "widgets",
            storage: "registry-test.berth.dev/widgets",
            singular: "widget".into(),
            namespaced: true,
            short_names: &["wd"],
            categories: &[],
            subresources: &[Subresource::Status],
            has_spec: true,
            stored_as: None,
        };
        let before = generation();
        let added = insert(widget.clone());
        assert!(generation() > before);
        let found = by_plural("registry-test.berth.dev", "v1", "widgets").unwrap();
        assert!(std::ptr::eq(found, added));
        assert!(
            std::ptr::eq(insert(widget), added),
            "an equal resource is reused"
        );
        assert!(by_kind("registry-test.berth.dev/v1", "Widget").is_some());
        assert!(all().iter().any(|r| r.kind == "Widget"));
        assert!(remove("registry-test.berth.dev", "v1", "widgets").is_some());
        assert!(by_plural("registry-test.berth.dev", "v1", "widgets").is_none());
        assert!(remove("registry-test.berth.dev", "v1", "widgets").is_none());
    }
}
