//! `berth diff -f PATH...`: what `berth apply` would change in a live cluster. The same batch
//! `berth apply` sends, as a server dry run; the server answers with each object as it is and
//! as it would be (server-side apply, defaults, ApplySet labels), and the diff engine plans
//! and renders the pair with the labels `live` / `merged`. `--prune` adds the members the
//! apply would delete. Secret values are masked by the renderer, in every format.

use serde_json::Value;

use super::{DiffArgs, EXIT_ERROR, print_plan};
use crate::apply::batch::{BatchRequest, FIELD_MANAGER};
use crate::apply::client::send;
use crate::cli::apply::{refused_code, report_batch_error, report_client_error};
use crate::cli::manifests::{Refused, load_valid};
use crate::diff::{PlanOptions, plan};
use crate::manifest::ValidateOptions;

pub(super) fn run(args: &DiffArgs) -> u8 {
    let options = ValidateOptions {
        strict: true,
        ignore_unknown_kinds: args.ignore_unknown_kinds,
    };
    let objects = match load_valid(&args.filenames, options) {
        Ok(objects) => objects,
        // kubectl diff: anything but "differences" is an exit code above 1.
        Err(Refused::Invalid) => {
            eprintln!("error: the manifests are invalid");
            return EXIT_ERROR;
        }
        Err(refused) => return refused_code(refused).max(EXIT_ERROR),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    runtime.block_on(async {
        let connection = match args.client.connect().await {
            Ok(c) => c,
            Err(e) => return report_client_error(&e).max(EXIT_ERROR),
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or(connection.default_namespace.clone());
        let request = BatchRequest {
            objects,
            prune: args.prune,
            // A preview shows what a prune would delete; the guard speaks at apply time.
            allow_mass_delete: true,
            dry_run: true,
            force: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let response = match send(&connection.client, &namespace, &args.applyset, &request).await {
            Ok(r) => r,
            Err(e) => return report_batch_error(&e, true).max(EXIT_ERROR),
        };
        let mut merged: Vec<Value> = Vec::new();
        let mut live: Vec<Value> = Vec::new();
        for result in response.results {
            merged.extend(result.object);
            live.extend(result.live);
        }
        let options = PlanOptions {
            default_namespace: namespace,
            prune: true,
        };
        match plan(&merged, &live, &options) {
            Ok(plan) => print_plan(args, &plan, "live".into(), "merged".into()),
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_ERROR
            }
        }
    })
}
