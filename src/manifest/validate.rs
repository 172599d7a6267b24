//! Validation: every object against its kind's JSON Schema (with the `jsonschema` crate), then
//! the semantic checks the API server makes that a schema cannot express. Every problem points
//! at the YAML node it is about.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use rayon::prelude::*;
use serde_json::Value;

use super::diagnostic::{Problem, Severity};
use super::kinds::{self, KINDS};
use super::yaml::{Node, NodeValue, Span};
use super::{Object, names, schema, semantic};

#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions {
    /// Unknown fields and duplicate keys are errors (the default).
    pub strict: bool,
    /// Objects of kinds berth does not know are skipped with a warning instead of refused.
    pub ignore_unknown_kinds: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            strict: true,
            ignore_unknown_kinds: false,
        }
    }
}

/// What validation found for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// Not checked: an unknown kind under `--ignore-unknown-kinds`.
    Skipped,
}

/// A field path: `spec.template.spec.containers[0].image`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn child(&self, key: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    pub fn parse_keys(path: &[&str]) -> FieldPath {
        FieldPath(
            path.iter()
                .map(|k| Segment::Key((*k).to_string()))
                .collect(),
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Segment::Key(k)
                    if !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                // Keys such as `app.kubernetes.io/name` would be ambiguous after a dot.
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// The node at `path`, or the deepest node on the way to it.
pub fn node_at<'a>(root: &'a Node, path: &FieldPath) -> &'a Node {
    let mut node = root;
    for seg in &path.0 {
        let next = match (seg, &node.value) {
            (Segment::Key(k), NodeValue::Map(_)) => node.get(k),
            (Segment::Index(i), NodeValue::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node
}

/// The key node of the last segment of `path`, where a problem about the key itself points.
pub fn key_node_at<'a>(root: &'a Node, path: &FieldPath) -> &'a Node {
    let Some((Segment::Key(last), parent)) = path.0.split_last() else {
        return node_at(root, path);
    };
    let parent_node = node_at(root, &FieldPath(parent.to_vec()));
    parent_node.entry(last).map_or(parent_node, |(k, _)| k)
}

/// Builds problems about one object.
pub(crate) struct ObjectReport<'a> {
    pub object: &'a Object,
    pub problems: Vec<Problem>,
}

impl<'a> ObjectReport<'a> {
    fn new(object: &'a Object) -> Self {
        ObjectReport {
            object,
            problems: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        rule: &'static str,
        field: &FieldPath,
        span: Span,
        reason: String,
        help: Option<String>,
    ) {
        self.problems.push(Problem {
            severity,
            path: self.object.file.path.clone(),
            source: Some(self.object.file.clone()),
            span: Some(span),
            object: Some(self.object.describe()),
            field: Some(field.to_string()),
            reason,
            help,
            rule,
        });
    }

    /// An error about the value at `field`.
    pub fn error(
        &mut self,
        rule: &'static str,
        field: &FieldPath,
        reason: String,
        help: Option<String>,
    ) {
        let span = node_at(&self.object.node, field).span;
        self.push(Severity::Error, rule, field, span, reason, help);
    }

    pub fn warning(
        &mut self,
        rule: &'static str,
        field: &FieldPath,
        reason: String,
        help: Option<String>,
    ) {
        let span = node_at(&self.object.node, field).span;
        self.push(Severity::Warning, rule, field, span, reason, help);
    }
}

fn validators() -> &'static [OnceLock<Option<jsonschema::Validator>>] {
    static CELLS: OnceLock<Vec<OnceLock<Option<jsonschema::Validator>>>> = OnceLock::new();
    CELLS.get_or_init(|| KINDS.iter().map(|_| OnceLock::new()).collect())
}

fn is_base64(s: &str) -> bool {
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if bytes.len() % 4 != 0 {
        return false;
    }
    let pad = bytes.iter().rev().take_while(|b| **b == b'=').count();
    pad <= 2
        && bytes[..bytes.len() - pad]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// The compiled validator of a kind, built on first use from the committed schema.
fn validator(kind_index: usize) -> Option<&'static jsonschema::Validator> {
    validators()[kind_index]
        .get_or_init(|| {
            let schema = schema::committed(kind_index)?;
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .with_format("quantity", names::quantity)
                .with_format("byte", is_base64)
                .with_format("int32", |_| true)
                .with_format("int64", |_| true)
                .with_format("double", |_| true)
                .build(schema)
                .ok()
        })
        .as_ref()
}

fn kind_index(api_version: &str, kind: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.kind == kind && k.api_version == api_version)
}

/// Kubernetes treats an explicit `null` as an absent field; so does validation.
fn without_nulls(value: &Value) -> Option<Value> {
    fn has_null_field(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|x| x.is_null() || has_null_field(x)),
            Value::Array(a) => a.iter().any(has_null_field),
            _ => false,
        }
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if !has_null_field(value) {
        return None;
    }
    let mut copy = value.clone();
    strip(&mut copy);
    Some(copy)
}

/// Validates one object. Returns its verdict and its problems (warnings included).
pub fn validate_object(object: &Object, options: ValidateOptions) -> (Verdict, Vec<Problem>) {
    let mut report = ObjectReport::new(object);
    let root = FieldPath::default();
    if options.strict {
        for dup in &object.duplicate_keys {
            report.push(
                Severity::Error,
                "duplicate-key",
                &FieldPath(
                    dup.path
                        .split('.')
                        .filter(|s| !s.is_empty())
                        .map(|s| Segment::Key(s.to_string()))
                        .chain(std::iter::once(Segment::Key(dup.key.clone())))
                        .collect(),
                ),
                dup.again,
                format!("duplicate key `{}`", dup.key),
                Some(format!(
                    "the key is first given at line {}; remove one of them",
                    dup.first.start.line
                )),
            );
        }
    }
    let api_version = object.value.get("apiVersion");
    let kind = object.value.get("kind");
    let mut missing = false;
    for (key, value) in [("apiVersion", api_version), ("kind", kind)] {
        match value {
            None | Some(Value::Null) => {
                missing = true;
                report.error(
                    if key == "kind" {
                        "missing-kind"
                    } else {
                        "missing-api-version"
                    },
                    &root,
                    format!("missing '{key}' key"),
                    Some(format!(
                        "every object needs `{key}`, e.g. {}",
                        if key == "kind" {
                            "`kind: Deployment`"
                        } else {
                            "`apiVersion: apps/v1`"
                        }
                    )),
                );
            }
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                missing = true;
                report.error(
                    "missing-kind",
                    &root.child(key),
                    format!("`{key}` must be a non-empty string"),
                    None,
                );
            }
        }
    }
    if missing {
        return (Verdict::Invalid, report.problems);
    }
    let api_version = api_version.and_then(Value::as_str).unwrap_or_default();
    let kind = kind.and_then(Value::as_str).unwrap_or_default();
    let Some(index) = kind_index(api_version, kind) else {
        let known = kinds::versions_of(kind);
        let help = if !known.is_empty() {
            Some(format!(
                "{kind} is served as apiVersion {}",
                known.join(" or ")
            ))
        } else if options.ignore_unknown_kinds {
            None
        } else {
            Some("is this a custom resource? pass --ignore-unknown-kinds to skip kinds berth does not know".into())
        };
        if options.ignore_unknown_kinds && known.is_empty() {
            report.warning(
                "unknown-kind",
                &root.child("kind"),
                format!("unknown kind {kind} ({api_version}); not validated"),
                help,
            );
            return (Verdict::Skipped, report.problems);
        }
        report.error(
            "unknown-kind",
            &root.child("kind"),
            format!("unknown kind {kind} in apiVersion {api_version}"),
            help,
        );
        return (Verdict::Invalid, report.problems);
    };
    let stripped = without_nulls(&object.value);
    let instance = stripped.as_ref().unwrap_or(&object.value);
    match validator(index) {
        Some(v) => {
            if !v.is_valid(instance) {
                schema_problems(&mut report, v, instance, index, options);
            }
        }
        None => report.error(
            "schema",
            &root,
            format!("no schema for {kind} in this build of berth"),
            Some("run `berth schema generate` and rebuild".into()),
        ),
    }
    semantic::check(&mut report, &KINDS[index], instance);
    let verdict = if report
        .problems
        .iter()
        .any(|p| p.severity == Severity::Error)
    {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    (verdict, report.problems)
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

fn schema_problems(
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
                    let span = key_node_at(&report.object.node, &field).span;
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
                let span = key_node_at(&report.object.node, &path).span;
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

/// The identity of an object for the duplicate check: group, kind, namespace, name.
pub type Identity = (String, String, String, String);

fn identity(object: &Object) -> Option<Identity> {
    let api_version = object.api_version()?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    Some((
        group.to_string(),
        object.kind()?.to_string(),
        object.namespace().unwrap_or_default().to_string(),
        object.name()?.to_string(),
    ))
}

/// What validation found about one object, kept after the object itself is dropped.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `Deployment shop/web`.
    pub describe: String,
    /// `file:line:col` where the object starts.
    pub location: String,
    pub identity: Option<Identity>,
    pub verdict: Verdict,
    pub problems: Vec<Problem>,
    file: std::sync::Arc<super::SourceFile>,
    name_span: Span,
}

/// Validates one object and keeps only what reporting needs.
pub fn check_object(object: &Object, options: ValidateOptions) -> Checked {
    let (verdict, problems) = validate_object(object, options);
    Checked {
        describe: object.describe(),
        location: object.location(),
        identity: identity(object),
        verdict,
        problems,
        file: object.file.clone(),
        name_span: node_at(&object.node, &FieldPath::parse_keys(&["metadata", "name"])).span,
    }
}

/// Marks every object that repeats an earlier one (same group, kind, namespace and name).
pub fn mark_duplicates<'a>(checked: impl IntoIterator<Item = &'a mut Checked>) {
    let mut seen: HashMap<Identity, String> = HashMap::new();
    for c in checked {
        let Some(id) = &c.identity else { continue };
        match seen.get(id) {
            Some(first) => {
                c.problems.push(Problem {
                    severity: Severity::Error,
                    path: c.file.path.clone(),
                    source: Some(c.file.clone()),
                    span: Some(c.name_span),
                    object: Some(c.describe.clone()),
                    field: Some("metadata.name".into()),
                    reason: format!("{} is defined twice", c.describe),
                    help: Some(format!("first defined at {first}; remove one of them")),
                    rule: "duplicate-object",
                });
                c.verdict = Verdict::Invalid;
            }
            None => {
                seen.insert(id.clone(), c.location.clone());
            }
        }
    }
}

/// Result of validating a set of objects.
#[derive(Debug, Default)]
pub struct Validated {
    /// One verdict per input object, in order.
    pub verdicts: Vec<Verdict>,
    /// Problems per input object, in order.
    pub problems: Vec<Vec<Problem>>,
}

impl Validated {
    pub fn is_valid(&self) -> bool {
        self.verdicts.iter().all(|v| *v != Verdict::Invalid)
    }
}

/// Validates every object (in parallel), then checks that no object appears twice.
pub fn validate(objects: &[Object], options: ValidateOptions) -> Validated {
    let mut checked: Vec<Checked> = objects
        .par_iter()
        .map(|o| check_object(o, options))
        .collect();
    mark_duplicates(checked.iter_mut());
    let (verdicts, problems) = checked.into_iter().map(|c| (c.verdict, c.problems)).unzip();
    Validated { verdicts, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load::{LoadOptions, load_text};

    fn check(text: &str, options: ValidateOptions) -> (Vec<Verdict>, Vec<Problem>) {
        let (_, objects, load_problems) =
            load_text("m.yaml".into(), text.into(), LoadOptions::default());
        assert!(load_problems.is_empty(), "{load_problems:?}");
        let v = validate(&objects, options);
        (v.verdicts, v.problems.into_iter().flatten().collect())
    }

    const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        imagePullPolicyy: Always
        resources:
          limits: {cpu: 250m, memory: 64Mi}
";

    #[test]
    fn a_typo_is_found_with_its_place_and_a_suggestion() {
        let (verdicts, problems) = check(DEPLOY, ValidateOptions::default());
        assert_eq!(verdicts, [Verdict::Invalid]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let p = &problems[0];
        assert_eq!(
            p.field.as_deref(),
            Some("spec.template.spec.containers[0].imagePullPolicyy")
        );
        assert_eq!((p.line(), p.column()), (Some(17), Some(9)));
        assert_eq!(p.help.as_deref(), Some("did you mean `imagePullPolicy`?"));
        assert_eq!(p.object.as_deref(), Some("Deployment web"));
    }

    #[test]
    fn host_aliases_and_host_network_ports_are_checked_as_kubernetes_does() {
        let pod = "apiVersion: v1
kind: Pod
metadata: {name: exporter}
spec:
  hostNetwork: true
  hostAliases:
  - {ip: 10.0.0.5, hostnames: [db.internal]}
  - {ip: db.internal, hostnames: [Cache_1]}
  containers:
  - name: c
    image: busybox:1.36
    ports:
    - {containerPort: 9100, hostPort: 9100}
    - {containerPort: 9101, hostPort: 8080}
    - {containerPort: 9102}
    - {containerPort: 9103, hostPort: 0}
";
        let (verdicts, problems) = check(pod, ValidateOptions::default());
        assert_eq!(verdicts, [Verdict::Invalid]);
        let fields: Vec<_> = problems.iter().map(|p| p.field.clone().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "spec.hostAliases[1].ip",
                "spec.hostAliases[1].hostnames[0]",
                "spec.containers[0].ports[1].hostPort"
            ],
            "{problems:#?}"
        );
        assert!(
            problems[2]
                .message()
                .contains("differs from containerPort 9101")
        );
        let fixed = pod
            .replace(
                "ip: db.internal, hostnames: [Cache_1]",
                "ip: 10.0.0.6, hostnames: [cache-1]",
            )
            .replace("hostPort: 8080", "hostPort: 9101");
        assert_eq!(
            check(&fixed, ValidateOptions::default()).0,
            [Verdict::Valid]
        );
    }

    #[test]
    fn non_strict_allows_unknown_fields() {
        let (verdicts, _) = check(
            DEPLOY,
            ValidateOptions {
                strict: false,
                ..Default::default()
            },
        );
        assert_eq!(verdicts, [Verdict::Valid]);
    }

    #[test]
    fn wrong_types_and_bad_quantities() {
        let text = DEPLOY
            .replace("imagePullPolicyy: Always", "imagePullPolicy: Always")
            .replace("replicas: 2", "replicas: two")
            .replace("memory: 64Mi", "memory: 64MB");
        let (_, problems) = check(&text, ValidateOptions::default());
        let fields: Vec<_> = problems.iter().map(|p| p.field.clone().unwrap()).collect();
        assert!(
            fields.contains(&"spec.replicas".to_string()),
            "{problems:#?}"
        );
        assert!(
            fields
                .contains(&"spec.template.spec.containers[0].resources.limits.memory".to_string()),
            "{problems:#?}"
        );
    }

    #[test]
    fn missing_kind_names_the_key() {
        let (verdicts, problems) = check(
            "apiVersion: v1\nmetadata: {name: x}\n",
            ValidateOptions::default(),
        );
        assert_eq!(verdicts, [Verdict::Invalid]);
        assert!(problems[0].reason.contains("missing 'kind' key"));
    }

    #[test]
    fn unknown_kinds_error_unless_ignored() {
        let text = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n";
        let (v, _) = check(text, ValidateOptions::default());
        assert_eq!(v, [Verdict::Invalid]);
        let (v, p) = check(
            text,
            ValidateOptions {
                ignore_unknown_kinds: true,
                ..Default::default()
            },
        );
        assert_eq!(v, [Verdict::Skipped]);
        assert_eq!(p[0].severity, Severity::Warning);
    }

    #[test]
    fn the_same_object_twice_is_an_error() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let (v, p) = check(&format!("{cm}---\n{cm}"), ValidateOptions::default());
        assert_eq!(v, [Verdict::Valid, Verdict::Invalid]);
        assert!(p[0].help.as_ref().unwrap().contains("m.yaml:1:1"));
    }

    #[test]
    fn nulls_are_absent_fields() {
        let (v, p) = check(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, creationTimestamp: null}\ndata: null\n",
            ValidateOptions::default(),
        );
        assert_eq!(v, [Verdict::Valid], "{p:#?}");
    }
}
