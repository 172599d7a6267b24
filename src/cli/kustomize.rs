//! `berth kustomize DIR`: the objects a kustomization renders to, printed as `kubectl
//! kustomize DIR` prints them (YAML documents separated by `---`), for debugging an overlay.

use clap::Args;

use crate::diff::yaml::to_yaml;
use crate::manifest::kustomize::{Disk, render};

#[derive(Debug, Args)]
pub struct KustomizeArgs {
    /// The folder holding kustomization.yaml (default: the current folder)
    #[arg(value_name = "DIR", default_value = ".")]
    dir: String,
}

pub fn run(args: KustomizeArgs) -> u8 {
    match render(&Disk, &args.dir) {
        Ok(objects) => {
            let docs: Vec<String> = objects.iter().map(|o| to_yaml(&o.value)).collect();
            print!("{}", docs.join("---\n"));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_INVALID
        }
    }
}
