//! Checking a whole set of inputs the way `berth validate` does: each file is read, parsed and
//! validated on a worker thread and its objects dropped as soon as they are checked, so
//! memory stays proportional to one file per core, not to the whole input.

use std::sync::Arc;

use rayon::prelude::*;

use super::SourceFile;
use super::diagnostic::Problem;
use super::load::{Input, LoadOptions, expand_inputs, load_bytes, read_input};
use super::validate::{Checked, ValidateOptions, check_object, mark_duplicates};

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

/// Loads and validates every input; reports keep input order.
pub fn check_inputs(
    inputs: &[Input],
    load: LoadOptions,
    options: ValidateOptions,
) -> Vec<FileReport> {
    let (files, expand_problems) = expand_inputs(inputs);
    let mut reports: Vec<FileReport> = files
        .par_iter()
        .map(|input| match read_input(input) {
            Ok((name, bytes)) => {
                let (file, objects, file_problems) = load_bytes(name, bytes, load);
                let objects = objects.iter().map(|o| check_object(o, options)).collect();
                FileReport {
                    path: file.path.clone(),
                    file: Some(file),
                    file_problems,
                    objects,
                }
            }
            Err(error) => FileReport {
                path: error.path.clone(),
                file: None,
                file_problems: vec![error.problem()],
                objects: Vec::new(),
            },
        })
        .collect();
    reports.extend(expand_problems.into_iter().map(|problem| FileReport {
        path: problem.path.clone(),
        file: None,
        file_problems: vec![problem],
        objects: Vec::new(),
    }));
    mark_duplicates(reports.iter_mut().flat_map(|r| r.objects.iter_mut()));
    reports
}
