//! The parent Secret of a set in a plan: whose it is, and what the batch makes of its id
//! label and its tooling, group-kinds and namespaces annotations (KEP-3659).

use serde_json::{Value, json};

use super::{Admission, Live, PlanError, SECRET, Step};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::Outcome;
use crate::apply::ssa::Writer;

/// Refuses a live Secret named like the parent that is not a berth ApplySet's parent.
pub(super) fn check_owned<E>(live: &Value, parent: &ParentRef) -> Result<(), PlanError<E>> {
    let labelled = live
        .pointer("/metadata/labels")
        .and_then(|l| l.get(applyset::ID_LABEL))
        .and_then(Value::as_str);
    let tooling = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(applyset::TOOLING_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or("");
    if labelled != Some(parent.id().as_str()) || !tooling.starts_with("berth/") {
        return Err(PlanError::ForeignParent {
            namespace: parent.namespace.clone(),
            name: parent.name.clone(),
            tooling: tooling.to_string(),
        });
    }
    Ok(())
}

/// What the parent's annotations need of a member: its apiVersion, kind and namespace.
pub(super) fn member_identity(object: &Value) -> Value {
    json!({
        "apiVersion": object.get("apiVersion"),
        "kind": object.get("kind"),
        "metadata": {"namespace": object.pointer("/metadata/namespace")},
    })
}

/// The parent Secret as the batch leaves it: created, or its id label and annotations
/// brought up to date (other labels and annotations are kept).
pub(super) fn step<A: Admission>(
    parent: &ParentRef,
    members: &[Value],
    live: Option<Live>,
    admission: &mut A,
    writer: &Writer<'_>,
) -> Result<Step, A::Error> {
    let wanted = applyset::parent_object(parent, members, env!("CARGO_PKG_VERSION"));
    let (outcome, new) = match &live {
        None => (
            Outcome::Created,
            Some(admission.create(SECRET, Some(&parent.namespace), wanted, writer, true)?),
        ),
        Some((old, _)) => {
            let mut new = old.clone();
            if !new.get("metadata").is_some_and(Value::is_object) {
                new["metadata"] = json!({});
            }
            let meta = new["metadata"]
                .as_object_mut()
                .expect("metadata is an object");
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            labels[applyset::ID_LABEL] = wanted["metadata"]["labels"][applyset::ID_LABEL].clone();
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.remove(applyset::NAMESPACES_ANNOTATION);
                if let Some(w) = wanted["metadata"]["annotations"].as_object() {
                    a.extend(w.clone());
                }
            }
            match admission.update(SECRET, old, new, Some(writer))? {
                Some(v) => (Outcome::Configured, Some(v)),
                None => (Outcome::Unchanged, None),
            }
        }
    };
    Ok(Step {
        kind: SECRET,
        namespace: Some(parent.namespace.clone()),
        key: admission.key(SECRET, Some(&parent.namespace), &parent.name),
        name: parent.name.clone(),
        outcome,
        live,
        new,
    })
}
