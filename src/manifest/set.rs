//! Loading a set of manifests, the one way every command and git sync does it: files,
//! folders, stdin or git blobs in; each file read, parsed and validated on a worker thread;
//! out come the objects to use and a [`SetReport`] of every problem, in input order.
//!
//! `berth validate` keeps no objects, so memory stays proportional to one file per core, not
//! to the whole input; `apply`, `diff`, `up` and git sync keep the valid ones; `delete` only
//! parses.

use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use super::crd::{self, Catalog, Definition};
use super::diagnostic::{Problem, Severity, Summary, hide_secret_values};
use super::load::{Input, Kustomized, LoadOptions, expand_inputs, load_bytes};
use super::validate::{
    Checked, ValidateOptions, Verdict, check_custom_object, check_object, is_custom,
    mark_duplicates,
};
use super::{Object, SourceFile};

/// How to load a set.
#[derive(Debug, Clone, Copy)]
pub struct SetOptions {
    pub load: LoadOptions,
    /// `None`: parse only, check nothing (what `berth delete -f` needs).
    pub validate: Option<ValidateOptions>,
    /// Keep the objects (apply, diff, up, git sync), or only the report (validate).
    pub keep_objects: bool,
}

impl SetOptions {
    /// Load, validate with `validate`, keep the objects.
    pub fn keep(validate: ValidateOptions) -> SetOptions {
        SetOptions {
            load: LoadOptions::default(),
            validate: Some(validate),
            keep_objects: true,
        }
    }
}

/// One object of the set, as read.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub value: Value,
    /// What validation found; `Skipped` for an unknown kind under `ignore_unknown_kinds`,
    /// which a server would refuse but an offline diff can still show.
    pub verdict: Verdict,
    /// The file it is in, as the user named it (or its path in the repository).
    pub path: String,
    /// The line of that file where it starts.
    pub line: usize,
    /// The input it was loaded from: `path` itself, or the kustomization folder that rendered
    /// it from `path` (what changes when any file the kustomization reads changes).
    pub input: String,
}

/// What was found in one file (or one unreadable path).
#[derive(Debug)]
pub struct FileReport {
    /// The path as the user named it.
    pub path: String,
    /// `None` when the file could not be read.
    pub file: Option<Arc<SourceFile>>,
    /// Problems of the file itself: unreadable, not YAML, binary…
    pub file_problems: Vec<Problem>,
    /// Every object in the file, in order.
    pub objects: Vec<Checked>,
}

/// Everything loading a set found, file by file in input order.
#[derive(Debug, Default)]
pub struct SetReport {
    pub files: Vec<FileReport>,
}

impl SetReport {
    /// Every problem in input order: each file's own problems, then its objects'.
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.files.iter().flat_map(|f| {
            f.file_problems
                .iter()
                .chain(f.objects.iter().flat_map(|o| o.problems.iter()))
        })
    }

    /// [`problems`](Self::problems) with Secret values left out, for CI logs and statuses.
    pub fn problems_without_secret_values(&self) -> Vec<Problem> {
        hide_secret_values(self.problems().cloned().collect())
    }

    /// How many problems are errors.
    pub fn error_count(&self) -> usize {
        self.problems()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    /// Whether some input could not be read at all (as opposed to read and found wrong).
    pub fn unreadable(&self) -> bool {
        self.files
            .iter()
            .any(|f| f.file_problems.iter().any(|p| p.rule == "io"))
    }

    /// The counts of the `--summary` line.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for report in &self.files {
            summary.files += usize::from(report.file.is_some());
            summary.errors += usize::from(!report.file_problems.is_empty());
            for object in &report.objects {
                summary.resources += 1;
                match object.verdict {
                    Verdict::Valid => summary.valid += 1,
                    Verdict::Invalid => summary.invalid += 1,
                    Verdict::Skipped => summary.skipped += 1,
                }
            }
        }
        summary
    }
}

/// What loading one file set aside for the whole set: its custom resources (checked once every
/// CustomResourceDefinition of the set is known) and its valid CustomResourceDefinitions, each
/// with its index among the file's objects.
#[derive(Default)]
struct SetAside {
    custom: Vec<(usize, Object)>,
    definitions: Vec<(usize, Definition)>,
}

/// One input loaded: its report and, if kept, its objects.
fn load_file(input: Input, options: SetOptions) -> (FileReport, Vec<Loaded>, SetAside) {
    if let Input::Kustomized(k) = &input {
        return load_kustomized(k, options);
    }
    let (name, bytes) = match input.read() {
        Ok(read) => read,
        Err(error) => {
            let report = FileReport {
                path: error.path.clone(),
                file: None,
                file_problems: vec![error.problem()],
                objects: Vec::new(),
            };
            return (report, Vec::new(), SetAside::default());
        }
    };
    let (file, objects, file_problems) = load_bytes(name, bytes, options.load);
    let lines = objects.iter().map(|o| o.node.span.start.line).collect();
    let report = FileReport {
        path: file.path.clone(),
        file: Some(file),
        file_problems,
        objects: Vec::new(),
    };
    check_objects(report, objects, lines, options)
}

/// A rendered kustomization: one report for the folder, each object validated where it came
/// from (its `path` and `line` are those of the file that holds it).
fn load_kustomized(k: &Kustomized, options: SetOptions) -> (FileReport, Vec<Loaded>, SetAside) {
    let mut report = FileReport {
        path: k.path.clone(),
        file: None,
        file_problems: Vec::new(),
        objects: Vec::new(),
    };
    match &k.rendered {
        Err(error) => {
            report.file_problems.push(error.problem());
            (report, Vec::new(), SetAside::default())
        }
        Ok(rendered) => {
            let objects = rendered.iter().map(|r| r.object()).collect();
            let lines = rendered.iter().map(|r| r.line).collect();
            check_objects(report, objects, lines, options)
        }
    }
}

/// Validates the objects of one input (`lines[i]` is where object `i` starts), sets aside its
/// custom resources and definitions for the whole set, and keeps the objects if asked to.
fn check_objects(
    mut report: FileReport,
    objects: Vec<Object>,
    lines: Vec<usize>,
    options: SetOptions,
) -> (FileReport, Vec<Loaded>, SetAside) {
    let checked: Vec<Checked> = objects
        .par_iter()
        .map(|o| match options.validate {
            // Checked once the set's definitions are known.
            Some(_) if is_custom(&o.value) => Checked::without_validation(o),
            Some(validate) => check_object(o, validate),
            None => Checked::without_validation(o),
        })
        .collect();
    let mut aside = SetAside::default();
    if options.validate.is_some() {
        for (i, (object, check)) in objects.iter().zip(&checked).enumerate() {
            if is_custom(&object.value) {
                aside.custom.push((i, object.clone()));
            } else if check.verdict == Verdict::Valid
                && crd::is_definition(&object.value)
                && let Ok(definition) = Definition::parse(&object.value)
            {
                aside.definitions.push((i, definition));
            }
        }
    }
    let kept = if options.keep_objects {
        objects
            .into_iter()
            .zip(lines)
            .zip(&checked)
            .map(|((o, line), c)| Loaded {
                path: o.file.path.clone(),
                line,
                input: report.path.clone(),
                value: o.value,
                verdict: c.verdict,
            })
            .collect()
    } else {
        Vec::new()
    };
    report.objects = checked;
    (report, kept, aside)
}

/// Loads every input (folders expanded, in parallel, input order kept) and, unless told not
/// to, validates every object and checks that none is defined twice. The objects are only fit
/// to use when the report has no error; a server takes only those not skipped
/// ([`Loaded::to_send`]).
///
/// Custom resources are checked against the CustomResourceDefinitions of the set itself; see
/// [`load_set_with`] to add definitions from elsewhere.
pub fn load_set(inputs: Vec<Input>, options: SetOptions) -> (Vec<Loaded>, SetReport) {
    load_set_with(inputs, options, &Catalog::default())
}

/// [`load_set`], checking custom resources against `definitions` (a `--crds` folder's) as well
/// as against the CustomResourceDefinitions of the set.
pub fn load_set_with(
    inputs: Vec<Input>,
    options: SetOptions,
    definitions: &Catalog,
) -> (Vec<Loaded>, SetReport) {
    let (files, expand_problems) = expand_inputs(inputs);
    let loaded: Vec<(FileReport, Vec<Loaded>, SetAside)> = files
        .into_par_iter()
        .map(|input| load_file(input, options))
        .collect();
    let mut report = SetReport::default();
    let mut objects = Vec::new();
    let mut aside = Vec::new();
    for (file, file_objects, file_aside) in loaded {
        objects.extend(file_objects);
        aside.push(file_aside);
        report.files.push(file);
    }
    if let Some(validate) = options.validate {
        let mut catalog = definitions.clone();
        for (file, set_aside) in report.files.iter_mut().zip(&mut aside) {
            for (i, definition) in set_aside.definitions.drain(..) {
                if let Err(why) = catalog.add(definition) {
                    file.objects[i].refuse("crd", why);
                }
            }
        }
        let custom: Vec<(usize, usize, Object)> = aside
            .into_iter()
            .enumerate()
            .flat_map(|(f, a)| a.custom.into_iter().map(move |(i, o)| (f, i, o)))
            .collect();
        let checked: Vec<(usize, usize, Checked)> = custom
            .into_par_iter()
            .map(|(f, i, o)| (f, i, check_custom_object(&o, validate, &catalog)))
            .collect();
        for (f, i, c) in checked {
            report.files[f].objects[i] = c;
        }
    }
    report
        .files
        .extend(expand_problems.into_iter().map(|problem| FileReport {
            path: problem.path.clone(),
            file: None,
            file_problems: vec![problem],
            objects: Vec::new(),
        }));
    if options.validate.is_some() {
        mark_duplicates(report.files.iter_mut().flat_map(|r| r.objects.iter_mut()));
        // A duplicate is invalid: its object says so too.
        let verdicts = report
            .files
            .iter()
            .flat_map(|f| f.objects.iter().map(|c| c.verdict));
        for (object, verdict) in objects.iter_mut().zip(verdicts) {
            object.verdict = verdict;
        }
    }
    (objects, report)
}

/// The CustomResourceDefinitions in `inputs` (a `--crds` folder), for [`load_set_with`], and
/// the problems of those definitions and of the files holding them. Other objects in the
/// folder are not checked.
pub fn load_definitions(inputs: Vec<Input>) -> (Catalog, Vec<Problem>) {
    let (objects, report) = load_set(inputs, SetOptions::keep(ValidateOptions::default()));
    let mut catalog = Catalog::default();
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for file in report.files {
        problems.extend(file.file_problems);
        checked.extend(file.objects);
    }
    // Kept objects and checked ones come in the same order.
    for (object, check) in objects.iter().zip(checked) {
        if !crd::is_definition(&object.value) {
            continue;
        }
        problems.extend(check.problems.iter().cloned());
        if object.verdict != Verdict::Valid {
            continue;
        }
        let Ok(definition) = Definition::parse(&object.value) else {
            continue;
        };
        if let Err(why) = catalog.add(definition) {
            let mut check = check;
            check.refuse("crd", why);
            problems.extend(check.problems.pop());
        }
    }
    (catalog, problems)
}

impl Loaded {
    /// The objects to send to a server: a skipped one (an unknown kind, with
    /// `ignore_unknown_kinds`) stays out.
    pub fn to_send(objects: Vec<Loaded>) -> Vec<Value> {
        objects
            .into_iter()
            .filter(|o| o.verdict != Verdict::Skipped)
            .map(|o| o.value)
            .collect()
    }
}

/// Gives rayon's workers room for deeply nested (but within limits) documents, and `jobs`
/// threads if set (default: one per core). Call once, before the first [`load_set`].
pub fn configure_workers(jobs: Option<usize>) {
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(8 * 1024 * 1024);
    if let Some(jobs) = jobs {
        pool = pool.num_threads(jobs.max(1));
    }
    // Already built (a second command in one process, or a test): keep it.
    let _ = pool.build_global();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(path: &str, text: &str) -> Input {
        Input::File {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";

    #[test]
    fn objects_keep_their_file_and_line_and_problems_their_order() {
        let inputs = vec![
            blob("a.yaml", &format!("# first\n---\n{CM}")),
            blob(
                "b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\nbogus: 1\n",
            ),
            blob("c.yaml", CM),
        ];
        let (objects, report) = load_set(inputs, SetOptions::keep(ValidateOptions::default()));
        let places: Vec<_> = objects.iter().map(|o| (o.path.as_str(), o.line)).collect();
        assert_eq!(places, [("a.yaml", 3), ("b.yaml", 1), ("c.yaml", 1)]);
        let rules: Vec<_> = report
            .problems()
            .map(|p| (p.path.as_str(), p.rule))
            .collect();
        assert_eq!(
            rules,
            [("b.yaml", "unknown-field"), ("c.yaml", "duplicate-object")]
        );
        assert_eq!(report.error_count(), 2);
        let summary = report.summary();
        assert_eq!(
            (summary.files, summary.resources, summary.invalid),
            (3, 3, 2)
        );
    }

    #[test]
    fn parse_only_checks_nothing_but_the_syntax() {
        let inputs = vec![blob("a.yaml", &format!("{CM}bogus: 1\n---\n{CM}"))];
        let options = SetOptions {
            validate: None,
            ..SetOptions::keep(ValidateOptions::default())
        };
        let (objects, report) = load_set(inputs, options);
        assert_eq!(objects.len(), 2);
        assert_eq!(report.error_count(), 0);
        let (_, report) = load_set(vec![blob("a.yaml", "a: [")], options);
        assert_eq!(report.error_count(), 1);
        assert!(!report.unreadable());
    }

    #[test]
    fn a_missing_path_is_unreadable() {
        let (_, report) = load_set(
            vec![Input::Path("/nonexistent/berth".into())],
            SetOptions::keep(ValidateOptions::default()),
        );
        assert!(report.unreadable());
        assert_eq!(report.summary().errors, 1);
    }
}
