//! A small deterministic YAML emitter for JSON values, shaped as kubectl prints objects: keys
//! in the order given, lists at their key's indent, multi-line strings as literal blocks.
//!
//! Strings are quoted whenever a YAML 1.1 or 1.2 reader could take them for something else
//! (`"yes"`, `"1.0"`, `"2026-01-01"`, `"*** (after)"`), because a diff that shows `mode: yes`
//! for the string "yes" misleads whoever reads it with kubectl's YAML 1.1 eyes.

use serde_json::{Map, Value};

/// A YAML document for one value (no `---`), ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => emit_seq(items, 0, &mut out),
        other => {
            out.push_str(&inline(other).unwrap_or_else(|| quoted(&other.to_string())));
            out.push('\n');
        }
    }
    out
}

/// Words YAML 1.1 reads as booleans or null.
const SPECIAL_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ".inf", "-.inf", "+.inf",
    ".nan",
];

/// Whether a string can be written without quotes and read back as the same string.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Numbers, dates, times and base-60 values all start with a digit, a sign or a dot.
    let first_ok = first.is_alphabetic() || first == '_' || first == '/';
    first_ok
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !SPECIAL_WORDS.contains(&s.to_ascii_lowercase().as_str())
        && s.chars()
            .all(|c| c.is_alphanumeric() || " _./:@-+=,%()".contains(c))
}

/// A double-quoted YAML string: JSON's escaping is valid YAML.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A scalar or empty collection on one line; `None` for what needs lines of its own.
fn inline(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if literal_ok(s) => return None,
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => quoted(s),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Object(map) if map.is_empty() => "{}".into(),
        _ => return None,
    })
}

/// Whether a multi-line string can be a literal block (`|`) and read back the same.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with(' ')
        && !s.starts_with('\n')
        && s.chars().all(|c| c == '\n' || c == '\t' || !c.is_control())
        && s.split('\n')
            .all(|line| line.is_empty() || !line.trim().is_empty())
}

/// `|`, `|-` or `|+` and the lines, indented.
fn emit_literal(s: &str, indent: usize, out: &mut String) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-\n",
        1 => "|\n",
        _ => "|+\n",
    });
    let pad = " ".repeat(indent);
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// Everything after `key:` or `-`: a space and an inline value, or a block on the next lines.
fn emit_value(value: &Value, indent: usize, seq_indent: usize, out: &mut String) {
    if let Some(text) = inline(value) {
        out.push(' ');
        out.push_str(&text);
        out.push('\n');
        return;
    }
    match value {
        Value::String(s) => {
            out.push(' ');
            emit_literal(s, indent + 2, out);
        }
        Value::Object(map) => {
            out.push('\n');
            emit_map(map, indent + 2, out);
        }
        Value::Array(items) => {
            out.push('\n');
            emit_seq(items, seq_indent, out);
        }
        _ => {}
    }
}

fn emit_map(map: &Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (key, value) in map {
        out.push_str(&pad);
        out.push_str(&if plain_ok(key) {
            key.clone()
        } else {
            quoted(key)
        });
        out.push(':');
        // Lists sit at their key's indent, as kubectl prints them.
        emit_value(value, indent, indent, out);
    }
}

fn emit_seq(items: &[Value], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line.
                let mut block = String::new();
                emit_map(map, indent + 2, &mut block);
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&block[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                let mut block = String::new();
                emit_seq(inner, indent + 2, &mut block);
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&block[indent + 2..]);
            }
            _ => {
                out.push_str(&pad);
                out.push('-');
                emit_value(item, indent, indent + 2, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn looks_like_kubectl() {
        let value = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {}},
            "spec": {"containers": [{"name": "a", "args": ["-c", "echo hi"]}], "ports": []},
            "data": {"conf": "a\n  b\n", "mode": "yes", "count": "3", "when": "2026-01-01",
                "mask": "*** (after)", "pct": "25%", "img": "nginx:1.27", "no-nl": "x\ny"}});
        assert_eq!(
            to_yaml(&value),
            "apiVersion: v1\nmetadata:\n  name: x\n  labels: {}\nspec:\n  containers:\n  - name: a\n    args:\n    - \"-c\"\n    - echo hi\n  ports: []\ndata:\n  conf: |\n    a\n      b\n  mode: \"yes\"\n  count: \"3\"\n  when: \"2026-01-01\"\n  mask: \"*** (after)\"\n  pct: \"25%\"\n  img: nginx:1.27\n  no-nl: |-\n    x\n    y\n"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[ -~\\n\\t]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "yes", "1.5", "0x1F", "~", "- a", "a: b", "#c", "", " x"
            ])
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z:. -]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What we print reads back, with berth's own YAML loader, as the same value.
        #[test]
        fn round_trips_through_the_loader(map in prop::collection::btree_map("[a-z]{1,5}", json_value(), 1..4)) {
            let value = Value::Object(map.into_iter().collect());
            let text = to_yaml(&value);
            let (_, objects, problems) = crate::manifest::load_text(
                "t.yaml".into(), text.clone(), crate::manifest::LoadOptions::default());
            prop_assert!(problems.is_empty(), "{text}\n{problems:?}");
            prop_assert_eq!(&objects[0].value, &value, "{}", text);
        }
    }
}
