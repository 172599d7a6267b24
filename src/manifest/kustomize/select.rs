//! Choosing the objects a patch, a replacement or a replica count applies to: kustomize's
//! selectors (group, version, kind, name and namespace as anchored regular expressions, a
//! label selector and an annotation selector).

use regex::Regex;
use serde_json::Value;

use super::fields::gvk;
use super::kustomization::Selector;

/// A selector ready to match.
pub struct Matcher {
    group: Option<Regex>,
    version: Option<Regex>,
    kind: Option<Regex>,
    name: Option<Regex>,
    namespace: Option<Regex>,
    labels: Vec<Requirement>,
    annotations: Vec<Requirement>,
}

fn anchored(pattern: &str) -> Result<Option<Regex>, String> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(&format!("^(?:{pattern})$"))
        .map(Some)
        .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))
}

impl Matcher {
    pub fn new(s: &Selector) -> Result<Matcher, String> {
        Ok(Matcher {
            group: anchored(&s.group)?,
            version: anchored(&s.version)?,
            kind: anchored(&s.kind)?,
            name: anchored(&s.name)?,
            namespace: anchored(&s.namespace)?,
            labels: parse_selector(&s.label_selector)?,
            annotations: parse_selector(&s.annotation_selector)?,
        })
    }

    /// Whether an object matches; `names` are its current and original (name, namespace).
    pub fn matches(&self, object: &Value, names: &[(String, String)]) -> bool {
        let ok = |re: &Option<Regex>, text: &str| re.as_ref().is_none_or(|re| re.is_match(text));
        let (group, version, kind) = gvk(object);
        ok(&self.group, group)
            && ok(&self.version, version)
            && ok(&self.kind, kind)
            && names.iter().any(|(_, ns)| ok(&self.namespace, ns))
            && names.iter().any(|(name, _)| ok(&self.name, name))
            && self
                .labels
                .iter()
                .all(|r| r.matches(object.pointer("/metadata/labels")))
            && self
                .annotations
                .iter()
                .all(|r| r.matches(object.pointer("/metadata/annotations")))
    }
}

enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, map: Option<&Value>) -> bool {
        let get = |k: &str| map.and_then(|m| m.get(k)).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
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
    out
}

/// A Kubernetes label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    for part in split_top(text) {
        let part = part.trim();
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("`{part}`: expected a list in parentheses"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let requirement = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else if !part.is_empty() && !part.contains(' ') {
            Requirement::Exists(part.into())
        } else {
            return Err(format!("`{part}` is not a label selector requirement"));
        };
        out.push(requirement);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_anchored_regexes_and_label_selectors_work() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web-a", "labels": {"tier": "front", "env": "prod"}}});
        let names = [("web-a".to_string(), "default".to_string())];
        let m = |s: Selector| Matcher::new(&s).unwrap().matches(&object, &names);
        assert!(m(Selector {
            name: "web-.*".into(),
            ..Default::default()
        }));
        assert!(!m(Selector {
            name: "web".into(),
            ..Default::default()
        }));
        assert!(m(Selector {
            group: "apps".into(),
            kind: "Deploy.*".into(),
            ..Default::default()
        }));
        assert!(m(Selector {
            label_selector: "tier=front,env in (prod, dev)".into(),
            ..Default::default()
        }));
        assert!(!m(Selector {
            label_selector: "tier!=front".into(),
            ..Default::default()
        }));
        assert!(m(Selector {
            label_selector: "!canary,env".into(),
            ..Default::default()
        }));
        assert!(
            Matcher::new(&Selector {
                name: "(".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
