//! `berth delete`: objects named in manifest files (read by the one manifest loader), by
//! type and name, by label selector or `--all`, with kubectl's cascade and grace-period
//! options; `--wait` returns once the objects are gone.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::get::{parse_requests, resolve};
use super::request::{CliError, EXIT_FAILED, Session, namespace_or_default, with_query};
use crate::client::ClientOptions;
use crate::client::discovery::{ServedResource, ServedResources};
use crate::manifest::diagnostic::render_human;
use crate::manifest::{Input, LoadOptions, SetOptions, load_set};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cascade {
    /// Delete the object now; the garbage collector deletes its dependents after
    Background,
    /// Delete the dependents first, then the object
    Foreground,
    /// Delete the object and leave its dependents
    Orphan,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// TYPE [NAME...] or TYPE/NAME...
    #[arg(value_name = "TYPE[/NAME]")]
    resources: Vec<String>,
    /// Delete the objects these manifest files or folders declare (`-` reads stdin)
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    filenames: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Delete the objects matching this label selector
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Delete every object of the type in the namespace
    #[arg(long)]
    all: bool,
    /// What happens to the objects this one owns
    #[arg(long, value_enum, default_value_t = Cascade::Background)]
    cascade: Cascade,
    /// Seconds the object gets to stop (default: its own setting)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    grace_period: Option<i64>,
    /// Wait until the objects are gone
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// An object that does not exist is not an error
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// One object to delete.
#[derive(Debug, Clone)]
struct Doomed {
    resource: ServedResource,
    namespace: Option<String>,
    name: String,
}

pub fn run(args: DeleteArgs) -> u8 {
    super::request::run(delete(args))
}

async fn delete(args: DeleteArgs) -> Result<u8, CliError> {
    if args.filenames.is_empty() == args.resources.is_empty() {
        return Err(CliError::Usage(
            "name what to delete: -f PATH, or TYPE NAME..., or TYPE with -l SELECTOR or --all \
             (not both -f and a type)"
                .into(),
        ));
    }
    // Files are read and parsed before anything is sent, so a typo deletes nothing.
    let manifests = if args.filenames.is_empty() {
        Vec::new()
    } else {
        match read_manifests(&args.filenames) {
            Ok(objects) => objects,
            Err(code) => return Ok(code),
        }
    };
    let session = Session::connect(&args.client).await?;
    let served = session.discover().await?;
    let namespace = namespace_or_default(&args.namespace, &session.conn);
    let mut failures = Vec::new();
    let doomed = if args.filenames.is_empty() {
        by_name(&session, &served, &args, &namespace, &mut failures).await?
    } else {
        from_manifests(&served, &manifests, &namespace)?
    };
    let mut options = json!({
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": match args.cascade {
            Cascade::Background => "Background",
            Cascade::Foreground => "Foreground",
            Cascade::Orphan => "Orphan",
        },
    });
    if let Some(seconds) = args.grace_period.filter(|s| *s >= 0) {
        options["gracePeriodSeconds"] = json!(seconds);
    }
    let mut deleted = Vec::new();
    for d in doomed {
        let path = d.resource.path(d.namespace.as_deref(), Some(&d.name));
        match session.delete(&path, &options).await {
            Ok(_) => {
                println!("{} \"{}\" deleted", d.resource.qualified_singular(), d.name);
                deleted.push((path, d));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) if e.is_not_found() => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    if args.wait {
        wait_gone(&session, &deleted, Duration::from_secs(args.timeout)).await?;
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    Ok(if failures.is_empty() { 0 } else { EXIT_FAILED })
}

/// Loads the files with the manifest loader (parsed, not validated: a manifest a newer
/// schema would refuse can still be deleted); on any error reports every problem and gives
/// the exit code.
fn read_manifests(paths: &[String]) -> Result<Vec<Value>, u8> {
    let inputs: Vec<Input> = paths.iter().map(|p| Input::parse(p)).collect();
    let options = SetOptions {
        load: LoadOptions::default(),
        validate: None,
        keep_objects: true,
    };
    let (objects, report) = load_set(inputs, options);
    if report.error_count() > 0 {
        let problems: Vec<_> = report.problems().cloned().collect();
        eprintln!("error: nothing was deleted: the manifests cannot be read\n");
        eprint!("{}", render_human(&problems, false));
        return Err(super::EXIT_ERROR);
    }
    Ok(objects.into_iter().map(|o| o.value).collect())
}

fn from_manifests(
    served: &ServedResources,
    objects: &[Value],
    namespace: &str,
) -> Result<Vec<Doomed>, CliError> {
    let mut out = Vec::new();
    for o in objects {
        let text = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind, name) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let resource = served.by_kind(api_version, kind).ok_or_else(|| {
            CliError::Usage(format!(
                "the server does not serve {kind} in {api_version} (object {name:?})"
            ))
        })?;
        if name.is_empty() {
            return Err(CliError::Usage(format!(
                "a {kind} in the manifests has no metadata.name; cannot delete it by name"
            )));
        }
        let ns = match text("/metadata/namespace") {
            "" => namespace,
            ns => ns,
        };
        out.push(Doomed {
            resource: resource.clone(),
            namespace: resource.namespaced.then(|| ns.to_string()),
            name: name.to_string(),
        });
    }
    Ok(out)
}

async fn by_name(
    session: &Session,
    served: &ServedResources,
    args: &DeleteArgs,
    namespace: &str,
    failures: &mut Vec<CliError>,
) -> Result<Vec<Doomed>, CliError> {
    let requests = parse_requests(&args.resources).map_err(CliError::Usage)?;
    let targets = resolve(served, &requests)?;
    let mut out = Vec::new();
    for (resource, names) in targets {
        let ns = resource.namespaced.then(|| namespace.to_string());
        if names.is_empty() {
            if args.selector.is_none() && !args.all {
                return Err(CliError::Usage(format!(
                    "no name given for {}: name the objects, or pass -l SELECTOR or --all",
                    resource.plural
                )));
            }
            let path = with_query(
                &resource.path(ns.as_deref(), None),
                &[("labelSelector", args.selector.as_deref().unwrap_or(""))],
            );
            let list = session.get(&path, false).await?;
            for item in list["items"].as_array().into_iter().flatten() {
                if let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) {
                    out.push(Doomed {
                        resource: resource.clone(),
                        namespace: ns.clone(),
                        name: name.to_string(),
                    });
                }
            }
            if out.is_empty() && failures.is_empty() {
                eprintln!("No resources found");
            }
        } else if args.selector.is_some() || args.all {
            failures.push(CliError::Usage(
                "names cannot be combined with -l or --all".into(),
            ));
        } else {
            out.extend(names.into_iter().map(|name| Doomed {
                resource: resource.clone(),
                namespace: ns.clone(),
                name,
            }));
        }
    }
    Ok(out)
}

/// Polls until every deleted object is gone, backing off from 100 ms to 1 s.
async fn wait_gone(
    session: &Session,
    deleted: &[(String, Doomed)],
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (path, d) in deleted {
        let mut delay = Duration::from_millis(100);
        loop {
            match session.get(path, false).await {
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e),
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(CliError::Failed(format!(
                        "timed out after {}s waiting for {} \"{}\" to be gone \
                         (finalizers may be holding it: see `berth get {} {} -o yaml`)",
                        timeout.as_secs(),
                        d.resource.qualified_singular(),
                        d.name,
                        d.resource.plural,
                        d.name,
                    )));
                }
                Ok(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    Ok(())
}
