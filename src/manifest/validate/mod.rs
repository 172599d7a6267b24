//! Validation: every object against its kind's JSON Schema (with the `jsonschema` crate), then
//! the semantic checks the API server makes that a schema cannot express. Every problem points
//! at the YAML node it is about.

mod schema;

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::Value;

use super::crd::{self, Catalog, Definition, Lookup, Version};
use super::diagnostic::{Problem, Severity};
use super::kinds::{self, KINDS};
use super::report::{FieldPath, ObjectReport, Segment, node_at};
use super::yaml::{DuplicateKey, Span};
use super::{Object, semantic};
use schema::{schema_problems, validator};

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

/// Validates one object read from a manifest. Returns its verdict and its problems (warnings
/// included), each pointing at the YAML it is about.
pub fn validate_object(object: &Object, options: ValidateOptions) -> (Verdict, Vec<Problem>) {
    let mut report = ObjectReport::for_object(object);
    if options.strict {
        report_duplicate_keys(&mut report, &object.duplicate_keys);
    }
    let verdict = check(&mut report, &object.value, options);
    (verdict, report.problems)
}

/// Validates an object decoded from elsewhere (an API request's body): the same checks as
/// [`validate_object`], its problems naming fields but no file.
pub fn validate_value(value: &Value, options: ValidateOptions) -> (Verdict, Vec<Problem>) {
    let mut report = ObjectReport::for_value(value);
    let verdict = check(&mut report, value, options);
    (verdict, report.problems)
}

fn report_duplicate_keys(report: &mut ObjectReport<'_>, duplicates: &[DuplicateKey]) {
    for dup in duplicates {
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
            Some(dup.again),
            format!("duplicate key `{}`", dup.key),
            Some(format!(
                "the key is first given at line {}; remove one of them",
                dup.first.start.line
            )),
        );
    }
}

/// The schema and semantic checks of one object; the problems go to `report`.
fn check(report: &mut ObjectReport<'_>, value: &Value, options: ValidateOptions) -> Verdict {
    let root = FieldPath::default();
    let api_version = value.get("apiVersion");
    let kind = value.get("kind");
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
        return Verdict::Invalid;
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
            Some("is this a custom resource? give its CustomResourceDefinition in the same set or with --crds PATH, or pass --ignore-unknown-kinds to skip kinds berth does not know".into())
        };
        if options.ignore_unknown_kinds && known.is_empty() {
            report.warning(
                "unknown-kind",
                &root.child("kind"),
                format!("unknown kind {kind} ({api_version}); not validated"),
                help,
            );
            return Verdict::Skipped;
        }
        report.error(
            "unknown-kind",
            &root.child("kind"),
            format!("unknown kind {kind} in apiVersion {api_version}"),
            help,
        );
        return Verdict::Invalid;
    };
    let stripped = without_nulls(value);
    let instance = stripped.as_ref().unwrap_or(value);
    match validator(index) {
        Some(v) => {
            if !v.is_valid(instance) {
                schema_problems(report, v, instance, index, options);
            }
        }
        None => report.error(
            "schema",
            &root,
            format!("no schema for {kind} in this build of berth"),
            Some("run `berth schema generate` and rebuild".into()),
        ),
    }
    semantic::check(report, &KINDS[index], instance);
    if crd::is_definition(instance)
        && !report
            .problems
            .iter()
            .any(|p| p.severity == Severity::Error)
        && let Err(errors) = Definition::parse(instance)
    {
        for e in errors {
            report.error("crd", &e.field, e.message(), None);
        }
    }
    if report
        .problems
        .iter()
        .any(|p| p.severity == Severity::Error)
    {
        Verdict::Invalid
    } else {
        Verdict::Valid
    }
}

/// Whether an object names a kind berth does not know itself: a custom resource, to check
/// against the CustomResourceDefinitions of its set with [`check_custom_object`].
pub fn is_custom(value: &Value) -> bool {
    match (
        value.get("apiVersion").and_then(Value::as_str),
        value.get("kind").and_then(Value::as_str),
    ) {
        (Some(api_version), Some(kind)) if !api_version.is_empty() && !kind.is_empty() => {
            kind_index(api_version, kind).is_none()
        }
        _ => false,
    }
}

/// Validates a custom resource read from a manifest against the definitions in `catalog`. One
/// that no definition covers gets what [`check_object`] says of an unknown kind.
pub fn check_custom_object(
    object: &Object,
    options: ValidateOptions,
    catalog: &Catalog,
) -> Checked {
    let api_version = object.api_version().unwrap_or_default();
    let kind = object.kind().unwrap_or_default();
    let mut report = ObjectReport::for_object(object);
    let verdict = match catalog.lookup(api_version, kind) {
        Lookup::Unknown => return check_object(object, options),
        Lookup::VersionNotServed(definition) => {
            report.error(
                "unknown-kind",
                &FieldPath::default().child("apiVersion"),
                format!(
                    "{kind} is not served in {api_version} by CustomResourceDefinition {}",
                    definition.name
                ),
                Some(format!(
                    "served versions: {}",
                    definition
                        .served_names()
                        .iter()
                        .map(|v| definition.api_version(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            Verdict::Invalid
        }
        Lookup::Found(definition, version) => {
            if options.strict {
                report_duplicate_keys(&mut report, &object.duplicate_keys);
            }
            check_custom(&mut report, &object.value, definition, version, options)
        }
    };
    Checked {
        verdict,
        problems: report.problems,
        ..check_report(object)
    }
}

/// A custom resource against its definition: fields the schema does not specify are errors
/// (warnings with `strict: false`, as the server prunes them), then the schema with defaults
/// applied.
fn check_custom(
    report: &mut ObjectReport<'_>,
    value: &Value,
    definition: &Definition,
    version: &Version,
    options: ValidateOptions,
) -> Verdict {
    let mut prepared = value.clone();
    let pruned = definition.prepare(version, &mut prepared);
    for field in pruned {
        let name = match field.0.last() {
            Some(Segment::Key(k)) => k.clone(),
            _ => field.to_string(),
        };
        let span = report.key_span(&field);
        let severity = if options.strict {
            Severity::Error
        } else {
            Severity::Warning
        };
        report.push(
            severity,
            "unknown-field",
            &field,
            span,
            format!("unknown field `{name}`"),
            Some(format!(
                "CustomResourceDefinition {} does not specify it, so a server would drop it",
                definition.name
            )),
        );
    }
    for e in definition.validate(version, &prepared) {
        report.error("schema", &e.field, e.message(), None);
    }
    if report
        .problems
        .iter()
        .any(|p| p.severity == Severity::Error)
    {
        Verdict::Invalid
    } else {
        Verdict::Valid
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
        verdict,
        problems,
        ..check_report(object)
    }
}

/// The part of a [`Checked`] that describes the object, with no verdict yet.
fn check_report(object: &Object) -> Checked {
    Checked {
        describe: object.describe(),
        location: object.location(),
        identity: identity(object),
        verdict: Verdict::Valid,
        problems: Vec::new(),
        file: object.file.clone(),
        name_span: node_at(&object.node, &FieldPath::parse_keys(&["metadata", "name"])).span,
    }
}

impl Checked {
    /// Adds a warning about the whole object, pointing at its name (a warning changes no
    /// verdict and no exit code).
    pub fn warn(&mut self, rule: &'static str, reason: String, help: Option<String>) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            path: self.file.path.clone(),
            source: Some(self.file.clone()),
            span: Some(self.name_span),
            object: Some(self.describe.clone()),
            field: None,
            reason,
            help,
            rule,
        });
    }

    /// What a report keeps of an object that is not validated (only parsed): no problems.
    pub fn without_validation(object: &Object) -> Checked {
        Checked {
            problems: Vec::new(),
            verdict: Verdict::Valid,
            ..check_report(object)
        }
    }
}

impl Checked {
    /// Marks the object invalid with an error about its name: a CustomResourceDefinition that
    /// claims a kind another one of the set already claims.
    pub fn refuse(&mut self, rule: &'static str, reason: String) {
        self.problems.push(Problem {
            severity: Severity::Error,
            path: self.file.path.clone(),
            source: Some(self.file.clone()),
            span: Some(self.name_span),
            object: Some(self.describe.clone()),
            field: Some("metadata.name".into()),
            reason,
            help: Some("give each kind one CustomResourceDefinition".into()),
            rule,
        });
        self.verdict = Verdict::Invalid;
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
    let mut catalog = Catalog::default();
    for (object, check) in objects.iter().zip(checked.iter_mut()) {
        if check.verdict == Verdict::Valid
            && crd::is_definition(&object.value)
            && let Ok(definition) = Definition::parse(&object.value)
            && let Err(why) = catalog.add(definition)
        {
            check.refuse("crd", why);
        }
    }
    for (object, check) in objects.iter().zip(checked.iter_mut()) {
        if is_custom(&object.value) {
            *check = check_custom_object(object, options, &catalog);
        }
    }
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
