//! Taints and tolerations as Kubernetes matches them, read once from a node's and a pod's
//! JSON: the scheduler's filter keeps pods off nodes whose taints they do not tolerate, and
//! the node lifecycle controller evicts them from unreachable ones.

use serde_json::Value;

/// A taint or a toleration's effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    /// `Exists` or `Equal`.
    pub operator: String,
    pub value: String,
    /// Empty: every effect.
    pub effect: String,
    pub seconds: Option<i64>,
}

impl Toleration {
    pub fn from_json(v: &Value) -> Toleration {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        Toleration {
            key: s("key"),
            operator: if s("operator").is_empty() {
                "Equal".into()
            } else {
                s("operator")
            },
            value: s("value"),
            effect: s("effect"),
            seconds: v["tolerationSeconds"].as_i64(),
        }
    }

    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if self.key.is_empty() {
            return self.operator == "Exists";
        }
        self.key == taint.key
            && match self.operator.as_str() {
                "Exists" => true,
                _ => self.value == taint.value,
            }
    }
}

pub fn tolerations_of(pod: &Value) -> Vec<Toleration> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Toleration::from_json).collect())
        .unwrap_or_default()
}

pub fn taints_of(node: &Value) -> Vec<Taint> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| Taint {
                    key: t["key"].as_str().unwrap_or("").into(),
                    value: t["value"].as_str().unwrap_or("").into(),
                    effect: t["effect"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default()
}
