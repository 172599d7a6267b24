//! `berth apply -f PATH...`: validate every manifest, then apply the whole set in one
//! transaction through the API server's batch endpoint (server-side apply as field manager
//! `berth`, ApplySet membership, optional prune behind the mass-delete guard), and print one
//! line per object and a summary. Nothing is applied unless everything can be.

use std::collections::BTreeMap;

use clap::Args;

use super::manifests::{Refused, load_valid_with};
use crate::apply::batch::{BatchRequest, BatchResponse, FIELD_MANAGER, Outcome};
use crate::apply::client::{BatchClientError, send};
use crate::client::ClientOptions;
use crate::manifest::ValidateOptions;

/// The ApplySet name when `--applyset` is not given.
pub const DEFAULT_APPLYSET: &str = "berth";

/// Exit code when something was refused (invalid manifests, conflicts, the prune guard).
const EXIT_REFUSED: u8 = super::EXIT_INVALID;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files or folders of manifests (folders recursively; a folder holding a kustomization is
    /// rendered); `-` reads stdin
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "kustomize"
    )]
    pub filenames: Vec<String>,
    /// A folder holding a kustomization, rendered and applied (kubectl's -k)
    #[arg(short = 'k', long = "kustomize", value_name = "DIR")]
    pub kustomize: Vec<String>,
    /// Delete the members of the ApplySet that are no longer in the manifests
    #[arg(long)]
    pub prune: bool,
    /// Let --prune delete every member of the set, or more than half of them
    #[arg(long, requires = "prune")]
    pub prune_allow_mass_delete: bool,
    /// Show what would happen; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take over fields that other field managers own instead of failing
    #[arg(long)]
    pub force_conflicts: bool,
    /// Name of the ApplySet (its parent is the Secret NAME in the namespace): objects applied
    /// under one name form one set, which --prune keeps in step with the manifests
    #[arg(long, value_name = "NAME", default_value = DEFAULT_APPLYSET)]
    pub applyset: String,
    /// Namespace of namespaced objects that name none, and of the ApplySet's parent
    /// (default: the kubeconfig context's)
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Skip kinds berth does not know (custom resources) in validation, with a warning
    #[arg(long)]
    pub ignore_unknown_kinds: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Exit code of a refusal before anything was sent.
pub(super) fn refused_code(refused: Refused) -> u8 {
    match refused {
        Refused::NoInput => {
            eprintln!("error: no manifests given (use -f PATH)");
            super::EXIT_ERROR
        }
        Refused::Unreadable => super::EXIT_ERROR,
        Refused::Invalid => {
            eprintln!("error: nothing was applied: the manifests are invalid");
            EXIT_REFUSED
        }
    }
}

/// Prints why the server refused a batch; returns the exit code.
pub(super) fn report_batch_error(e: &BatchClientError, dry_run: bool) -> u8 {
    match e {
        BatchClientError::Rejected {
            message, causes, ..
        } => {
            let what = if dry_run {
                "the dry run failed"
            } else {
                "nothing was applied"
            };
            eprintln!("error: {what}: {message}");
            for cause in causes {
                eprintln!("  - {cause}");
            }
            EXIT_REFUSED
        }
        other => {
            eprintln!("error: {other}");
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            super::EXIT_ERROR
        }
    }
}

/// One line per object, then `2 created, 1 configured, 3 unchanged, 1 pruned`.
pub fn summary_text(response: &BatchResponse) -> String {
    let suffix = if response.dry_run { " (dry run)" } else { "" };
    let mut out = String::new();
    let mut counts: BTreeMap<Outcome, usize> = BTreeMap::new();
    for r in &response.results {
        out.push_str(&format!(
            "{} {}{suffix}\n",
            r.display_name(),
            r.outcome.as_str()
        ));
        *counts.entry(r.outcome).or_default() += 1;
    }
    let parts: Vec<String> = [
        Outcome::Created,
        Outcome::Configured,
        Outcome::Unchanged,
        Outcome::Pruned,
    ]
    .iter()
    .map(|o| format!("{} {}", counts.get(o).copied().unwrap_or(0), o.as_str()))
    .collect();
    out.push_str(&format!("{}{suffix}\n", parts.join(", ")));
    out
}

pub fn run(args: ApplyArgs) -> u8 {
    let options = ValidateOptions {
        strict: true,
        ignore_unknown_kinds: args.ignore_unknown_kinds,
    };
    let Some(paths) = super::manifests::with_kustomizations(&args.filenames, &args.kustomize)
    else {
        return super::EXIT_ERROR;
    };
    let Some(runtime) = super::single_thread_runtime() else {
        return super::EXIT_ERROR;
    };
    let served = runtime.block_on(crate::client::crds::served_definitions(&args.client));
    let objects = match load_valid_with(&paths, options, &served) {
        Ok(objects) => objects,
        Err(refused) => return refused_code(refused),
    };
    runtime.block_on(async {
        let connection = match args.client.connect().await {
            Ok(c) => c,
            Err(e) => return report_client_error(&e),
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or(connection.default_namespace.clone());
        let request = BatchRequest {
            objects,
            prune: args.prune,
            allow_mass_delete: args.prune_allow_mass_delete,
            dry_run: args.dry_run,
            force: args.force_conflicts,
            field_manager: Some(FIELD_MANAGER.into()),
            delta: None,
        };
        match send(&connection.client, &namespace, &args.applyset, &request).await {
            Ok(response) => {
                print!("{}", summary_text(&response));
                0
            }
            Err(e) => report_batch_error(&e, args.dry_run),
        }
    })
}

/// Prints a connection setup error with its causes; returns the exit code.
pub(super) fn report_client_error(e: &crate::client::ClientError) -> u8 {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    super::EXIT_ERROR
}
