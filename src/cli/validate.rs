//! `berth validate`: check manifests, report every problem, exit 0 / 1 / 2.

use std::io::{IsTerminal, Write};

use clap::{Args, ValueEnum};

use crate::manifest::check::check_inputs;
use crate::manifest::diagnostic::{self, Case, Summary};
use crate::manifest::validate::Verdict;
use crate::manifest::yaml::Limits;
use crate::manifest::{Input, LoadOptions, Problem, Severity, ValidateOptions};

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
    /// Skip kinds berth does not know (custom resources) with a warning
    #[arg(long)]
    ignore_unknown_kinds: bool,
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

/// `3 errors in 2 of 5 resources[ and 1 of 4 files]`, or `None` without errors.
pub(super) fn error_line(errors: usize, summary: &Summary) -> Option<String> {
    if errors == 0 {
        return None;
    }
    let mut line = format!(
        "{errors} error{} in {} of {} resources",
        if errors == 1 { "" } else { "s" },
        summary.invalid,
        summary.resources,
    );
    if summary.errors > 0 {
        line.push_str(&format!(
            " and {} of {} files",
            summary.errors, summary.files
        ));
    }
    Some(line)
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
    if let Some(jobs) = args.jobs {
        // Worker threads get room for deeply nested (but within limits) documents.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .stack_size(8 * 1024 * 1024)
            .build_global();
    } else {
        let _ = rayon::ThreadPoolBuilder::new()
            .stack_size(8 * 1024 * 1024)
            .build_global();
    }
    let options = ValidateOptions {
        strict: !args.no_strict,
        ignore_unknown_kinds: args.ignore_unknown_kinds,
    };
    let load_options = LoadOptions {
        limits: Limits {
            max_document_bytes: args.max_document_bytes,
            ..Limits::default()
        },
    };
    let reports = check_inputs(&inputs, load_options, options);

    let mut summary = Summary::default();
    let mut io_error = false;
    // Problems in input order: a file's own problems, then each object's.
    let mut problems: Vec<Problem> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    for report in reports {
        if report.file.is_some() {
            summary.files += 1;
        }
        io_error |= report.file_problems.iter().any(|p| p.rule == "io");
        if !report.file_problems.is_empty() {
            summary.errors += 1;
            cases.push(Case {
                file: report.path.clone(),
                name: report.path.clone(),
                problems: report.file_problems.clone(),
                skipped: false,
            });
            problems.extend(report.file_problems);
        }
        for object in report.objects {
            summary.resources += 1;
            match object.verdict {
                Verdict::Valid => summary.valid += 1,
                Verdict::Invalid => summary.invalid += 1,
                Verdict::Skipped => summary.skipped += 1,
            }
            problems.extend(object.problems.iter().cloned());
            cases.push(Case {
                file: report.path.clone(),
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
            if let Some(line) = error_line(errors, &summary) {
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
