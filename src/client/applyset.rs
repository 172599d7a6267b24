//! The members of an ApplySet as a client finds them (KEP-3659): the parent Secret names the
//! group-kinds and namespaces the set holds, and each member carries the
//! `applyset.kubernetes.io/part-of` label. One labelled list per kind and namespace, so a set of
//! any size is read without anything having to keep an inventory of it. What
//! `berth gitsource inventory` prints and `berth up --git` shows.

use serde_json::Value;

use super::discovery::ServedResources;
use crate::apply::applyset::{self, ParentRef};

/// One member of a set; members sort by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub api_version: String,
}

/// GET as JSON; `None` when the object does not exist.
async fn get_json(client: &kube::Client, path: &str) -> Result<Option<Value>, kube::Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request");
    match client.request::<Value>(request).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The members of the set whose parent is the Secret `parent`, sorted; `None` when the parent
/// does not exist (nothing was applied yet).
pub async fn members(
    client: &kube::Client,
    served: &ServedResources,
    parent: &ParentRef,
) -> Result<Option<Vec<Member>>, String> {
    let secrets = served
        .by_kind("v1", "Secret")
        .ok_or("the server does not serve Secrets")?;
    let path = secrets.path(Some(&parent.namespace), Some(&parent.name));
    let live = get_json(client, &path)
        .await
        .map_err(|e| format!("cannot read the ApplySet parent {path}: {e}"))?;
    let Some(live) = live else { return Ok(None) };
    let mut namespaces = applyset::listed_namespaces(&live);
    namespaces.insert(parent.namespace.clone());
    let selector = format!("{}={}", applyset::PART_OF_LABEL, parent.id());
    let mut out = Vec::new();
    for group_kind in applyset::listed_group_kinds(&live) {
        let (kind, group) = group_kind
            .split_once('.')
            .unwrap_or((group_kind.as_str(), ""));
        let Some(resource) = served.0.iter().find(|r| r.kind == kind && r.group == group) else {
            continue;
        };
        let scopes: Vec<Option<&str>> = if resource.namespaced {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        } else {
            vec![None]
        };
        for ns in scopes {
            let list = format!(
                "{}?labelSelector={}",
                resource.path(ns, None),
                urlencode(&selector)
            );
            let Some(page) = get_json(client, &list)
                .await
                .map_err(|e| format!("cannot list {list}: {e}"))?
            else {
                continue;
            };
            for item in page["items"].as_array().into_iter().flatten() {
                out.push(Member {
                    api_version: resource.api_version(),
                    kind: resource.kind.clone(),
                    namespace: item["metadata"]["namespace"].as_str().map(str::to_string),
                    name: item["metadata"]["name"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    out.sort();
    Ok(Some(out))
}

/// Percent-encodes a query value (label selectors hold `/` and `=`).
fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_encoded_for_a_query() {
        assert_eq!(
            urlencode("applyset.kubernetes.io/part-of=applyset-x-v1"),
            "applyset.kubernetes.io%2Fpart-of%3Dapplyset-x-v1"
        );
    }
}
