//! Rollout arithmetic of the Deployment controller, pure: `maxSurge`/`maxUnavailable` as
//! numbers or percentages, how far the new ReplicaSet may grow, how far the old ones may
//! shrink, and the `pod-template-hash` of a template.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// An int-or-percent field resolved against `total`: percentages round up for `maxSurge`
/// and down for `maxUnavailable`, as in Kubernetes.
pub fn resolve(value: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("{n} is not a non-negative integer")),
        Value::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| format!("{s:?} is neither an integer nor a percentage"))?;
            let scaled = pct * total;
            Ok(if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            })
        }
        Value::Null => Err("missing".into()),
        other => Err(format!("{other} is neither an integer nor a percentage")),
    }
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate strategy for `replicas`. When both are 0,
/// one pod may be unavailable, or the rollout could never start.
pub fn surge_and_unavailable(strategy: &Value, replicas: i64) -> Result<(i64, i64), String> {
    let ru = &strategy["rollingUpdate"];
    let pick = |k: &str| {
        if ru[k].is_null() {
            Value::String("25%".into())
        } else {
            ru[k].clone()
        }
    };
    let surge = resolve(&pick("maxSurge"), replicas, true).map_err(|e| format!("maxSurge: {e}"))?;
    let unavailable = resolve(&pick("maxUnavailable"), replicas, false)
        .map_err(|e| format!("maxUnavailable: {e}"))?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable.min(replicas)))
}

/// A ReplicaSet as the rollout sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
}

/// The new ReplicaSet's `replicas` for this step: grow while the total stays within
/// `replicas + surge`, never past `replicas`.
pub fn new_replicas(replicas: i64, surge: i64, new: Scale, olds: &[Scale]) -> i64 {
    if new.replicas >= replicas {
        return replicas;
    }
    let total: i64 = new.replicas + olds.iter().map(|s| s.replicas).sum::<i64>();
    let room = replicas + surge - total;
    if room <= 0 {
        return new.replicas;
    }
    new.replicas + room.min(replicas - new.replicas)
}

/// The old ReplicaSets' `replicas` (oldest first) for this step: first drop their
/// unavailable pods, then available ones while at least `replicas - unavailable` stay
/// available.
pub fn old_replicas(replicas: i64, unavailable: i64, new: Scale, olds: &[Scale]) -> Vec<i64> {
    let mut out: Vec<i64> = olds.iter().map(|s| s.replicas).collect();
    let all: i64 = new.replicas + out.iter().sum::<i64>();
    let min_available = replicas - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    // Unhealthy old pods first: removing them costs no availability.
    for (i, s) in olds.iter().enumerate() {
        if budget <= 0 {
            break;
        }
        let unhealthy = (s.replicas - s.available).max(0);
        let cut = unhealthy.min(budget);
        out[i] -= cut;
        budget -= cut;
    }
    // A ReplicaSet just scaled down may still report the pods it is deleting as available
    // (its status lags its spec): only pods within `spec.replicas` stay, so only they count.
    let staying = |s: &Scale| s.available.min(s.replicas);
    let available: i64 = staying(&new) + olds.iter().map(staying).sum::<i64>();
    let mut spare = (available - min_available).min(budget);
    for replicas in out.iter_mut() {
        if spare <= 0 {
            break;
        }
        let cut = (*replicas).min(spare);
        *replicas -= cut;
        spare -= cut;
    }
    out
}

const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A stable rendering of JSON with object keys sorted.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for x in a {
                canonical(x, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A copy without null fields: Go clients send `creationTimestamp: null` in templates, which
/// means the same as leaving it out.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The `pod-template-hash` of a pod template: short, stable, DNS-safe.
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(&without_nulls(template), &mut text);
    let digest = Sha256::digest(text.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// Whether a ReplicaSet's template is the Deployment's (ignoring `pod-template-hash`).
pub fn same_template(rs_template: &Value, template: &Value) -> bool {
    let mut a = without_nulls(rs_template);
    if let Some(labels) = a
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    let mut b = without_nulls(template);
    if let Some(labels) = b
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    let empty = |v: &mut Value| {
        if v.pointer("/metadata/labels")
            .is_some_and(|l| l.as_object().is_some_and(|m| m.is_empty()))
            && let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    };
    empty(&mut a);
    empty(&mut b);
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentages_round_up_for_surge_and_down_for_unavailable() {
        let s = json!({"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
        assert_eq!(surge_and_unavailable(&s, 6), Ok((2, 1)));
        assert_eq!(surge_and_unavailable(&s, 10), Ok((3, 2)));
        let s = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        assert_eq!(surge_and_unavailable(&s, 6), Ok((1, 0)));
        let s = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
        assert_eq!(surge_and_unavailable(&s, 6), Ok((0, 1)));
        let s = json!({"rollingUpdate": {"maxSurge": "x%"}});
        assert!(surge_and_unavailable(&s, 6).is_err());
        assert_eq!(resolve(&json!("100%"), 3, false), Ok(3));
    }

    #[test]
    fn max_unavailable_zero_rolls_one_surge_pod_at_a_time() {
        let scale = |replicas, available| Scale {
            replicas,
            available,
        };
        // Start: 6 old, surge 1 → the new ReplicaSet may grow to 1, the old may not shrink.
        let new = new_replicas(6, 1, scale(0, 0), &[scale(6, 6)]);
        assert_eq!(new, 1);
        assert_eq!(old_replicas(6, 0, scale(1, 0), &[scale(6, 6)]), vec![6]);
        // The new pod is available: one old pod may go.
        assert_eq!(old_replicas(6, 0, scale(1, 1), &[scale(6, 6)]), vec![5]);
        assert_eq!(new_replicas(6, 1, scale(1, 1), &[scale(5, 5)]), 2);
        // Done.
        assert_eq!(new_replicas(6, 1, scale(6, 6), &[scale(0, 0)]), 6);
        assert_eq!(old_replicas(6, 0, scale(6, 6), &[scale(0, 0)]), vec![0]);
    }

    #[test]
    fn a_lagging_old_status_does_not_let_availability_dip() {
        let scale = |replicas, available| Scale {
            replicas,
            available,
        };
        // The old ReplicaSet was just cut from 6 to 5 but its status still says 6 available
        // when the second new pod becomes available: only one more old pod may go, not two.
        assert_eq!(old_replicas(6, 0, scale(2, 2), &[scale(5, 6)]), vec![4]);
        // Nor may an old pod go while the only spare pod is one being deleted.
        assert_eq!(old_replicas(6, 0, scale(2, 1), &[scale(5, 6)]), vec![5]);
    }

    #[test]
    fn unhealthy_old_pods_go_before_available_ones() {
        let scale = |replicas, available| Scale {
            replicas,
            available,
        };
        // 4 wanted, 1 unavailable allowed; old has 4 of which 2 are unavailable.
        assert_eq!(old_replicas(4, 1, scale(0, 0), &[scale(4, 2)]), vec![3]);
        // Scaling down below replicas when the Deployment shrank.
        assert_eq!(new_replicas(2, 1, scale(5, 5), &[]), 2);
    }

    #[test]
    fn template_hashes_are_stable_and_ignore_key_order() {
        let a = json!({"metadata": {"labels": {"app": "web", "tier": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"tier": "x", "app": "web"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let h = template_hash(&a);
        assert!(
            !h.is_empty() && h.len() <= 10 && h.bytes().all(|c| SAFE.contains(&c)),
            "{h}"
        );
        let mut c = a.clone();
        c["spec"]["containers"][0]["image"] = json!("i:2");
        assert_ne!(template_hash(&a), template_hash(&c));
        let mut hashed = a.clone();
        hashed["metadata"]["labels"]["pod-template-hash"] = json!(h);
        hashed["metadata"]["creationTimestamp"] = Value::Null;
        assert!(same_template(&hashed, &a), "a null field is a missing one");
        assert!(!same_template(&hashed, &c));
    }
}
