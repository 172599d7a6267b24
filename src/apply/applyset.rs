//! ApplySet membership as in KEP-3659, so kubectl's ApplySet tooling recognises what berth
//! applied: members carry `applyset.kubernetes.io/part-of=<id>`; a parent object carries the
//! id label and the tooling and group-kinds annotations.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Label on every member: the id of the ApplySet it belongs to.
pub const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
/// Label on the parent: its own ApplySet id.
pub const ID_LABEL: &str = "applyset.kubernetes.io/id";
/// Annotation on the parent: who manages the set (`berth/<version>`).
pub const TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// Annotation on the parent: the sorted, comma-separated `Kind.group` of every member.
pub const GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
/// Annotation on the parent: namespaces other than its own that hold members.
pub const NAMESPACES_ANNOTATION: &str = "applyset.kubernetes.io/additional-namespaces";

/// Which object is the parent of an ApplySet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    pub name: String,
    pub namespace: String,
    pub kind: String,
    /// API group, empty for the core group.
    pub group: String,
}

impl ParentRef {
    /// A Secret parent, as `kubectl apply --applyset=NAME` uses by default.
    pub fn secret(name: &str, namespace: &str) -> ParentRef {
        ParentRef {
            name: name.to_string(),
            namespace: namespace.to_string(),
            kind: "Secret".to_string(),
            group: String::new(),
        }
    }

    /// The ApplySet id: `applyset-<base64url(sha256(name.namespace.kind.group))>-v1`.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(format!(
            "{}.{}.{}.{}",
            self.name, self.namespace, self.kind, self.group
        ));
        format!(
            "applyset-{}-v1",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }
}

/// `Kind.group` (or `Kind` for the core group), as the group-kinds annotation lists them.
pub fn group_kind(api_version: &str, kind: &str) -> String {
    match api_version.rsplit_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.to_string(),
    }
}

/// The `Kind.group`s a live parent lists in its group-kinds annotation.
pub fn listed_group_kinds(parent: &Value) -> BTreeSet<String> {
    comma_list(annotation(parent, GROUP_KINDS_ANNOTATION))
}

/// The namespaces other than its own a live parent lists.
pub fn listed_namespaces(parent: &Value) -> BTreeSet<String> {
    comma_list(annotation(parent, NAMESPACES_ANNOTATION))
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn comma_list(text: Option<&str>) -> BTreeSet<String> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The parent object of an ApplySet with these members (a Secret with no data).
pub fn parent_object(parent: &ParentRef, members: &[Value], tooling_version: &str) -> Value {
    let group_kinds: BTreeSet<String> = members
        .iter()
        .filter_map(|m| {
            Some(group_kind(
                m.get("apiVersion")?.as_str()?,
                m.get("kind")?.as_str()?,
            ))
        })
        .collect();
    let namespaces: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.pointer("/metadata/namespace")?.as_str())
        .filter(|ns| *ns != parent.namespace)
        .collect();
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        TOOLING_ANNOTATION.into(),
        Value::String(format!("berth/{tooling_version}")),
    );
    annotations.insert(
        GROUP_KINDS_ANNOTATION.into(),
        Value::String(group_kinds.into_iter().collect::<Vec<_>>().join(",")),
    );
    if !namespaces.is_empty() {
        annotations.insert(
            NAMESPACES_ANNOTATION.into(),
            Value::String(namespaces.into_iter().collect::<Vec<_>>().join(",")),
        );
    }
    json!({
        "apiVersion": "v1",
        "kind": parent.kind,
        "metadata": {
            "name": parent.name,
            "namespace": parent.namespace,
            "labels": { ID_LABEL: parent.id() },
            "annotations": annotations,
        },
    })
}

/// Labels `object` as a member of the ApplySet `id`.
pub fn mark_member(object: &mut Value, id: &str) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    let metadata = obj.entry("metadata").or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(PART_OF_LABEL.into(), Value::String(id.to_string()));
    }
}

/// Whether a live object belongs to the ApplySet `id`.
pub fn is_member(object: &Value, id: &str) -> bool {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(PART_OF_LABEL))
        .and_then(Value::as_str)
        == Some(id)
}

/// Why a prune was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to prune {would_delete} of {members} objects ({}); pass --prune-allow-mass-delete if this is intended",
    if *would_delete == *members { "every member of the set" } else { "more than half of the set" }
)]
pub struct MassDelete {
    pub would_delete: usize,
    pub members: usize,
}

/// The prune guard: deleting every member, or more than half of them, needs explicit consent.
pub fn check_prune(
    would_delete: usize,
    members: usize,
    allow_mass_delete: bool,
) -> Result<(), MassDelete> {
    let mass = would_delete > 0 && (would_delete == members || would_delete * 2 > members);
    if mass && !allow_mass_delete {
        return Err(MassDelete {
            would_delete,
            members,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_kep_3659() {
        // sha256("app.shop.Secret.") in unpadded base64url, as the KEP specifies.
        // Computed independently with Python's hashlib and base64.urlsafe_b64encode.
        assert_eq!(
            ParentRef::secret("app", "shop").id(),
            "applyset-xBGgD7ezqO0K_4n18GXaCHUKkjperhz03aQL4kfP93M-v1"
        );
        assert_ne!(
            ParentRef::secret("app", "shop").id(),
            ParentRef::secret("app", "other").id()
        );
    }

    #[test]
    fn parent_lists_group_kinds_and_namespaces() {
        let parent = ParentRef::secret("app", "shop");
        let members = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "shop"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w", "namespace": "edge"}}),
        ];
        let p = parent_object(&parent, &members, "0.1.0");
        let ann = &p["metadata"]["annotations"];
        assert_eq!(ann[GROUP_KINDS_ANNOTATION], "Deployment.apps,Service");
        assert_eq!(ann[NAMESPACES_ANNOTATION], "edge");
        assert_eq!(ann[TOOLING_ANNOTATION], "berth/0.1.0");
        assert_eq!(p["metadata"]["labels"][ID_LABEL], parent.id());
    }

    #[test]
    fn a_live_parent_lists_where_its_members_are() {
        let parent = ParentRef::secret("app", "shop");
        let members = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "shop"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "edge"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "back"}}),
        ];
        let p = parent_object(&parent, &members, "0.1.0");
        assert_eq!(
            listed_group_kinds(&p),
            ["Deployment.apps".to_string(), "Service".to_string()].into()
        );
        assert_eq!(
            listed_namespaces(&p),
            ["back".to_string(), "edge".to_string()].into()
        );
        assert!(listed_namespaces(&json!({"metadata": {}})).is_empty());
    }

    #[test]
    fn membership_round_trips() {
        let mut o = json!({"metadata": {"name": "x"}});
        mark_member(&mut o, "applyset-abc-v1");
        assert!(is_member(&o, "applyset-abc-v1"));
        assert!(!is_member(&o, "applyset-other-v1"));
    }

    #[test]
    fn guard_refuses_mass_deletes() {
        assert!(check_prune(1, 4, false).is_ok());
        assert!(check_prune(2, 4, false).is_ok());
        assert!(check_prune(3, 4, false).is_err());
        assert!(check_prune(4, 4, false).is_err());
        assert!(check_prune(4, 4, true).is_ok());
        assert!(check_prune(0, 0, false).is_ok());
    }
}
