//! A custom resource against its structural schema: pruning of unknown fields, defaults, and
//! validation with errors worded as the Kubernetes API server words them.

use serde_json::{Map, Value};

use super::error::{ErrorKind, FieldError, body_path};
use super::schema::{Additional, Schema, Type};
use crate::manifest::names;
use crate::manifest::report::FieldPath;

/// The fields of `metadata` Kubernetes keeps (ObjectMeta), for embedded resources.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Removes every field the schema does not specify (unless `x-kubernetes-preserve-unknown-fields`
/// allows it), recording each removed field's path in `pruned`. `resource` says the value is a
/// whole object (the root, or an embedded resource): its `apiVersion`, `kind` and `metadata`
/// are implicitly specified.
pub fn prune(
    schema: &Schema,
    value: &mut Value,
    at: &FieldPath,
    resource: bool,
    pruned: &mut Vec<FieldPath>,
) {
    match value {
        Value::Object(map) => {
            let resource = resource || schema.embedded_resource;
            let keep_unknown =
                schema.preserve_unknown_fields || matches!(schema.additional, Additional::Any);
            let mut remove = Vec::new();
            for (key, child) in map.iter_mut() {
                if resource && (key == "apiVersion" || key == "kind") {
                    continue;
                }
                if resource && key == "metadata" {
                    if schema.embedded_resource
                        && let Value::Object(meta) = child
                    {
                        meta.retain(|k, _| {
                            let known = OBJECT_META.contains(&k.as_str());
                            if !known {
                                pruned.push(at.child("metadata").child(k));
                            }
                            known
                        });
                    }
                    continue;
                }
                match schema.property(key) {
                    Some(sub) => prune(sub, child, &at.child(key), false, pruned),
                    None if keep_unknown => {}
                    None => remove.push(key.clone()),
                }
            }
            for key in remove {
                map.remove(&key);
                pruned.push(at.child(&key));
            }
        }
        Value::Array(items) => {
            if let Some(sub) = &schema.items {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(sub, item, &at.index(i), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the schema's defaults where a field is absent (or `null` and not nullable), and
/// drops `null`s the schema does not allow, as the API server does before validation.
pub fn apply_defaults(schema: &Schema, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, sub) in &schema.properties {
                let absent = match map.get(name) {
                    None => true,
                    Some(Value::Null) => !sub.nullable,
                    Some(_) => false,
                };
                if absent {
                    match &sub.default {
                        Some(default) => {
                            map.insert(name.clone(), default.clone());
                        }
                        None => {
                            map.remove(name);
                        }
                    }
                }
                if let Some(child) = map.get_mut(name) {
                    apply_defaults(sub, child);
                }
            }
            if let Additional::Schema(sub) = &schema.additional {
                for child in map.values_mut() {
                    apply_defaults(sub, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = &schema.items {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
}

fn type_matches(ty: Type, value: &Value) -> bool {
    match (ty, value) {
        (Type::Object, Value::Object(_))
        | (Type::Array, Value::Array(_))
        | (Type::String, Value::String(_))
        | (Type::Boolean, Value::Bool(_))
        | (Type::Number, Value::Number(_)) => true,
        (Type::Integer, Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

/// Validates `value` (already pruned and defaulted) against `schema`. `at` is the value's
/// path in the object; errors name fields from the object's root.
pub fn validate(schema: &Schema, value: &Value, at: &FieldPath) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(schema, value, at, &mut errors);
    errors
}

fn type_error(at: &FieldPath, expected: &str, value: &Value) -> FieldError {
    let actual = type_name(value);
    FieldError::new(
        ErrorKind::Invalid,
        at,
        Some(&Value::String(actual.into())),
        format!(
            "{} in body must be of type {expected}: \"{actual}\"",
            body_path(at)
        ),
    )
}

fn check(schema: &Schema, value: &Value, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !schema.nullable && (schema.ty.is_some() || schema.int_or_string) {
            let expected = schema.ty.map_or("integer,string", Type::name);
            errors.push(type_error(at, expected, value));
        }
        return;
    }
    if schema.int_or_string {
        if !matches!(value, Value::String(_)) && !matches!(value, Value::Number(n) if is_integer(n))
        {
            errors.push(type_error(at, "integer,string", value));
            return;
        }
    } else if let Some(ty) = schema.ty
        && !type_matches(ty, value)
    {
        errors.push(type_error(at, ty.name(), value));
        return;
    }
    if let Some(allowed) = &schema.enumeration
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(FieldError::new(
            ErrorKind::NotSupported,
            at,
            Some(value),
            format!("supported values: {}", list.join(", ")),
        ));
    }
    match value {
        Value::String(text) => check_string(schema, text, value, at, errors),
        Value::Number(n) => check_number(schema, n, value, at, errors),
        Value::Array(items) => check_array(schema, items, value, at, errors),
        Value::Object(map) => check_object(schema, map, value, at, errors),
        _ => {}
    }
    check_junctors(schema, value, at, errors);
}

fn check_string(
    schema: &Schema,
    text: &str,
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let chars = text.chars().count() as u64;
    if let Some(max) = schema.max_length
        && chars > max
    {
        errors.push(FieldError::new(
            ErrorKind::TooLong,
            at,
            None,
            format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.min_length
        && chars < min
    {
        errors.push(FieldError::invalid(
            at,
            value,
            format!(
                "{} in body should be at least {min} chars long",
                body_path(at)
            ),
        ));
    }
    if let Some(re) = &schema.pattern
        && !re.is_match(text)
    {
        errors.push(FieldError::invalid(
            at,
            value,
            format!("{} in body should match '{}'", body_path(at), re.as_str()),
        ));
    }
    if let Some(format) = &schema.format
        && !format_matches(format, text)
    {
        errors.push(FieldError::invalid(
            at,
            value,
            format!(
                "{} in body must be of type {format}: {value}",
                body_path(at)
            ),
        ));
    }
}

fn check_number(
    schema: &Schema,
    n: &serde_json::Number,
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let Some(x) = n.as_f64() else { return };
    let shown = |bound: f64| -> String {
        if bound.fract() == 0.0 && bound.abs() < 1e15 {
            format!("{}", bound as i64)
        } else {
            bound.to_string()
        }
    };
    if let Some(max) = schema.maximum {
        let bad = if schema.exclusive_maximum {
            x >= max
        } else {
            x > max
        };
        if bad {
            let how = if schema.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::invalid(
                at,
                value,
                format!("{} in body should be {how} {}", body_path(at), shown(max)),
            ));
        }
    }
    if let Some(min) = schema.minimum {
        let bad = if schema.exclusive_minimum {
            x <= min
        } else {
            x < min
        };
        if bad {
            let how = if schema.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError::invalid(
                at,
                value,
                format!("{} in body should be {how} {}", body_path(at), shown(min)),
            ));
        }
    }
    if let Some(m) = schema.multiple_of {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 {
            errors.push(FieldError::invalid(
                at,
                value,
                format!(
                    "{} in body should be a multiple of {}",
                    body_path(at),
                    shown(m)
                ),
            ));
        }
    }
}

fn check_array(
    schema: &Schema,
    items: &[Value],
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let len = items.len() as u64;
    if let Some(max) = schema.max_items
        && len > max
    {
        errors.push(FieldError::new(
            ErrorKind::TooMany,
            at,
            Some(&Value::from(len)),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.min_items
        && len < min
    {
        errors.push(FieldError::invalid(
            at,
            &Value::from(len),
            format!("{} in body should have at least {min} items", body_path(at)),
        ));
    }
    let _ = value;
    if let Some(sub) = &schema.items {
        for (i, item) in items.iter().enumerate() {
            check(sub, item, &at.index(i), errors);
        }
    }
    match schema.list_type.as_deref() {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(FieldError::new(
                        ErrorKind::Duplicate,
                        &at.index(i),
                        Some(item),
                        String::new(),
                    ));
                }
            }
        }
        Some("map") => {
            let key_of = |item: &Value| -> Vec<Value> {
                schema
                    .list_map_keys
                    .iter()
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            let keys: Vec<Vec<Value>> = items.iter().map(key_of).collect();
            for (i, key) in keys.iter().enumerate() {
                if keys[..i].contains(key) {
                    let shown = if key.len() == 1 {
                        key[0].clone()
                    } else {
                        Value::Array(key.clone())
                    };
                    errors.push(FieldError::new(
                        ErrorKind::Duplicate,
                        &at.index(i),
                        Some(&shown),
                        String::new(),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Schema,
    map: &Map<String, Value>,
    value: &Value,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let _ = value;
    let len = map.len() as u64;
    if let Some(max) = schema.max_properties
        && len > max
    {
        errors.push(FieldError::new(
            ErrorKind::TooMany,
            at,
            Some(&Value::from(len)),
            format!("must have at most {max} properties"),
        ));
    }
    if let Some(min) = schema.min_properties
        && len < min
    {
        errors.push(FieldError::invalid(
            at,
            &Value::from(len),
            format!(
                "{} in body should have at least {min} properties",
                body_path(at)
            ),
        ));
    }
    for name in &schema.required {
        if map.get(name).is_none_or(Value::is_null) {
            errors.push(FieldError::required(&at.child(name), ""));
        }
    }
    if schema.embedded_resource {
        check_embedded(map, at, errors);
    }
    for (key, child) in map {
        if let Some(sub) = schema.property(key) {
            check(sub, child, &at.child(key), errors);
        }
    }
}

/// An embedded resource needs `apiVersion` and `kind`, and a valid `metadata.name` if named.
fn check_embedded(map: &Map<String, Value>, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for key in ["apiVersion", "kind"] {
        match map.get(key) {
            None | Some(Value::Null) => errors.push(FieldError::required(&at.child(key), "")),
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(other) => errors.push(FieldError::invalid(
                &at.child(key),
                other,
                "must be a non-empty string".into(),
            )),
        }
    }
    if let Some(meta) = map.get("metadata") {
        if !meta.is_object() {
            errors.push(type_error(&at.child("metadata"), "object", meta));
        } else if let Some(name) = meta.get("name").and_then(Value::as_str)
            && let Err(why) = names::dns1123_subdomain(name)
        {
            errors.push(FieldError::invalid(
                &at.child("metadata").child("name"),
                &Value::String(name.into()),
                format!("a lowercase RFC 1123 subdomain {why}"),
            ));
        }
    }
}

fn check_junctors(schema: &Schema, value: &Value, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for sub in &schema.all_of {
        check(sub, value, at, errors);
    }
    if !schema.any_of.is_empty()
        && !schema
            .any_of
            .iter()
            .any(|sub| validate(sub, value, at).is_empty())
    {
        let first = validate(&schema.any_of[0], value, at);
        errors.push(FieldError::invalid(
            at,
            value,
            format!(
                "{} in body must validate at least one schema (anyOf){}",
                body_path(at),
                first_reason(&first)
            ),
        ));
    }
    if !schema.one_of.is_empty() {
        let passing = schema
            .one_of
            .iter()
            .filter(|sub| validate(sub, value, at).is_empty())
            .count();
        if passing != 1 {
            let detail = if passing == 0 {
                format!(
                    "{} in body must validate one and only one schema (oneOf)",
                    body_path(at)
                )
            } else {
                format!(
                    "{} in body must validate one and only one schema (oneOf); it validates {passing}",
                    body_path(at)
                )
            };
            errors.push(FieldError::invalid(at, value, detail));
        }
    }
    if let Some(not) = &schema.not
        && validate(not, value, at).is_empty()
    {
        errors.push(FieldError::invalid(
            at,
            value,
            format!(
                "{} in body must not validate the schema (not)",
                body_path(at)
            ),
        ));
    }
}

fn first_reason(errors: &[FieldError]) -> String {
    errors
        .first()
        .map_or(String::new(), |e| format!(" (first: {})", e.message()))
}

/// The formats Kubernetes checks that are cheap to check; unknown formats pass, as there.
fn format_matches(format: &str, text: &str) -> bool {
    match format {
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "byte" => is_base64(text),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(text),
        "hostname" => names::dns1123_subdomain(text).is_ok(),
        "uuid" => is_uuid(text),
        "email" => text
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')),
        "uri" => text.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }),
        "mac" => {
            let parts: Vec<&str> = text.split([':', '-']).collect();
            matches!(parts.len(), 6 | 8 | 20)
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "duration" => is_duration(text),
        _ => true,
    }
}

/// Whether `s` is standard base64 (whitespace ignored): the `byte` format, for custom
/// resources and built-in kinds alike.
pub(crate) fn is_base64(s: &str) -> bool {
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let pad = bytes.iter().rev().take_while(|b| **b == b'=').count();
    pad <= 2
        && bytes[..bytes.len() - pad]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Go duration: `300ms`, `-1.5h`, `2h45m`.
fn is_duration(text: &str) -> bool {
    let text = text.strip_prefix(['-', '+']).unwrap_or(text);
    if text == "0" {
        return true;
    }
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 || rest[..digits].parse::<f64>().is_err() {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| rest.starts_with(u))
            .max_by_key(|u| u.len());
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

impl Schema {
    /// Reads an `openAPIV3Schema` and checks that it is structural and that its defaults
    /// validate and survive pruning. `at` is where the schema sits in its
    /// CustomResourceDefinition (errors name fields from there).
    pub fn parse(value: &Value, at: &FieldPath) -> Result<Schema, Vec<FieldError>> {
        let schema = Schema::parse_structure(value, at)?;
        let mut errors = Vec::new();
        check_defaults(&schema, at, &mut errors);
        if errors.is_empty() {
            Ok(schema)
        } else {
            Err(errors)
        }
    }
}

/// Every `default` must validate against its own schema and survive pruning unchanged.
fn check_defaults(schema: &Schema, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(default) = &schema.default {
        let mut pruned = default.clone();
        let mut unknown = Vec::new();
        prune(
            schema,
            &mut pruned,
            &FieldPath::default(),
            false,
            &mut unknown,
        );
        for path in unknown {
            errors.push(FieldError::invalid(
                &at.child("default"),
                default,
                format!(
                    "must not have fields the schema does not specify (`{path}` would be pruned)"
                ),
            ));
        }
        let mut defaulted = default.clone();
        apply_defaults(schema, &mut defaulted);
        for e in validate(schema, &defaulted, &FieldPath::default()) {
            let why = if e.field.0.is_empty() {
                e.message()
            } else {
                e.to_string()
            };
            errors.push(FieldError::invalid(&at.child("default"), default, why));
        }
    }
    for (name, sub) in &schema.properties {
        check_defaults(sub, &at.child("properties").child(name), errors);
    }
    if let Additional::Schema(sub) = &schema.additional {
        check_defaults(sub, &at.child("additionalProperties"), errors);
    }
    if let Some(items) = &schema.items {
        check_defaults(items, &at.child("items"), errors);
    }
}
