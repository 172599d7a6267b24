//! `labelSelector` and `fieldSelector` query parameters: parsing and matching, with the
//! syntax kubectl sends (`app=web,tier!=db`, `env in (a,b)`, `!legacy`, `metadata.name=x`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One `key op values` term; all terms must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(v), Some(x)) => v == x,
            (Op::Eq(_), None) => false,
            // As in Kubernetes, `!=` and `notin` match objects without the label.
            (Op::NotEq(v), x) => x != Some(v.as_str()),
            (Op::In(vs), Some(x)) => vs.iter().any(|v| v == x),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), x) => x.is_none_or(|x| !vs.iter().any(|v| v == x)),
            (Op::Exists, x) => x.is_some(),
            (Op::DoesNotExist, x) => x.is_none(),
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed field selector over the fields berth indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<Requirement>);

/// The fields a `fieldSelector` may name, as Kubernetes allows them.
pub const SELECTABLE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "type",
    "involvedObject.name",
    "involvedObject.kind",
    "involvedObject.namespace",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// Splits on commas that are not inside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(rest: &str, term: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{term}: expected a parenthesised list")))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_term(term: &str, set_based: bool) -> Result<Requirement, SelectorError> {
    let bad = || SelectorError(term.to_string());
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return if set_based && key_ok(key) {
            Ok(Requirement {
                key: key.into(),
                op: Op::DoesNotExist,
            })
        } else {
            Err(bad())
        };
    }
    for (sep, ne) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(sep) {
            let (k, v) = (k.trim(), v.trim());
            if !key_ok(k) {
                return Err(bad());
            }
            let op = if ne {
                Op::NotEq(v.into())
            } else {
                Op::Eq(v.into())
            };
            return Ok(Requirement { key: k.into(), op });
        }
    }
    if set_based {
        let mut words = term.splitn(2, char::is_whitespace);
        let key = words.next().unwrap_or_default().trim();
        let rest = words.next().unwrap_or_default().trim();
        if !key_ok(key) {
            return Err(bad());
        }
        if rest.is_empty() {
            return Ok(Requirement {
                key: key.into(),
                op: Op::Exists,
            });
        }
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::NotIn(set_values(r, term)?),
            });
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::In(set_values(r, term)?),
            });
        }
    }
    Err(bad())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        terms(s)
            .into_iter()
            .map(|t| parse_term(t, true))
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    /// The selector an object spells as a `LabelSelector` (`matchLabels` and
    /// `matchExpressions`), or `None` when it has none or one with an unknown operator: such
    /// a selector selects nothing (a PodDisruptionBudget's or a Service's without selector),
    /// while `{}` selects everything.
    pub fn from_api(selector: &Value) -> Option<LabelSelector> {
        let selector = selector.as_object()?;
        let mut out = Vec::new();
        for (key, value) in selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            out.push(Requirement {
                key: key.clone(),
                op: Op::Eq(value.as_str()?.to_string()),
            });
        }
        for e in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let values = || -> Vec<String> {
                e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let op = match e["operator"].as_str()? {
                "In" => Op::In(values()),
                "NotIn" => Op::NotIn(values()),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return None,
            };
            out.push(Requirement {
                key: e["key"].as_str()?.to_string(),
                op,
            });
        }
        Some(LabelSelector(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object (its full JSON) carries matching labels.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.0
            .iter()
            .all(|r| r.matches(labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str)))
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let reqs: Vec<Requirement> = terms(s)
            .into_iter()
            .map(|t| parse_term(t, false))
            .collect::<Result<_, _>>()?;
        if let Some(r) = reqs
            .iter()
            .find(|r| !SELECTABLE_FIELDS.contains(&r.key.as_str()))
        {
            return Err(SelectorError(format!(
                "field label not supported: {}",
                r.key
            )));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name an `metadata.name=x` term pins, so a list can read one key.
    pub fn exact_name(&self) -> Option<&str> {
        self.0.iter().find_map(|r| match (&r.op, r.key.as_str()) {
            (Op::Eq(v), "metadata.name") => Some(v.as_str()),
            _ => None,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            let pointer = format!("/{}", r.key.replace('.', "/"));
            let value = object.pointer(&pointer).and_then(Value::as_str);
            // A field that is unset selects as the empty string, as in Kubernetes.
            r.matches(Some(value.unwrap_or("")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": node}, "status": {"phase": "Running"}})
    }

    #[test]
    fn an_api_selector_matches_as_its_string_form_does() {
        let web = pod(json!({"app": "web", "tier": "front"}), "n1");
        let db = pod(json!({"app": "db"}), "n1");
        let s = LabelSelector::from_api(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}))
        .unwrap();
        assert!(s.matches(&web) && !s.matches(&db));
        let everything = LabelSelector::from_api(&json!({})).unwrap();
        assert!(everything.matches(&web) && everything.matches(&db));
        assert!(
            LabelSelector::from_api(&Value::Null).is_none(),
            "no selector selects nothing"
        );
        let odd = json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]});
        assert!(LabelSelector::from_api(&odd).is_none());
    }

    #[test]
    fn equality_and_set_based_label_selectors_match_as_kubectl_expects() {
        let p = pod(json!({"app": "web", "tier": "front"}), "n1");
        let yes = [
            "",
            "app=web",
            "app==web",
            "app=web,tier!=db",
            "tier in (front, back)",
            "env notin (prod)",
            "app",
            "!env",
            "app in (web),tier",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&p), "{s}");
        }
        for s in ["app=api", "tier notin (front)", "env", "!app", "env in (a)"] {
            assert!(!LabelSelector::parse(s).unwrap().matches(&p), "{s}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_cover_name_namespace_node_and_phase() {
        let p = pod(json!({}), "n1");
        for s in [
            "metadata.name=p",
            "metadata.namespace=ns,spec.nodeName=n1",
            "status.phase!=Pending",
            "spec.nodeName!=",
        ] {
            assert!(FieldSelector::parse(s).unwrap().matches(&p), "{s}");
        }
        assert!(!FieldSelector::parse("spec.nodeName=").unwrap().matches(&p));
        assert_eq!(
            FieldSelector::parse("metadata.name=p")
                .unwrap()
                .exact_name(),
            Some("p")
        );
        assert!(FieldSelector::parse("spec.image=x").is_err());
    }
}
