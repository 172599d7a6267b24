//! `berth version`: this client's version and the API server's `/version`, as text or, with
//! `-o json|yaml`, in kubectl's `clientVersion` / `serverVersion` shape.

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::request::{CliError, Session};
use crate::client::ClientOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VersionFormat {
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only this client's version; the server is not asked
    #[arg(long)]
    client: bool,
    /// Output format (default: two lines of text)
    #[arg(short = 'o', long, value_enum)]
    output: Option<VersionFormat>,
    #[command(flatten)]
    connection: ClientOptions,
}

/// The client's version document.
pub fn client_version() -> Value {
    json!({
        "gitVersion": format!("v{}", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn run(args: VersionArgs) -> u8 {
    super::request::run(version(args))
}

async fn version(args: VersionArgs) -> Result<u8, CliError> {
    let client = client_version();
    let server = if args.client {
        None
    } else {
        let session = Session::connect(&args.connection).await;
        match session {
            Ok(session) => Some(session.get("/version", false).await),
            Err(e) => Some(Err(e)),
        }
    };
    let mut doc = json!({"clientVersion": client});
    if let Some(Ok(server)) = &server {
        doc["serverVersion"] = server.clone();
    }
    match args.output {
        Some(VersionFormat::Json) => {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Some(VersionFormat::Yaml) => print!("{}", crate::diff::yaml::to_yaml(&doc)),
        None => {
            println!(
                "Client Version: {}",
                client["gitVersion"].as_str().unwrap_or("")
            );
            if let Some(Ok(server)) = &server {
                println!(
                    "Server Version: {}",
                    server["gitVersion"].as_str().unwrap_or("<unknown>")
                );
            }
        }
    }
    match server {
        Some(Err(e)) => Err(e),
        _ => Ok(0),
    }
}
