//! `berth diff -f PATH...`: what `berth apply` would change in a live cluster. The same batch
//! `berth apply` sends, as a server dry run; the server answers with each object as it is and
//! as it would be (server-side apply, defaults, ApplySet labels), and the diff engine plans
//! and renders the pair with the labels `live` / `merged`. `--prune` adds the members the
//! apply would delete. Secret values are masked by the renderer, in every format.

use serde_json::Value;

use super::{DiffArgs, EXIT_ERROR, on_cluster, print_plan};
use crate::apply::batch::{BatchRequest, FIELD_MANAGER, ObjectResult};
use crate::apply::client::send;
use crate::cli::apply::{refused_code, report_batch_error};
use crate::cli::manifests::{Refused, load_valid_with};
use crate::diff::{PlanOptions, plan};
use crate::manifest::ValidateOptions;

pub(super) fn run(args: &DiffArgs) -> u8 {
    let options = ValidateOptions {
        strict: true,
        ignore_unknown_kinds: args.ignore_unknown_kinds,
    };
    let Some(paths) = crate::cli::manifests::with_kustomizations(&args.filenames, &args.kustomize)
    else {
        return EXIT_ERROR;
    };
    let served = match super::super::single_thread_runtime() {
        Some(runtime) => runtime.block_on(crate::client::crds::served_definitions(&args.client)),
        None => Default::default(),
    };
    let objects = match load_valid_with(&paths, options, &served) {
        Ok(objects) => objects,
        // kubectl diff: anything but "differences" is an exit code above 1.
        Err(Refused::Invalid) => {
            eprintln!("error: the manifests are invalid");
            return EXIT_ERROR;
        }
        Err(refused) => return refused_code(refused).max(EXIT_ERROR),
    };
    on_cluster(args, |connection, namespace| async move {
        let request = BatchRequest {
            objects,
            prune: args.prune,
            // A preview shows what a prune would delete; the guard speaks at apply time.
            allow_mass_delete: true,
            dry_run: true,
            force: false,
            field_manager: Some(FIELD_MANAGER.into()),
            delta: None,
        };
        let response = match send(&connection.client, &namespace, &args.applyset, &request).await {
            Ok(r) => r,
            Err(e) => return report_batch_error(&e, true).max(EXIT_ERROR),
        };
        print_dry_run(args, response.results, namespace, "merged".into())
    })
}

/// Plans and prints a dry run's results, each object as it is (`live`) against as it would be
/// (`new_label`); returns the exit code. `berth diff --source` prints its drift the same way.
pub(super) fn print_dry_run(
    args: &DiffArgs,
    results: Vec<ObjectResult>,
    namespace: String,
    new_label: String,
) -> u8 {
    let mut new: Vec<Value> = Vec::new();
    let mut live: Vec<Value> = Vec::new();
    for result in results {
        new.extend(result.object);
        live.extend(result.live);
    }
    let options = PlanOptions {
        default_namespace: namespace,
        prune: true,
    };
    match plan(&new, &live, &options) {
        Ok(plan) => print_plan(args, &plan, "live".into(), new_label),
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}
