//! What the server serves, as a client sees it: the resources of every group/version from
//! the server's discovery documents, and the kubectl rules for naming them on the command
//! line (`po`, `pods`, `pod`, `Pod`, `deployments.apps`, `deploy`). The server is the one
//! table of kinds; this module only reads it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

/// One resource the server serves (subresources left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Lower-case plural, as in URLs.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
}

impl ServedResource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`: how the server's Status messages name it.
    pub fn qualified_plural(&self) -> String {
        qualify(&self.plural, &self.group)
    }

    /// `pod` or `deployment.apps`: how kubectl names one object (`pod/x`, `pod "x" deleted`).
    pub fn qualified_singular(&self) -> String {
        qualify(&self.kind.to_lowercase(), &self.group)
    }

    /// The URL path of the collection (`name` None) or of one object. `namespace` None on a
    /// namespaced resource means every namespace.
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut path = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let Some(ns) = namespace.filter(|_| self.namespaced) {
            path.push_str("/namespaces/");
            path.push_str(ns);
        }
        path.push('/');
        path.push_str(&self.plural);
        if let Some(name) = name {
            path.push('/');
            path.push_str(name);
        }
        path
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{group}")
    }
}

/// A resource type the server does not serve, worded as kubectl words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server doesn't have a resource type \"{0}\"")]
pub struct UnknownResource(pub String);

/// Every resource the server serves, in discovery order (core first).
#[derive(Debug, Clone, Default)]
pub struct ServedResources(pub Vec<ServedResource>);

impl ServedResources {
    /// Builds the index from discovery documents (core `v1` first, then each group's
    /// preferred version).
    pub fn from_lists(lists: &[APIResourceList]) -> ServedResources {
        let mut out = Vec::new();
        for list in lists {
            let (group, version) = match list.group_version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), list.group_version.clone()),
            };
            for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                out.push(ServedResource {
                    group: r.group.clone().unwrap_or_else(|| group.clone()),
                    version: r.version.clone().unwrap_or_else(|| version.clone()),
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                    singular: if r.singular_name.is_empty() {
                        r.kind.to_lowercase()
                    } else {
                        r.singular_name.clone()
                    },
                    namespaced: r.namespaced,
                    short_names: r.short_names.clone().unwrap_or_default(),
                    categories: r.categories.clone().unwrap_or_default(),
                    verbs: r.verbs.clone(),
                });
            }
        }
        ServedResources(out)
    }

    /// The resource a command-line word names: a plural, singular, short name or kind, each
    /// optionally qualified by its group (`deployments.apps`, `deploy.apps`), any case.
    pub fn resolve(&self, word: &str) -> Result<&ServedResource, UnknownResource> {
        let lower = word.to_lowercase();
        let names = |r: &ServedResource| {
            let mut names = vec![r.plural.clone(), r.singular.clone(), r.kind.to_lowercase()];
            names.extend(r.short_names.iter().map(|s| s.to_lowercase()));
            names
        };
        // Unqualified first: `pods` must not be read as group `s` of `pod`.
        self.0
            .iter()
            .find(|r| names(r).contains(&lower))
            .or_else(|| {
                let (name, group) = lower.split_once('.')?;
                self.0
                    .iter()
                    .find(|r| r.group == group && names(r).iter().any(|n| n == name))
            })
            .ok_or_else(|| UnknownResource(word.to_string()))
    }

    /// The resource of a manifest's `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ServedResource> {
        self.0
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// The resources in a category (`all`), in discovery order.
    pub fn category(&self, name: &str) -> Vec<&ServedResource> {
        self.0
            .iter()
            .filter(|r| r.categories.iter().any(|c| c == name))
            .collect()
    }
}

/// Reads the server's discovery documents: `/api` and `/apis`, then the resource lists of
/// core `v1` and of each group's preferred version, those concurrently.
pub async fn discover(client: &kube::Client) -> Result<ServedResources, kube::Error> {
    let (core, groups) =
        futures::try_join!(client.list_core_api_versions(), client.list_api_groups())?;
    let mut versions: Vec<String> = core
        .versions
        .into_iter()
        .filter(|v| v.as_str() == "v1")
        .collect();
    for group in groups.groups {
        let gv = group
            .preferred_version
            .map(|v| v.group_version)
            .or_else(|| group.versions.first().map(|v| v.group_version.clone()));
        versions.extend(gv);
    }
    let lists = futures::future::try_join_all(versions.iter().map(|gv| async move {
        if gv.contains('/') {
            client.list_api_group_resources(gv).await
        } else {
            client.list_core_api_resources(gv).await
        }
    }))
    .await?;
    Ok(ServedResources::from_lists(&lists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn resource(name: &str, kind: &str, short: &[&str], namespaced: bool) -> APIResource {
        APIResource {
            name: name.into(),
            kind: kind.into(),
            singular_name: kind.to_lowercase(),
            namespaced,
            short_names: Some(short.iter().map(|s| s.to_string()).collect()),
            verbs: vec!["get".into(), "list".into()],
            ..APIResource::default()
        }
    }

    fn served() -> ServedResources {
        ServedResources::from_lists(&[
            APIResourceList {
                group_version: "v1".into(),
                resources: vec![
                    resource("pods", "Pod", &["po"], true),
                    resource("pods/status", "Pod", &[], true),
                    resource("namespaces", "Namespace", &["ns"], false),
                ],
            },
            APIResourceList {
                group_version: "apps/v1".into(),
                resources: vec![resource("deployments", "Deployment", &["deploy"], true)],
            },
        ])
    }

    #[test]
    fn short_plural_singular_kind_and_qualified_names_all_resolve() {
        let served = served();
        for word in ["po", "pods", "pod", "Pod", "PODS"] {
            assert_eq!(served.resolve(word).unwrap().plural, "pods", "{word}");
        }
        for word in [
            "deploy",
            "deployments.apps",
            "deployment.apps",
            "Deployment",
        ] {
            assert_eq!(served.resolve(word).unwrap().kind, "Deployment", "{word}");
        }
        assert_eq!(served.0.len(), 3, "subresources are not resource types");
        let err = served.resolve("gadgets").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server doesn't have a resource type \"gadgets\""
        );
        assert!(served.resolve("deployments.batch").is_err());
    }

    #[test]
    fn paths_and_names_follow_the_api_conventions() {
        let served = served();
        let deploy = served.resolve("deploy").unwrap();
        assert_eq!(
            deploy.path(Some("shop"), Some("web")),
            "/apis/apps/v1/namespaces/shop/deployments/web"
        );
        assert_eq!(deploy.path(None, None), "/apis/apps/v1/deployments");
        assert_eq!(deploy.qualified_singular(), "deployment.apps");
        let ns = served.resolve("ns").unwrap();
        assert_eq!(
            ns.path(Some("ignored"), Some("shop")),
            "/api/v1/namespaces/shop"
        );
        assert_eq!(ns.qualified_plural(), "namespaces");
    }
}
