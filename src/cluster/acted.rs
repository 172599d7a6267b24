//! Which of the served kinds berth acts on, and what acts on each: the source of README's
//! table "served / acted on" (a test checks the README against it) and of
//! `berth validate --warn-unacted`. Every other built-in kind is stored and served only, as
//! Kubernetes serves a NetworkPolicy its network plugin ignores.

/// `(group, kind, what acts on it)`.
pub const ACTED_ON: &[(&str, &str, &str)] = &[
    (
        "",
        "Namespace",
        "namespace controller (deleting one empties it)",
    ),
    ("", "Pod", "scheduler, agent (Docker containers)"),
    (
        "",
        "Service",
        "API (ClusterIP, NodePort), endpoints and load-balancer controllers, agent (nftables, DNS)",
    ),
    (
        "",
        "Endpoints",
        "endpoints controller writes them, agent routes to them",
    ),
    ("", "ConfigMap", "agent (environment, volumes)"),
    (
        "",
        "Secret",
        "agent (environment, volumes), git sync (credentials)",
    ),
    ("", "Node", "node controller, scheduler, agent"),
    (
        "",
        "Event",
        "written by the scheduler, controllers and agents",
    ),
    ("apps", "Deployment", "deployment controller"),
    (
        "apps",
        "ReplicaSet",
        "replica set controller, garbage collector",
    ),
    (
        "coordination.k8s.io",
        "Lease",
        "leader election, node heartbeats",
    ),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        "endpoints controller writes them, agent routes to them",
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "API server (serves its custom resources; deleting one deletes them)",
    ),
    (
        "policy",
        "PodDisruptionBudget",
        "disruption controller (status), API (pods/eviction spends it)",
    ),
    ("berth.dev", "GitSource", "git sync"),
];

/// What acts on a kind of `group`, or `None` when berth only stores and serves it.
pub fn acted_on(group: &str, kind: &str) -> Option<&'static str> {
    ACTED_ON
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, by)| *by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::resources;
    use crate::manifest::kinds;

    /// README's table, as the code has it: one row per served built-in kind.
    fn readme_table() -> String {
        let mut out =
            String::from("| kind | served as | scope | acted on by |\n|---|---|---|---|\n");
        for r in resources::all().iter() {
            if kinds::find(r.api_version, r.kind).is_none() {
                continue;
            }
            let scope = if r.namespaced {
                "namespaced"
            } else {
                "cluster"
            };
            let by = acted_on(r.group, r.kind).unwrap_or("— (stored and served only)");
            out.push_str(&format!(
                "| {} | `{}` | {scope} | {by} |\n",
                r.kind, r.api_version
            ));
        }
        out
    }

    #[test]
    fn the_readme_table_is_true_to_the_code() {
        let readme = include_str!("../../README.md");
        let want = readme_table();
        assert!(
            readme.contains(&want),
            "README.md's \"served / acted on\" table differs from the code; it should read:\n{want}"
        );
        for (group, kind, _) in ACTED_ON {
            assert!(
                resources::by_group_kind(group, kind).is_some(),
                "{kind} is acted on, so served"
            );
        }
    }
}
