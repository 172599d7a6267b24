//! `berth diff`: what would change, object by object. Offline between two git revisions
//! (`--git-base`), against a live cluster (`-f`, which needs the API server), or a GitSource's
//! drift (`--source`: the live objects against its last applied commit). Exit codes as
//! kubectl diff: 0 no differences, 1 differences, 2 an error or invalid manifests.

mod cluster;
mod git;
mod source;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::manifests::print_problems;
use crate::diff::render::summary_line;
use crate::diff::{ApplyPlan, Format, PlanOptions, RenderOptions, plan, render};
use crate::manifest::set::configure_workers;
use crate::manifest::{Input, Problem, SetOptions, ValidateOptions, load_set};

use git::RepoManifests;

/// No differences.
const EXIT_SAME: u8 = 0;
/// Differences found.
const EXIT_DIFFERENT: u8 = 1;
/// An error, or invalid manifests.
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Unified diffs of YAML, as kubectl diff prints them
    Text,
    /// A pull-request comment: summary table and one collapsible diff per object
    Markdown,
    /// One JSON document for machines
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Folder or file of the repository to compare with --git-base (default: the current
    /// directory)
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// Manifests to compare with the live cluster, as kubectl diff -f
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    filenames: Vec<String>,
    /// A folder holding a kustomization, rendered and compared with the live cluster
    /// (kubectl diff -k)
    #[arg(
        short = 'k',
        long = "kustomize",
        value_name = "DIR",
        conflicts_with = "git_base"
    )]
    kustomize: Vec<String>,
    /// Compare the manifests at this git revision (the old side) ...
    #[arg(long, value_name = "REV")]
    git_base: Option<String>,
    /// ... with those at this revision (the new side). Default: the working tree
    #[arg(long, value_name = "REV", requires = "git_base")]
    git_head: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Colour the text diff
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    color: ColorWhen,
    /// Namespace of namespaced objects that name none (default: `default` offline, the
    /// kubeconfig context's with -f)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// With -f: also list the members of the ApplySet that `berth apply --prune` would delete
    #[arg(long)]
    prune: bool,
    /// The drift of this GitSource: its live objects against its last applied commit (what a
    /// sync or selfHeal would change)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["git_base", "filenames", "path", "prune"])]
    source: Option<String>,
    /// With -f: the ApplySet `berth apply` would use (see `berth apply --help`)
    #[arg(long, value_name = "NAME", default_value = super::apply::DEFAULT_APPLYSET)]
    applyset: String,
    #[command(flatten)]
    client: crate::client::ClientOptions,
    /// Largest markdown output in bytes (GitHub comments stop at 65,536); 0: no limit
    #[arg(long, default_value_t = 65_000, value_name = "BYTES")]
    markdown_limit: usize,
    /// Skip kinds berth does not know (custom resources) in validation, with a warning
    #[arg(long)]
    ignore_unknown_kinds: bool,
}

pub fn run(args: DiffArgs) -> u8 {
    configure_workers(None);
    if let Some(source) = &args.source {
        return source::run(&args, source);
    }
    match (
        &args.git_base,
        args.filenames.is_empty() && args.kustomize.is_empty(),
    ) {
        (Some(_), false) => {
            eprintln!("error: use either --git-base (offline) or -f (against a cluster), not both");
            EXIT_ERROR
        }
        (None, false) => cluster::run(&args),
        (None, true) => {
            eprintln!(
                "error: nothing to compare\n\nUsage: berth diff --git-base REV [--git-head REV] [PATH]\n       berth diff -f PATH\n       berth diff --source NAME"
            );
            EXIT_ERROR
        }
        (Some(base), true) => run_git(&args, base),
    }
}

/// A full commit id is shortened in labels; anything else is shown as the user typed it.
fn label(rev: &str) -> String {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        rev[..12].to_string()
    } else {
        rev.to_string()
    }
}

/// Loads and validates one side. `Err` holds every problem, Secret values left out, when any
/// is an error.
fn load_side(files: Vec<Input>, options: ValidateOptions) -> Result<Vec<Value>, Vec<Problem>> {
    let (objects, report) = load_set(files, SetOptions::keep(options));
    if report.error_count() > 0 {
        return Err(report.problems_without_secret_values());
    }
    Ok(objects.into_iter().map(|o| o.value).collect())
}

fn run_git(args: &DiffArgs, base: &str) -> u8 {
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            eprintln!("error: cannot read the current directory: {e}");
            return EXIT_ERROR;
        }
    };
    let path = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    let repo = match RepoManifests::open(&cwd, &path) {
        Ok(repo) => repo,
        Err(e) => return report(&e),
    };
    let base_files = match repo.at_revision(base) {
        Ok(files) => files,
        Err(e) => return report(&e),
    };
    // Without --git-head the new side is the working tree, what `git diff REV` compares
    // with: a developer sees uncommitted edits, and in CI the checkout is the PR head anyway.
    let (head_label, head_files) = match &args.git_head {
        Some(head) => (label(head), repo.at_revision(head)),
        None => ("working-tree".to_string(), repo.working_tree()),
    };
    let head_files = match head_files {
        Ok(files) => files,
        Err(e) => return report(&e),
    };
    if base_files.is_none() && head_files.is_none() {
        eprintln!(
            "error: {} exists neither at {base} nor in {head_label}",
            repo.prefix()
        );
        return EXIT_ERROR;
    }
    let options = ValidateOptions {
        strict: true,
        ignore_unknown_kinds: args.ignore_unknown_kinds,
    };
    let sides = [
        (label(base), base_files.unwrap_or_default()),
        (head_label.clone(), head_files.unwrap_or_default()),
    ];
    let mut loaded = Vec::new();
    let mut invalid = false;
    for (side_label, files) in sides {
        match load_side(files, options) {
            Ok(objects) => loaded.push(objects),
            Err(problems) => {
                invalid = true;
                eprintln!("error: the manifests at {side_label} are invalid:\n");
                print_problems(&problems);
                loaded.push(Vec::new());
            }
        }
    }
    if invalid {
        return EXIT_ERROR;
    }
    let plan_options = PlanOptions {
        default_namespace: args.namespace.clone().unwrap_or_else(|| "default".into()),
        prune: true,
    };
    let plan = match plan(&loaded[1], &loaded[0], &plan_options) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    print_plan(args, &plan, label(base), head_label)
}

/// Renders a plan on stdout (the one-line summary on stderr for text) and returns the exit
/// code. Shared by both modes: the cluster mode will call it with `live` / `merged` labels.
fn print_plan(args: &DiffArgs, plan: &ApplyPlan, old_label: String, new_label: String) -> u8 {
    let render_options = RenderOptions {
        old_label,
        new_label,
        color: match args.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        },
        markdown_limit: (args.markdown_limit > 0).then_some(args.markdown_limit),
        ..RenderOptions::default()
    };
    let format = match args.format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Markdown => Format::Markdown,
        OutputFormat::Json => Format::Json,
    };
    let text = render(plan, format, &render_options);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return EXIT_ERROR;
    }
    if format == Format::Text {
        eprintln!("{}", summary_line(plan));
    }
    if plan.has_changes() {
        EXIT_DIFFERENT
    } else {
        EXIT_SAME
    }
}

/// Runs `body` on a connection to the cluster, with the namespace to use (`-n`, or the
/// kubeconfig context's); returns its exit code. Shared by `-f` and `--source`.
fn on_cluster<F, Fut>(args: &DiffArgs, body: F) -> u8
where
    F: FnOnce(crate::client::Connection, String) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    runtime.block_on(async {
        let connection = match args.client.connect().await {
            Ok(c) => c,
            Err(e) => return crate::cli::apply::report_client_error(&e).max(EXIT_ERROR),
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or(connection.default_namespace.clone());
        body(connection, namespace).await
    })
}

/// Prints an error with its causes on one line each.
fn report(error: &dyn std::error::Error) -> u8 {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    EXIT_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_commit_ids_are_shortened_in_labels() {
        assert_eq!(
            label("0123456789abcdef0123456789abcdef01234567"),
            "0123456789ab"
        );
        assert_eq!(label("origin/main"), "origin/main");
    }
}
