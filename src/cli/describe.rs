//! `berth describe`: one page per object, as kubectl describe prints it — metadata, what
//! matters for its kind, conditions, and the Events whose `involvedObject` is the object.
//! Secret values are never printed, only their sizes.

mod config;
mod doc;
mod page;

use clap::Args;
use serde_json::Value;

use super::get::{parse_requests, resolve};
use super::request::{CliError, EXIT_FAILED, Session, namespace_or_default, with_query};
use crate::client::ClientOptions;
use crate::client::discovery::ServedResource;

pub use page::describe as describe_page;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// TYPE [NAME...] or TYPE/NAME... (without a name: every object of the type)
    #[arg(value_name = "TYPE[/NAME]", required = true)]
    resources: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Describe the objects matching this label selector
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    #[command(flatten)]
    client: ClientOptions,
}

pub fn run(args: DescribeArgs) -> u8 {
    super::request::run(describe(args))
}

async fn describe(args: DescribeArgs) -> Result<u8, CliError> {
    let requests = parse_requests(&args.resources).map_err(CliError::Usage)?;
    let session = Session::connect(&args.client).await?;
    let served = session.discover().await?;
    let targets = resolve(&served, &requests)?;
    let namespace = namespace_or_default(&args.namespace, &session.conn);
    let mut pages = Vec::new();
    let mut failures = Vec::new();
    for (resource, names) in &targets {
        let mut objects = Vec::new();
        if names.is_empty() {
            let path = with_query(
                &resource.path(Some(&namespace), None),
                &[("labelSelector", args.selector.as_deref().unwrap_or(""))],
            );
            let list = session.get(&path, false).await?;
            objects.extend(super::output::list_items(
                &list,
                &resource.api_version(),
                &resource.kind,
            ));
        }
        for name in names {
            match session
                .get(&resource.path(Some(&namespace), Some(name)), false)
                .await
            {
                Ok(object) => objects.push(object),
                Err(e) if e.is_not_found() => failures.push(e),
                Err(e) => return Err(e),
            }
        }
        for object in objects {
            let events = events_of(&session, resource, &object).await?;
            pages.push(describe_page(&object, &events, chrono::Utc::now()));
        }
    }
    print!("{}", pages.join("\n\n"));
    if pages.is_empty() && failures.is_empty() {
        eprintln!("No resources found in {namespace} namespace.");
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    Ok(if failures.is_empty() { 0 } else { EXIT_FAILED })
}

/// The Events about one object, found by `involvedObject` field selectors.
async fn events_of(
    session: &Session,
    resource: &ServedResource,
    object: &Value,
) -> Result<Vec<Value>, CliError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let mut selector = format!(
        "involvedObject.name={name},involvedObject.kind={}",
        resource.kind
    );
    if let Some(ns) = namespace {
        selector.push_str(&format!(",involvedObject.namespace={ns}"));
    }
    let path = match namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
        None => "/api/v1/events".to_string(),
    };
    let list = session
        .get(&with_query(&path, &[("fieldSelector", &selector)]), false)
        .await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}
