//! `replacements`: copy a field of one object into fields of others. Field paths are
//! kustomize's: `spec.template.spec.containers.[name=web].image`, `metadata.labels.[a.b/c]`,
//! `*` for every item of a list; `options` take a part of a delimited value.

use serde_json::{Map, Value};

use super::kustomization::{FieldOptions, Replacement, Selector};
use super::res::Res;
use super::select::Matcher;

#[derive(Debug, PartialEq)]
pub(super) enum Seg {
    Key(String),
    /// `[name=value]`: the list item whose field has that value.
    Match(String, String),
    Index(usize),
    All,
}

pub(super) fn parse_path(path: &str) -> Vec<Seg> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth -= 1;
                current.push(c);
            }
            '.' if depth == 0 => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some(inner) = p.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
                match inner.split_once('=') {
                    Some((k, v)) => Seg::Match(k.to_string(), v.to_string()),
                    None => Seg::Key(inner.to_string()),
                }
            } else if p == "*" {
                Seg::All
            } else if let Ok(i) = p.parse::<usize>() {
                Seg::Index(i)
            } else {
                Seg::Key(p)
            }
        })
        .collect()
}

pub(super) fn get<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(v);
    };
    let next = match (first, v) {
        (Seg::Key(k), Value::Object(m)) => m.get(k)?,
        (Seg::Match(k, want), Value::Array(items)) => items
            .iter()
            .find(|i| i.get(k).is_some_and(|x| scalar_text(x) == *want))?,
        (Seg::Index(i), Value::Array(items)) => items.get(*i)?,
        (Seg::All, Value::Array(items)) => items.first()?,
        _ => return None,
    };
    get(next, rest)
}

pub(super) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Calls `f` on every value at `path`, creating missing maps with `create`.
fn visit(v: &mut Value, path: &[Seg], create: bool, f: &mut dyn FnMut(&mut Value)) -> bool {
    let Some((first, rest)) = path.split_first() else {
        f(v);
        return true;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if !m.contains_key(k) {
                if !create {
                    return false;
                }
                let fresh = match rest.first() {
                    None => Value::Null,
                    Some(Seg::Key(_)) => Value::Object(Map::new()),
                    Some(_) => Value::Array(Vec::new()),
                };
                m.insert(k.clone(), fresh);
            }
            m.get_mut(k).is_some_and(|n| visit(n, rest, create, f))
        }
        (Seg::Key(_), v @ Value::Null) if create => {
            *v = Value::Object(Map::new());
            visit(v, path, create, f)
        }
        (Seg::Match(k, want), Value::Array(items)) => {
            let mut any = false;
            for item in items
                .iter_mut()
                .filter(|i| i.get(k).is_some_and(|x| scalar_text(x) == *want))
            {
                any |= visit(item, rest, create, f);
            }
            any
        }
        (Seg::Index(i), Value::Array(items)) => items
            .get_mut(*i)
            .is_some_and(|item| visit(item, rest, create, f)),
        (Seg::All, Value::Array(items)) => {
            let mut any = false;
            for item in items.iter_mut() {
                any |= visit(item, rest, create, f);
            }
            any
        }
        _ => false,
    }
}

fn source_part(value: &Value, options: Option<&FieldOptions>) -> Result<Value, String> {
    let Some(o) = options else {
        return Ok(value.clone());
    };
    let Some(delimiter) = o.delimiter.as_deref().filter(|d| !d.is_empty()) else {
        return Ok(value.clone());
    };
    let text = scalar_text(value);
    let parts: Vec<&str> = text.split(delimiter).collect();
    if o.index < 0 || o.index as usize >= parts.len() {
        return Err(format!(
            "options.index {} is out of bounds for value `{text}` split at `{delimiter}`",
            o.index
        ));
    }
    Ok(Value::String(parts[o.index as usize].to_string()))
}

/// A scalar's text read as YAML reads a plain scalar (`0` a number, `true` a boolean).
fn plain(text: &str) -> Value {
    let (docs, error) = super::super::yaml::parse_stream(text, Default::default());
    match docs.first().and_then(|d| d.root.as_ref()) {
        Some(node) if error.is_none() => match node.to_json() {
            v @ (Value::Number(_) | Value::Bool(_)) => v,
            _ => Value::String(text.to_string()),
        },
        _ => Value::String(text.to_string()),
    }
}

/// What a target field becomes. As kustomize does, a scalar target keeps its type and takes
/// the new text (so a field created for a quoted `"0"` holds the number 0).
fn target_value(old: &Value, new: &Value, options: Option<&FieldOptions>) -> Value {
    let text = match text_value(old, new, options) {
        Value::String(s) => s,
        other => return other,
    };
    match old {
        Value::String(_) => Value::String(text),
        _ => plain(&text),
    }
}

fn text_value(old: &Value, new: &Value, options: Option<&FieldOptions>) -> Value {
    if matches!(new, Value::Object(_) | Value::Array(_)) {
        return new.clone();
    }
    let Some(o) = options else {
        return Value::String(scalar_text(new));
    };
    let Some(delimiter) = o.delimiter.as_deref().filter(|d| !d.is_empty()) else {
        return Value::String(scalar_text(new));
    };
    let old = if old.is_null() {
        String::new()
    } else {
        scalar_text(old)
    };
    let mut parts: Vec<String> = old.split(delimiter).map(str::to_string).collect();
    let new = scalar_text(new);
    if o.index < 0 {
        parts.insert(0, new);
    } else if o.index as usize >= parts.len() {
        parts.push(new);
    } else {
        parts[o.index as usize] = new;
    }
    Value::String(parts.join(delimiter))
}

/// Applies the replacements in order.
pub fn apply(acc: &mut [Res], list: &[Replacement]) -> Result<(), String> {
    for rep in list {
        let Some(source) = &rep.source else {
            return Err("a replacement has no source".into());
        };
        let selector = Selector {
            group: source.group.clone(),
            version: source.version.clone(),
            kind: source.kind.clone(),
            name: source.name.clone(),
            namespace: source.namespace.clone(),
            ..Default::default()
        };
        let matcher = Matcher::new(&selector)?;
        let found: Vec<&Res> = acc
            .iter()
            .filter(|r| matcher.matches(&r.value, &r.names()))
            .collect();
        let source_res = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "the replacement source {} {} matches no resource",
                    source.kind, source.name
                ));
            }
            _ => {
                return Err(format!(
                    "the replacement source {} {} matches more than one resource",
                    source.kind, source.name
                ));
            }
        };
        let field = source.field_path.as_deref().unwrap_or("metadata.name");
        let value = get(&source_res.value, &parse_path(field)).ok_or_else(|| {
            format!(
                "the replacement source {} has no field `{field}`",
                source_res
                    .value
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })?;
        let value = source_part(value, source.options.as_ref())?;
        for target in &rep.targets {
            let Some(select) = &target.select else {
                return Err("a replacement target has no select".into());
            };
            let select = Matcher::new(select)?;
            let rejects = target
                .reject
                .iter()
                .map(Matcher::new)
                .collect::<Result<Vec<_>, _>>()?;
            for r in acc.iter_mut() {
                let names = r.names();
                if !select.matches(&r.value, &names)
                    || rejects.iter().any(|m| m.matches(&r.value, &names))
                {
                    continue;
                }
                let create = target.options.as_ref().is_some_and(|o| o.create);
                for path in &target.field_paths {
                    let segs = parse_path(path);
                    let hit = visit(&mut r.value, &segs, create, &mut |v| {
                        *v = target_value(v, &value, target.options.as_ref());
                    });
                    if !hit && !create {
                        return Err(format!(
                            "unable to find field `{path}` in replacement target {}",
                            r.value
                                .pointer("/metadata/name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The fields `$(VAR)` is replaced in (kustomize's var reference table, for every kind).
const VAR_FIELDS: [&str; 4] = ["args", "command", "env/value", "volumeMounts/mountPath"];

/// Resolves `vars`: each `$(NAME)` in the fields kustomize substitutes becomes the value of
/// the named object's field; `$$` stands for `$`. Unknown names stay as written.
pub fn resolve_vars(acc: &mut [Res], vars: &[super::kustomization::Var]) -> Result<(), String> {
    if vars.is_empty() {
        return Ok(());
    }
    let mut values: Vec<(String, String)> = Vec::new();
    for var in vars {
        let o = &var.objref;
        let found: Vec<&Res> = acc
            .iter()
            .filter(|r| {
                let (g, v, k) = super::fields::gvk(&r.value);
                let api = r
                    .value
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                k == o.kind
                    && r.names().iter().any(|(n, _)| *n == o.name)
                    && (o.api_version.is_empty() || o.api_version == api || o.api_version == v)
                    && (o.group.is_empty() || o.group == g)
                    && (o.version.is_empty() || o.version == v)
                    && (o.namespace.is_empty()
                        || r.names().iter().any(|(_, ns)| *ns == o.namespace))
            })
            .collect();
        let [res] = found.as_slice() else {
            return Err(format!(
                "var {}: {} {} matches {} objects, not one",
                var.name,
                o.kind,
                o.name,
                found.len()
            ));
        };
        let path = var
            .fieldref
            .as_ref()
            .map(|f| f.fieldpath.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("metadata.name");
        let value = get(&res.value, &parse_path(path)).ok_or_else(|| {
            format!(
                "var {}: {} {} has no field `{path}`",
                var.name, o.kind, o.name
            )
        })?;
        values.push((var.name.clone(), scalar_text(value)));
    }
    let expand = |text: &str| -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(')
                && let Some(end) = inner.find(')')
                && let Some((_, v)) = values.iter().find(|(n, _)| n == &inner[..end])
            {
                out.push_str(v);
                rest = &inner[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    };
    let mut paths: Vec<String> = Vec::new();
    for pod in [
        "spec",
        "spec/template/spec",
        "spec/jobTemplate/spec/template/spec",
    ] {
        for c in ["containers", "initContainers"] {
            for f in VAR_FIELDS {
                paths.push(format!("{pod}/{c}/{f}"));
            }
        }
        paths.push(format!("{pod}/volumes/nfs/server"));
    }
    for p in [
        "spec/nfs/server",
        "spec/tls/secretName",
        "spec/tls/hosts",
        "spec/rules/host",
        "spec/ports/targetPort",
        "spec/ports/port",
        "metadata/labels",
        "metadata/annotations",
        "spec/template/metadata/annotations",
    ] {
        paths.push(p.to_string());
    }
    for r in acc.iter_mut() {
        for p in &paths {
            super::fields::visit(&mut r.value, &super::fields::segments(p), false, &mut |v| {
                substitute(v, &expand)
            });
        }
    }
    Ok(())
}

fn substitute(v: &mut Value, expand: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) if s.contains('$') => *s = expand(s),
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, expand)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute(i, expand)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_select_list_items_and_keys_with_dots() {
        assert_eq!(
            parse_path("spec.containers.[name=web].image"),
            [
                Seg::Key("spec".into()),
                Seg::Key("containers".into()),
                Seg::Match("name".into(), "web".into()),
                Seg::Key("image".into())
            ]
        );
        let v = json!({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(
            get(&v, &parse_path("metadata.labels.[app.kubernetes.io/name]")),
            Some(&json!("x"))
        );
        assert_eq!(
            target_value(
                &json!("a.b.c"),
                &json!("X"),
                Some(&FieldOptions {
                    delimiter: Some(".".into()),
                    index: 1,
                    create: false
                })
            ),
            json!("a.X.c")
        );
    }
}
