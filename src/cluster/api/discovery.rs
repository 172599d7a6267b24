//! Discovery: `/version`, `/api`, `/api/v1`, `/apis` and `/apis/{group}/{version}`, built
//! from the resource registry, in the legacy (non-aggregated) form every kubectl accepts.

use serde_json::{Value, json};

use super::resources::{self, Resource, Subresource, group_versions};
use crate::manifest::kinds::KUBERNETES_VERSION;

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

pub fn version() -> Value {
    let (major, minor) = KUBERNETES_VERSION
        .split_once('.')
        .unwrap_or((KUBERNETES_VERSION, "0"));
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{KUBERNETES_VERSION}.0+berth-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (berth is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// Every group with the versions it serves, the preferred (GA before beta before alpha) first.
pub fn groups() -> Value {
    let mut by_group: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in group_versions().into_iter().filter(|(g, _)| !g.is_empty()) {
        match by_group.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => by_group.push((g, vec![v])),
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(g, mut versions)| {
            versions.sort_by_key(|v| std::cmp::Reverse(resources::version_rank(v)));
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "preferredVersion": versions[0], "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_entry(r: &Resource) -> Value {
    json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
    })
}

fn subresource_entry(r: &Resource, sub: Subresource) -> Value {
    let (kind, verbs, extra): (&str, &[&str], Value) = match sub {
        Subresource::Status => (r.kind, &["get", "patch", "update"], json!({})),
        Subresource::Scale => (
            "Scale",
            &["get", "patch", "update"],
            json!({"group": "autoscaling", "version": "v1"}),
        ),
        Subresource::Binding => ("Binding", &["create"], json!({})),
        Subresource::Log => ("Pod", &["get"], json!({})),
        Subresource::Exec => ("PodExecOptions", &["create", "get"], json!({})),
        // kubectl drain evicts only when discovery names the Eviction's group and version.
        Subresource::Eviction => (
            "Eviction",
            &["create"],
            json!({"group": "policy", "version": "v1"}),
        ),
    };
    let mut v = json!({
        "name": format!("{}/{}", r.plural, sub.name()),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    v
}

/// The APIResourceList of one group/version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let all = resources::all();
    let served: Vec<&Resource> = all
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| &**r)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in served {
        resources.push(resource_entry(r));
        for sub in r.subresources {
            resources.push(subresource_entry(r, *sub));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_short_names_scope_and_subresources() {
        let core = resource_list("", "v1").unwrap();
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"][0], "po");
        assert_eq!(pods["namespaced"], true);
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(resource_list("example.com", "v1").is_none());
        assert!(resource_list("batch", "v1").is_some());
        let names: Vec<_> = groups()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.contains(&"apps".into()) && names.contains(&"berth.dev".into()));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each group is listed once");
        let scheduling = groups()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "scheduling.k8s.io")
            .cloned()
            .unwrap();
        assert_eq!(scheduling["preferredVersion"]["version"], "v1");
        assert!(scheduling["versions"].as_array().unwrap().len() > 1);
    }
}
