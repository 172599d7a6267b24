//! Secret masking: the values of a Secret's `data` and `stringData` never leave the diff engine.
//! Keys stay visible; each value becomes `***`, or `*** (before)` / `*** (after)` where the two
//! sides differ, as kubectl diff shows them.

use serde_json::{Map, Value};

/// What a hidden value is shown as.
pub const MASK: &str = "***";
pub const MASK_BEFORE: &str = "*** (before)";
pub const MASK_AFTER: &str = "*** (after)";

const SECRET_FIELDS: [&str; 2] = ["data", "stringData"];

/// Whether an object is a Secret. Any API group counts: better to hide too much than too little.
pub fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
}

fn field<'a>(object: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    object.and_then(|o| o.get(name))
}

/// Replaces the secret values of both sides of one object in place.
pub fn mask_pair(before: Option<&mut Value>, after: Option<&mut Value>) {
    let secret =
        before.as_deref().is_some_and(is_secret) || after.as_deref().is_some_and(is_secret);
    if !secret {
        return;
    }
    let (mut before, mut after) = (before, after);
    for name in SECRET_FIELDS {
        let old = field(before.as_deref(), name).cloned();
        let new = field(after.as_deref(), name).cloned();
        if let Some(b) = before.as_deref_mut().and_then(|o| o.get_mut(name)) {
            *b = masked(b, new.as_ref(), MASK_BEFORE);
        }
        if let Some(a) = after.as_deref_mut().and_then(|o| o.get_mut(name)) {
            *a = masked(a, old.as_ref(), MASK_AFTER);
        }
    }
}

/// One side's field, masked against the other side's: equal values become `***`, different
/// ones get `marker`. A field that is not a mapping is hidden whole.
fn masked(mine: &Value, theirs: Option<&Value>, marker: &str) -> Value {
    let Value::Object(entries) = mine else {
        let same = theirs == Some(mine);
        return Value::String(
            if same || theirs.is_none() {
                MASK
            } else {
                marker
            }
            .into(),
        );
    };
    let theirs = theirs.and_then(Value::as_object);
    let out: Map<String, Value> = entries
        .iter()
        .map(|(key, value)| {
            let shown = match theirs.and_then(|t| t.get(key)) {
                Some(other) if other != value => marker,
                _ => MASK,
            };
            (key.clone(), Value::String(shown.to_string()))
        })
        .collect();
    Value::Object(out)
}

/// A copy of one object with its secret values hidden (for a side shown alone).
pub fn masked_copy(object: &Value) -> Value {
    let mut copy = object.clone();
    mask_pair(Some(&mut copy), None);
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_values_are_marked_and_equal_ones_hidden() {
        let mut before =
            json!({"kind": "Secret", "data": {"a": "MQ==", "b": "Mg==", "gone": "Mw=="}});
        let mut after =
            json!({"kind": "Secret", "data": {"a": "MQ==", "b": "NA==", "new": "NQ=="}});
        mask_pair(Some(&mut before), Some(&mut after));
        assert_eq!(
            before["data"],
            json!({"a": "***", "b": "*** (before)", "gone": "***"})
        );
        assert_eq!(
            after["data"],
            json!({"a": "***", "b": "*** (after)", "new": "***"})
        );
    }

    #[test]
    fn other_kinds_are_left_alone() {
        let mut cm = json!({"kind": "ConfigMap", "data": {"a": "1"}});
        mask_pair(Some(&mut cm), None);
        assert_eq!(cm["data"]["a"], "1");
    }

    #[test]
    fn a_malformed_data_field_is_hidden_whole() {
        let masked = masked_copy(&json!({"kind": "Secret", "data": "c2VjcmV0"}));
        assert_eq!(masked["data"], "***");
    }
}
