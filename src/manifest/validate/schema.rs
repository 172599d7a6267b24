//! An object against its kind's JSON Schema (with the `jsonschema` crate), each schema error
//! turned into a problem a person can act on: the field, what was expected, a suggestion.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value;

use super::ValidateOptions;
use crate::manifest::diagnostic::Severity;
use crate::manifest::kinds::KINDS;
use crate::manifest::report::{FieldPath, ObjectReport, Segment};
use crate::manifest::{names, schema};

fn validators() -> &'static [OnceLock<Option<jsonschema::Validator>>] {
    static CELLS: OnceLock<Vec<OnceLock<Option<jsonschema::Validator>>>> = OnceLock::new();
    CELLS.get_or_init(|| KINDS.iter().map(|_| OnceLock::new()).collect())
}

/// The compiled validator of a kind, built on first use from the committed schema.
pub(super) fn validator(kind_index: usize) -> Option<&'static jsonschema::Validator> {
    validators()[kind_index]
        .get_or_init(|| {
            let schema = schema::committed(kind_index)?;
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .with_format("quantity", names::quantity)
                .with_format("byte", crate::manifest::crd::is_base64)
                .with_format("int32", |_| true)
                .with_format("int64", |_| true)
                .with_format("double", |_| true)
                .build(schema)
                .ok()
        })
        .as_ref()
}

fn to_field_path(location: &jsonschema::paths::Location) -> FieldPath {
    FieldPath(
        location
            .iter()
            .map(|seg| match seg {
                LocationSegment::Property(p) => Segment::Key(p.to_string()),
                LocationSegment::Index(i) => Segment::Index(i),
            })
            .collect(),
    )
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

fn short(v: &Value) -> String {
    let text = match v {
        Value::Array(_) | Value::Object(_) => return String::new(),
        other => other.to_string(),
    };
    if text.len() > 40 {
        format!(
            " {}…",
            &text[..text.char_indices().nth(40).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        format!(" {text}")
    }
}

fn primitive_name(p: &jsonschema::JsonType) -> String {
    match p.to_string().as_str() {
        "object" => "mapping".into(),
        "array" => "list".into(),
        other => other.to_string(),
    }
}

/// The schema of the value at `path`, following `$ref`s into `$defs`.
fn schema_at<'s>(root: &'s Value, path: &FieldPath) -> Option<&'s Value> {
    fn deref<'s>(root: &'s Value, mut s: &'s Value) -> &'s Value {
        for _ in 0..32 {
            match s
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            {
                Some(name) => match root.get("$defs").and_then(|d| d.get(name)) {
                    Some(next) => s = next,
                    None => break,
                },
                None => break,
            }
        }
        s
    }
    let mut s = deref(root, root);
    for seg in &path.0 {
        let next = match seg {
            Segment::Key(k) => s
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
            Segment::Index(_) => s.get("items"),
        }?;
        s = deref(root, next);
    }
    Some(s)
}

fn closest<'k>(word: &str, candidates: impl Iterator<Item = &'k String>) -> Option<&'k String> {
    let lower = word.to_lowercase();
    candidates
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Schema problems listed per object; past this, the rest are counted, not listed. Locating
/// each problem's node costs a lookup, and a generated file with 50,000 wrong values would
/// otherwise take seconds to report on.
const MAX_SCHEMA_PROBLEMS: usize = 1000;

pub(super) fn schema_problems(
    report: &mut ObjectReport<'_>,
    validator: &jsonschema::Validator,
    instance: &Value,
    kind_index: usize,
    options: ValidateOptions,
) {
    let root_schema = schema::committed(kind_index);
    let mut errors = validator.iter_errors(instance);
    for error in errors.by_ref().take(MAX_SCHEMA_PROBLEMS) {
        let path = to_field_path(error.instance_path());
        let found = error.instance();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                if !options.strict {
                    continue;
                }
                let known: Vec<String> = root_schema
                    .and_then(|r| schema_at(r, &path))
                    .and_then(|s| s.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                for name in unexpected {
                    let field = path.child(name);
                    let span = report.key_span(&field);
                    let help = closest(name, known.iter())
                        .map(|c| format!("did you mean `{c}`?"))
                        .or_else(|| {
                            (!known.is_empty() && known.len() <= 12)
                                .then(|| format!("known fields here: {}", known.join(", ")))
                        });
                    report.push(
                        Severity::Error,
                        "unknown-field",
                        &field,
                        span,
                        format!("unknown field `{name}`"),
                        help,
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_string);
                let span = report.key_span(&path);
                report.push(
                    Severity::Error,
                    "required",
                    &path,
                    span,
                    format!("missing required field `{name}`"),
                    Some(format!("add `{name}:` here")),
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => primitive_name(t),
                    TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| primitive_name(&t))
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                let help = match (expected.as_str(), found.as_ref()) {
                    ("string", Value::Number(_) | Value::Bool(_)) => {
                        Some(format!("quote the value: \"{}\"", found.as_ref()))
                    }
                    ("integer" | "number" | "boolean", Value::String(text))
                        if serde_json::from_str::<Value>(text)
                            .is_ok_and(|v| json_type_name(&v) == expected) =>
                    {
                        Some(format!("remove the quotes: {text}"))
                    }
                    _ => None,
                };
                report.error(
                    "type",
                    &path,
                    format!(
                        "expected {expected}, found {}{}",
                        json_type_name(found),
                        short(found)
                    ),
                    help,
                );
            }
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
                let schema = root_schema.and_then(|r| schema_at(r, &path));
                let is_quantity = schema.is_some_and(|s| s.to_string().contains("\"quantity\""));
                let (reason, help) = if is_quantity {
                    (
                        format!(
                            "expected a quantity, found {}{}",
                            json_type_name(found),
                            short(found)
                        ),
                        Some("use a quantity such as 250m, 1, 64Mi or 1Gi".to_string()),
                    )
                } else {
                    (
                        format!(
                            "expected an integer or a string, found {}{}",
                            json_type_name(found),
                            short(found)
                        ),
                        None,
                    )
                };
                report.error("type", &path, reason, help);
            }
            ValidationErrorKind::Format { format } => {
                let (reason, help) = match format.as_str() {
                    "quantity" => (
                        format!("invalid quantity{}", short(found)),
                        Some("use a number with an optional suffix: 250m, 1.5, 64Mi, 2Gi, 1e3".to_string()),
                    ),
                    "byte" => (
                        "not valid base64".to_string(),
                        Some("Secret `data` values are base64; put plain text under `stringData` instead".to_string()),
                    ),
                    "date-time" => (
                        format!("invalid timestamp{}", short(found)),
                        Some("use RFC 3339, e.g. 2024-01-02T15:04:05Z".to_string()),
                    ),
                    other => (format!("not a valid {other}{}", short(found)), None),
                };
                report.error("format", &path, reason, help);
            }
            ValidationErrorKind::Enum { options } => {
                report.error(
                    "enum",
                    &path,
                    format!("{} is not one of {}", short(found).trim(), options),
                    None,
                );
            }
            ValidationErrorKind::Constant { expected_value } => {
                report.error(
                    "const",
                    &path,
                    format!("must be {expected_value}, found{}", short(found)),
                    None,
                );
            }
            _ => {
                report.error("schema", &path, error.to_string(), None);
            }
        }
    }
    let more = errors.count();
    if more > 0 {
        report.error(
            "schema",
            &FieldPath::default(),
            format!("{more} more schema problems in this object are not listed"),
            Some(format!("fix the {MAX_SCHEMA_PROBLEMS} above and run again")),
        );
    }
}
