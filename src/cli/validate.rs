//! `berth validate`: check manifests, report every problem, exit 0 / 1 / 2.

use std::io::{IsTerminal, Write};

use clap::{Args, ValueEnum};

use crate::manifest::crd::Catalog;
use crate::manifest::diagnostic::{self, Case};
use crate::manifest::set::configure_workers;
use crate::manifest::set::{load_definitions, load_set_with};
use crate::manifest::validate::Verdict;
use crate::manifest::yaml::Limits;
use crate::manifest::{Input, LoadOptions, Problem, SetOptions, Severity, ValidateOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Junit,
    Github,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or folders to check (folders recursively); `-` reads stdin
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
    /// Files or folders to check, as with kubectl's -f
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    filenames: Vec<String>,
    /// Unknown fields and duplicate keys are errors (the default)
    #[arg(long, overrides_with = "no_strict")]
    strict: bool,
    /// Allow unknown fields and duplicate keys
    #[arg(long = "no-strict")]
    no_strict: bool,
    /// Skip kinds berth does not know (custom resources with no CustomResourceDefinition in the
    /// set or in --crds) with a warning
    #[arg(long)]
    ignore_unknown_kinds: bool,
    /// Warn (exit code unchanged) about built-in kinds a berth cluster stores and serves but
    /// does not act on (an Ingress, a NetworkPolicy: see README's "served / acted on")
    #[arg(long)]
    warn_unacted: bool,
    /// Also check custom resources against the CustomResourceDefinitions in this file or folder
    /// (repeatable); those in the checked set itself are always used
    #[arg(long = "crds", value_name = "PATH")]
    crds: Vec<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Print a summary line: resources, files, valid, invalid, errors, skipped
    #[arg(long)]
    summary: bool,
    /// Largest YAML document accepted, in bytes
    #[arg(long, default_value_t = 3 * 1024 * 1024, value_name = "BYTES")]
    max_document_bytes: usize,
    /// Worker threads (default: one per core)
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
}

/// Warns about each object of a built-in kind nothing in a berth cluster acts on.
fn warn_unacted(report: &mut crate::manifest::SetReport) {
    for object in report.files.iter_mut().flat_map(|f| f.objects.iter_mut()) {
        let Some((group, kind, _, _)) = object.identity.clone() else {
            continue;
        };
        let built_in = crate::manifest::kinds::KINDS
            .iter()
            .any(|k| k.group() == group && k.kind == kind);
        if object.verdict == Verdict::Skipped
            || !built_in
            || crate::cluster::acted::acted_on(&group, &kind).is_some()
        {
            continue;
        }
        object.warn(
            "stored-not-acted-on",
            format!("berth stores and serves {kind} objects, but nothing in berth acts on them"),
            Some(
                "the object is kept and shown as written, with no effect on what runs; README's table \"served / acted on\" lists what berth acts on".into(),
            ),
        );
    }
}

pub fn run(args: ValidateArgs) -> u8 {
    let inputs: Vec<Input> = args
        .paths
        .iter()
        .chain(args.filenames.iter())
        .map(|p| Input::parse(p))
        .collect();
    if inputs.is_empty() {
        eprintln!("error: no manifests given\n\nUsage: berth validate PATH... (use - for stdin)");
        return super::EXIT_ERROR;
    }
    configure_workers(args.jobs);
    let options = SetOptions {
        load: LoadOptions {
            limits: Limits {
                max_document_bytes: args.max_document_bytes,
                ..Limits::default()
            },
        },
        validate: Some(ValidateOptions {
            strict: !args.no_strict,
            ignore_unknown_kinds: args.ignore_unknown_kinds,
        }),
        keep_objects: false,
    };
    let (definitions, definition_problems) = if args.crds.is_empty() {
        (Catalog::default(), Vec::new())
    } else {
        load_definitions(args.crds.iter().map(|p| Input::parse(p)).collect())
    };
    let (_, mut report) = load_set_with(inputs, options, &definitions);
    if args.warn_unacted {
        warn_unacted(&mut report);
    }
    let mut summary = report.summary();
    let io_error = report.unreadable() || definition_problems.iter().any(|p| p.rule == "io");
    // The definitions' own problems come first: a wrong CRD explains wrong resources.
    let mut bad_definition_files: Vec<&str> = definition_problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.path.as_str())
        .collect();
    bad_definition_files.dedup();
    summary.errors += bad_definition_files.len();
    let problems: Vec<Problem> = definition_problems
        .iter()
        .cloned()
        .chain(report.problems().cloned())
        .collect();
    // One JUnit case per unreadable or unparsable file, and one per object.
    let mut cases: Vec<Case> = Vec::new();
    if !definition_problems.is_empty() {
        cases.push(Case {
            file: args.crds.join(","),
            name: format!("--crds {}", args.crds.join(",")),
            problems: definition_problems,
            skipped: false,
        });
    }
    for file in report.files {
        if !file.file_problems.is_empty() {
            cases.push(Case {
                file: file.path.clone(),
                name: file.path.clone(),
                problems: file.file_problems,
                skipped: false,
            });
        }
        for object in file.objects {
            cases.push(Case {
                file: file.path.clone(),
                name: object.describe,
                problems: object.problems,
                skipped: object.verdict == Verdict::Skipped,
            });
        }
    }

    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = match args.output {
        Format::Human => {
            let mut text = diagnostic::render_human(&problems, color);
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            if let Some(line) = summary.error_line(errors) {
                text.push_str(&line);
                text.push('\n');
            }
            if args.summary {
                text.push_str(&summary.line());
                text.push('\n');
            }
            text
        }
        Format::Json => diagnostic::render_json(&problems, &summary),
        Format::Junit => diagnostic::render_junit(&cases),
        Format::Github => {
            let mut text = diagnostic::render_github(&problems);
            if args.summary {
                text.push_str(&summary.line());
                text.push('\n');
            }
            text
        }
    };
    let mut lock = stdout.lock();
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();

    if io_error {
        super::EXIT_ERROR
    } else if summary.invalid > 0 || summary.errors > 0 {
        super::EXIT_INVALID
    } else {
        0
    }
}
