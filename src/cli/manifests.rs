//! Loading the manifests a client command sends to a cluster (`apply -f`, `diff -f`, `berth
//! up`): the set is loaded and validated by the one loader and validator first, and every
//! problem reported as `berth validate` reports it, before anything is written to the cluster
//! (`apply -f` and `diff -f` first read the CRDs the server serves, so custom resources whose
//! CRD is not in the set are checked against them). Reports leave Secret values out, as
//! `berth diff` does.

use std::io::IsTerminal;

use serde_json::Value;

use crate::manifest::crd::Catalog;
use crate::manifest::diagnostic::render_human;
use crate::manifest::set::{configure_workers, load_set_with};
use crate::manifest::{Input, Loaded, Problem, SetOptions, ValidateOptions};

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

/// Prints problems on stderr as `berth validate` does, in colour on a terminal.
pub fn print_problems(problems: &[Problem]) {
    if problems.is_empty() {
        return;
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    eprint!("{}", render_human(problems, color));
}

/// The paths of `-f` and those of `-k`, each of which must hold a kustomization (a folder
/// given with `-f` that holds one is rendered too). `None` (the reason printed) when a `-k`
/// folder holds none.
pub fn with_kustomizations(filenames: &[String], kustomize: &[String]) -> Option<Vec<String>> {
    for dir in kustomize {
        if crate::manifest::kustomize::kustomization_in(&crate::manifest::kustomize::Disk, dir)
            .is_none()
        {
            eprintln!(
                "error: {dir}: no kustomization.yaml, kustomization.yml or Kustomization in this folder (-k takes a kustomization's folder; use -f for plain manifests)"
            );
            return None;
        }
    }
    Some(filenames.iter().chain(kustomize).cloned().collect())
}

/// Loads and validates every input. On problems, prints the report on stderr.
pub fn load_valid(paths: &[String], options: ValidateOptions) -> Result<Vec<Value>, Refused> {
    load_valid_with(paths, options, &Catalog::default())
}

/// [`load_valid`], checking custom resources against `definitions` as well as against the
/// CRDs of the set.
pub fn load_valid_with(
    paths: &[String],
    options: ValidateOptions,
    definitions: &Catalog,
) -> Result<Vec<Value>, Refused> {
    if paths.is_empty() {
        return Err(Refused::NoInput);
    }
    configure_workers(None);
    let inputs: Vec<Input> = paths.iter().map(|p| Input::parse(p)).collect();
    let (objects, report) = load_set_with(inputs, SetOptions::keep(options), definitions);
    let errors = report.error_count();
    print_problems(&report.problems_without_secret_values());
    if let Some(line) = report.summary().error_line(errors) {
        eprintln!("{line}");
    }
    if report.unreadable() {
        return Err(Refused::Unreadable);
    }
    if errors > 0 {
        return Err(Refused::Invalid);
    }
    Ok(Loaded::to_send(objects))
}
