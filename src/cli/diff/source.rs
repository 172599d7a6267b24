//! `berth diff --source NAME`: a GitSource's drift, what its live objects differ from what its
//! last applied commit declares. The server dry-runs that commit's objects as git sync does
//! when it looks for drift (autoscaled replica counts are not drift); the pair is planned and
//! rendered as `berth diff -f` does, `live` against `git-<commit>`, Secret data masked.

use serde_json::Value;

use super::cluster::print_dry_run;
use super::{DiffArgs, EXIT_ERROR, label, on_cluster};
use crate::apply::drift::{self, SourceDrift};

pub(super) fn run(args: &DiffArgs, name: &str) -> u8 {
    on_cluster(args, |connection, namespace| async move {
        let drift = match fetch(&connection.client, &namespace, name).await {
            Ok(d) => d,
            Err(message) => {
                eprintln!("error: {message}");
                return EXIT_ERROR;
            }
        };
        let new_label = format!("git-{}", label(&drift.commit));
        print_dry_run(args, drift.results, namespace, new_label)
    })
}

/// Asks the server for the source's drift; `Err` is the line to print.
async fn fetch(client: &kube::Client, namespace: &str, name: &str) -> Result<SourceDrift, String> {
    let request = http::Request::get(drift::path(namespace, name))
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::empty())
        .expect("a valid request");
    let response = client
        .send(request)
        .await
        .map_err(|e| format!("cannot reach the API server: {e}"))?;
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("cannot read the API server's answer: {e}"))?;
    if (200..300).contains(&code) {
        return serde_json::from_slice(&bytes)
            .map_err(|e| format!("the API server sent an answer that is not a drift report: {e}"));
    }
    let status: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Err(match (code, status["message"].as_str()) {
        (404, Some(m)) if m.ends_with(&format!("\"{name}\" not found")) => {
            format!("gitsource {namespace}/{name} does not exist")
        }
        (409, Some(m)) => m
            .split_once(": ")
            .map(|(_, why)| format!("gitsource {namespace}/{name}: {why}"))
            .unwrap_or_else(|| m.to_string()),
        (_, Some(m)) => m.to_string(),
        (404, None) => "the API server has no drift endpoint (is it a berth server?)".into(),
        (_, None) => format!("HTTP {code}: {}", String::from_utf8_lossy(&bytes).trim()),
    })
}
