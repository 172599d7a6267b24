//! Loading the manifests a client command sends to a cluster (`apply -f`, `diff -f`): every
//! file read, parsed and validated first with the one loader and validator, and every
//! problem reported as `berth validate` reports it, before anything touches the cluster.
//! Reports about Secrets leave their values out, as `berth diff` does.

use std::io::IsTerminal;

use rayon::prelude::*;
use serde_json::Value;

use super::validate::error_line;
use crate::manifest::diagnostic::{Summary, render_human};
use crate::manifest::load::{expand_inputs, load_bytes, read_input};
use crate::manifest::validate::Verdict;
use crate::manifest::{Input, LoadOptions, Problem, Severity, ValidateOptions, validate};

/// Why the manifests cannot be sent.
#[derive(Debug)]
pub enum Refused {
    /// No paths were given.
    NoInput,
    /// Some file could not be read (the report is printed).
    Unreadable,
    /// Some object is invalid (the report is printed).
    Invalid,
}

/// Loads and validates every input. On problems, prints the report on stderr.
pub fn load_valid(paths: &[String], options: ValidateOptions) -> Result<Vec<Value>, Refused> {
    if paths.is_empty() {
        return Err(Refused::NoInput);
    }
    // Validation walks deeply nested documents; give rayon's workers room, as validate does.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 * 1024 * 1024)
        .build_global();
    let inputs: Vec<Input> = paths.iter().map(|p| Input::parse(p)).collect();
    let (files, expand_problems) = expand_inputs(&inputs);
    let loaded: Vec<_> = files
        .par_iter()
        .map(|input| match read_input(input) {
            Ok((name, bytes)) => {
                let (_, objects, problems) = load_bytes(name, bytes, LoadOptions::default());
                (true, objects, problems)
            }
            Err(error) => (false, Vec::new(), vec![error.problem()]),
        })
        .collect();
    let mut summary = Summary::default();
    let mut problems: Vec<Problem> = Vec::new();
    let mut objects = Vec::new();
    let mut unreadable = !expand_problems.is_empty();
    for (read, file_objects, file_problems) in loaded {
        summary.files += usize::from(read);
        unreadable |= !read;
        summary.errors += usize::from(!file_problems.is_empty());
        problems.extend(file_problems);
        objects.extend(file_objects);
    }
    summary.errors += expand_problems.len();
    problems.extend(expand_problems);
    let validated = validate(&objects, options);
    for (verdict, object_problems) in validated.verdicts.iter().zip(validated.problems) {
        summary.resources += 1;
        match verdict {
            Verdict::Valid => summary.valid += 1,
            Verdict::Invalid => summary.invalid += 1,
            Verdict::Skipped => summary.skipped += 1,
        }
        problems.extend(object_problems);
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let problems = super::diff::without_secret_values(problems);
    if !problems.is_empty() {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        eprint!("{}", render_human(&problems, color));
    }
    if let Some(line) = error_line(errors, &summary) {
        eprintln!("{line}");
    }
    if unreadable {
        return Err(Refused::Unreadable);
    }
    if errors > 0 {
        return Err(Refused::Invalid);
    }
    Ok(validated_values(objects, &validated.verdicts))
}

/// The objects to send: skipped ones (unknown kinds, with `--ignore-unknown-kinds`) stay out.
fn validated_values(objects: Vec<crate::manifest::Object>, verdicts: &[Verdict]) -> Vec<Value> {
    objects
        .into_iter()
        .zip(verdicts)
        .filter(|(_, v)| **v != Verdict::Skipped)
        .map(|(o, _)| o.value)
        .collect()
}
