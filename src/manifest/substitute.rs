//! Flux's post-build variable substitution, pure: `${VAR}` takes the variable's value (a
//! variable nobody set gives the empty string, as Flux does without strict substitution),
//! `${VAR:=default}` (also `:-`) takes `default` when the variable is unset or empty,
//! `${VAR=default}` (also `-`) only when unset, and `$${VAR}` is written as a literal
//! `${VAR}`. Anything else — a `$` without braces, a name that is not a variable name, an
//! unclosed brace — is left as written.
//!
//! Files are substituted as text before they are parsed ([`substitute`]), so
//! `replicas: ${REPLICAS}` reads as a number; objects already rendered (a kustomization's)
//! are substituted string by string ([`substitute_value`]), a changed string read again as a
//! YAML scalar for the same effect.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The variables of a substitution, by name.
pub type Variables = BTreeMap<String, String>;

/// Whether `name` is a variable name: `^[_[:alpha:]][_[:alpha:][:digit:]]*$`, as Flux checks.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The length of the variable name at the start of `text`.
fn name_len(text: &str) -> usize {
    if !text
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
    {
        return 0;
    }
    text.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(text.len())
}

/// What the expression between `${` and `}` gives, or `None` when it is not one we read.
fn expand(expression: &str, variables: &Variables) -> Option<String> {
    let len = name_len(expression);
    if len == 0 {
        return None;
    }
    let (name, rest) = expression.split_at(len);
    let value = variables.get(name);
    if rest.is_empty() {
        return Some(value.cloned().unwrap_or_default());
    }
    let (when_empty, default) = if let Some(d) = rest.strip_prefix(":=").or(rest.strip_prefix(":-"))
    {
        (true, d)
    } else if let Some(d) = rest.strip_prefix('=').or(rest.strip_prefix('-')) {
        (false, d)
    } else {
        return None;
    };
    Some(match value {
        Some(v) if !(when_empty && v.is_empty()) => v.clone(),
        _ => default.to_string(),
    })
}

/// `text` with its variables substituted.
pub fn substitute(text: &str, variables: &Variables) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(escaped) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let expanded = rest.strip_prefix("${").and_then(|inner| {
            let end = inner.find('}')?;
            Some((expand(&inner[..end], variables)?, &inner[end + 1..]))
        });
        match expanded {
            Some((value, after)) => {
                out.push_str(&value);
                rest = after;
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A plain YAML scalar as the YAML 1.2 core schema reads it: null, a boolean, a number, or
/// the string itself.
fn scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let numeric = text
        .trim_start_matches(['-', '+'])
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c));
    if numeric {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// A rendered object with its variables substituted in every key and string; a string that
/// changed (and holds no line break) is read again as a YAML scalar, as Flux reads the
/// substituted YAML of the object.
pub fn substitute_value(value: &Value, variables: &Variables) -> Value {
    match value {
        Value::String(s) if s.contains('$') => {
            let new = substitute(s, variables);
            if new == *s {
                value.clone()
            } else if new.contains('\n') {
                Value::String(new)
            } else {
                scalar(&new)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute_value(v, variables))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = if k.contains('$') {
                        substitute(k, variables)
                    } else {
                        k.clone()
                    };
                    (key, substitute_value(v, variables))
                })
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_defaults_and_escapes_read_as_flux_reads_them() {
        let v = vars(&[("APP", "web"), ("EMPTY", ""), ("TAG", "1.2")]);
        assert_eq!(substitute("name: ${APP}-svc", &v), "name: web-svc");
        assert_eq!(substitute("image: x:${TAG:=latest}", &v), "image: x:1.2");
        assert_eq!(substitute("tier: ${TIER:=front}", &v), "tier: front");
        assert_eq!(substitute("e: ${EMPTY:=filled}", &v), "e: filled");
        assert_eq!(substitute("e: ${EMPTY=kept-empty}", &v), "e: ");
        assert_eq!(substitute("t: ${TIER:-back}", &v), "t: back");
        // Flux without strict substitution: an unset variable is the empty string.
        assert_eq!(substitute("missing: '${NOPE}'", &v), "missing: ''");
        // The escape gives the literal text, not the value.
        assert_eq!(substitute("echo $${APP} $APP", &v), "echo ${APP} $APP");
        assert_eq!(substitute("a $${APP} b ${APP}", &v), "a ${APP} b web");
        // Not an expression we read: left as written.
        for text in ["${1X}", "${APP", "cost: $5", "${APP.x}", "${}", "$"] {
            assert_eq!(substitute(text, &v), text);
        }
    }

    #[test]
    fn variable_names_follow_fluxs_rule() {
        for good in ["A", "_a1", "CLUSTER_NAME", "x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "a.b", "tls.crt", "ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_rendered_object_gets_numbers_where_the_yaml_text_would() {
        let v = vars(&[("REPLICAS", "3"), ("ON", "true"), ("NAME", "web")]);
        let object = json!({"metadata": {"name": "${NAME}", "labels": {"${NAME}-key": "v"}},
            "spec": {"replicas": "${REPLICAS}", "paused": "${ON}", "text": "a\n${NAME}\n",
                "untouched": "7", "escaped": "$${NAME}"}});
        let got = substitute_value(&object, &v);
        assert_eq!(got["metadata"]["name"], "web");
        assert_eq!(got["metadata"]["labels"]["web-key"], "v");
        assert_eq!(got["spec"]["replicas"], 3);
        assert_eq!(got["spec"]["paused"], true);
        assert_eq!(got["spec"]["text"], "a\nweb\n");
        assert_eq!(got["spec"]["untouched"], "7");
        assert_eq!(got["spec"]["escaped"], "${NAME}");
    }
}
