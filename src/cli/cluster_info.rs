//! `berth cluster-info`: where the control plane is and whether it is healthy (`/readyz`),
//! with the server's version.

use clap::Args;

use super::request::{CliError, EXIT_FAILED, Session};
use crate::client::ClientOptions;

#[derive(Debug, Args)]
pub struct ClusterInfoArgs {
    #[command(flatten)]
    client: ClientOptions,
}

pub fn run(args: ClusterInfoArgs) -> u8 {
    super::request::run(cluster_info(args))
}

async fn cluster_info(args: ClusterInfoArgs) -> Result<u8, CliError> {
    let session = Session::connect(&args.client).await?;
    let url = session.conn.server_url.trim_end_matches('/').to_string();
    // `/version` first: it tells an unreachable server from one that is up but unready.
    let version = session.get("/version", false).await?;
    let ready = session.get_text("/readyz").await;
    println!("berth control plane is running at {url}");
    println!(
        "Server version: {}",
        version["gitVersion"].as_str().unwrap_or("<unknown>")
    );
    match ready {
        Ok(body) => {
            println!("Health: {}", body.trim());
            Ok(0)
        }
        Err(e) => {
            println!("Health: not ready");
            eprintln!("{e}");
            Ok(EXIT_FAILED)
        }
    }
}
