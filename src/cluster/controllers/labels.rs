//! Label requirements as the API spells them (`matchLabels`, `matchExpressions` with In,
//! NotIn, Exists, DoesNotExist, and for node affinity Gt and Lt), matched against labels.

use serde_json::{Map, Value};

/// One `key operator values` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl Requirement {
    /// From a `matchExpressions` entry.
    pub fn from_json(v: &Value) -> Requirement {
        Requirement {
            key: v["key"].as_str().unwrap_or("").to_string(),
            operator: v["operator"].as_str().unwrap_or("").to_string(),
            values: v["values"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Whether `labels` satisfy the requirement. An unknown operator matches nothing.
    pub fn matches(&self, labels: &dyn Fn(&str) -> Option<String>) -> bool {
        let value = labels(&self.key);
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !self.values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }
            _ => false,
        }
    }
}

fn lookup(labels: &Value) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Whether a `LabelSelector` (matchLabels and matchExpressions) selects these labels.
/// An empty selector selects everything, as in the API.
pub fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = lookup(labels);
    let by_label = selector["matchLabels"]
        .as_object()
        .is_none_or(|m: &Map<String, Value>| {
            m.iter().all(|(k, v)| get(k).as_deref() == v.as_str())
        });
    by_label
        && selector["matchExpressions"].as_array().is_none_or(|exprs| {
            exprs
                .iter()
                .all(|e| Requirement::from_json(e).matches(&get))
        })
}

/// Whether the selector has no requirement at all (it would select every pod).
pub fn selector_is_empty(selector: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_none_or(Map::is_empty)
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            &labels
        ));
        let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(selector_matches(
            &expr("In", json!(["front", "x"])),
            &labels
        ));
        assert!(!selector_matches(&expr("NotIn", json!(["front"])), &labels));
        assert!(selector_matches(&expr("Exists", json!([])), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", json!([])), &labels));
        assert!(!selector_matches(&expr("Bogus", json!([])), &labels));
        let gt = Requirement {
            key: "cores".into(),
            operator: "Gt".into(),
            values: vec!["4".into()],
        };
        assert!(gt.matches(&|_| Some("8".into())));
        assert!(!gt.matches(&|_| Some("2".into())));
        assert!(selector_is_empty(&json!({})));
    }
}
