//! `berth get`: objects as kubectl lists them. Columns come from the server's Tables (one
//! place defines them: `cluster::api::table`); this command picks the resources, asks, and
//! lays the answer out, then with `-w` keeps printing rows as the watch reports changes.

use std::io::Write;

use clap::Args;
use futures::StreamExt;
use kube::core::WatchEvent;
use serde_json::Value;

use super::output::{
    OutputFormat, TableStyle, TextTable, line, list_items, render_objects, render_table,
    text_table, widths,
};
use super::request::{CliError, EXIT_FAILED, Session, namespace_or_default, with_query};
use crate::client::ClientOptions;
use crate::client::discovery::{ServedResource, ServedResources};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// TYPE[,TYPE...] [NAME...], or TYPE/NAME... (short names such as po, deploy, svc work;
    /// `all` is every kind in the `all` category)
    #[arg(value_name = "TYPE[/NAME]", required = true)]
    resources: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`)
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// List across every namespace
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, as `app=web,tier!=db`
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Field selector, as `status.phase=Running`
    #[arg(long, value_name = "SELECTOR")]
    field_selector: Option<String>,
    /// Output format (default: the server's columns)
    #[arg(short = 'o', long, value_enum)]
    output: Option<OutputFormat>,
    /// After listing, keep printing changes until interrupted
    #[arg(short = 'w', long)]
    watch: bool,
    /// Leave out the header line
    #[arg(long)]
    no_headers: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// One resource type the user named, with the names asked for (none: list them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub resource: String,
    pub names: Vec<String>,
}

/// Reads `TYPE[,TYPE] [NAME...]` or `TYPE/NAME...` as kubectl does.
pub fn parse_requests(words: &[String]) -> Result<Vec<Request>, String> {
    if words.iter().any(|w| w.contains('/')) {
        let mut out: Vec<Request> = Vec::new();
        for word in words {
            let Some((resource, name)) = word
                .split_once('/')
                .filter(|(r, n)| !r.is_empty() && !n.is_empty() && !n.contains('/'))
            else {
                return Err(format!(
                    "arguments in resource/name form must have a single resource and name; \
                     got {word:?} (use TYPE/NAME for every argument, or TYPE NAME...)"
                ));
            };
            match out.last_mut() {
                Some(last) if last.resource == resource => last.names.push(name.into()),
                _ => out.push(Request {
                    resource: resource.into(),
                    names: vec![name.into()],
                }),
            }
        }
        return Ok(out);
    }
    let (types, names) = words
        .split_first()
        .ok_or("name a resource type, as `pods`")?;
    Ok(types
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| Request {
            resource: t.to_string(),
            names: names.to_vec(),
        })
        .collect())
}

/// Resolves every request against discovery; `all` expands to its category.
pub fn resolve<'a>(
    served: &'a ServedResources,
    requests: &[Request],
) -> Result<Vec<(&'a ServedResource, Vec<String>)>, CliError> {
    let mut out = Vec::new();
    for request in requests {
        if request.resource == "all" {
            for r in served.category("all") {
                out.push((r, request.names.clone()));
            }
        } else {
            out.push((served.resolve(&request.resource)?, request.names.clone()));
        }
    }
    Ok(out)
}

/// What one resource type gave back.
struct Found {
    resource: ServedResource,
    /// Tables (for the columns) or objects (for yaml, json, name).
    answers: Vec<Value>,
}

pub fn run(args: GetArgs) -> u8 {
    super::request::run(get(args))
}

async fn get(args: GetArgs) -> Result<u8, CliError> {
    let requests = parse_requests(&args.resources).map_err(CliError::Usage)?;
    let session = Session::connect(&args.client).await?;
    let served = session.discover().await?;
    let targets = resolve(&served, &requests)?;
    let namespace = namespace_or_default(&args.namespace, &session.conn);
    if args.all_namespaces && targets.iter().any(|(_, names)| !names.is_empty()) {
        return Err(CliError::Usage(
            "a resource cannot be retrieved by name across all namespaces; use -n NAMESPACE".into(),
        ));
    }
    if args.watch && targets.len() != 1 {
        return Err(CliError::Usage(format!(
            "-w watches one resource type; {} were named",
            targets.len()
        )));
    }
    let table = matches!(args.output, None | Some(OutputFormat::Wide));
    // `None` on a namespaced resource lists every namespace.
    let scope = (!args.all_namespaces).then_some(namespace.as_str());
    let query = [
        ("labelSelector", args.selector.as_deref().unwrap_or("")),
        (
            "fieldSelector",
            args.field_selector.as_deref().unwrap_or(""),
        ),
    ];
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for (resource, names) in &targets {
        let mut answers = Vec::new();
        if names.is_empty() {
            let path = with_query(&resource.path(scope, None), &query);
            answers.push(session.get(&path, table).await?);
        }
        for name in names {
            let path = resource.path(Some(&namespace), Some(name));
            match session.get(&path, table).await {
                Ok(answer) => answers.push(answer),
                Err(e) if e.is_not_found() => failures.push(e),
                Err(e) => return Err(e),
            }
        }
        found.push(Found {
            resource: (*resource).clone(),
            answers,
        });
    }
    let single = targets.len() == 1 && targets[0].1.len() == 1;
    let style = TableStyle {
        wide: args.output == Some(OutputFormat::Wide),
        namespace_column: args.all_namespaces,
        kind_prefix: None,
        headers: !args.no_headers,
    };
    let (text, count) = render(&found, args.output, single, &style);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    if count == 0 && failures.is_empty() && args.output.is_none_or(|o| o == OutputFormat::Wide) {
        let namespaced = targets.iter().any(|(r, _)| r.namespaced);
        if namespaced && !args.all_namespaces {
            eprintln!("No resources found in {namespace} namespace.");
        } else {
            eprintln!("No resources found");
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    if args.watch {
        let (resource, names) = &targets[0];
        let start = found[0].answers.first().cloned().unwrap_or(Value::Null);
        let name_field = names.first().map(|n| format!("metadata.name={n}"));
        let field = match (&args.field_selector, &name_field) {
            (Some(f), Some(n)) => format!("{f},{n}"),
            (Some(f), None) => f.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => String::new(),
        };
        let rv = start
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let path = with_query(
            &resource.path(scope, None),
            &[
                ("watch", "1"),
                ("resourceVersion", &rv),
                ("labelSelector", args.selector.as_deref().unwrap_or("")),
                ("fieldSelector", &field),
            ],
        );
        let header = text_table(&start, &style);
        let known = widths(std::iter::once(&header.header).chain(header.rows.iter()));
        let printed_header = !header.rows.is_empty() || args.no_headers;
        return watch(
            &session,
            &path,
            table,
            args.output,
            &style,
            known,
            printed_header,
        )
        .await;
    }
    Ok(if failures.is_empty() { 0 } else { EXIT_FAILED })
}

/// The text for everything found and how many objects it shows.
fn render(
    found: &[Found],
    output: Option<OutputFormat>,
    single: bool,
    style: &TableStyle,
) -> (String, usize) {
    let several = found.len() > 1;
    match output {
        None | Some(OutputFormat::Wide) => {
            let mut blocks = Vec::new();
            let mut count = 0;
            for f in found {
                let style = TableStyle {
                    kind_prefix: several.then(|| f.resource.qualified_singular()),
                    ..style.clone()
                };
                let mut merged = TextTable::default();
                for answer in &f.answers {
                    let t = text_table(answer, &style);
                    merged.header = t.header;
                    merged.rows.extend(t.rows);
                }
                count += merged.rows.len();
                if !merged.rows.is_empty() {
                    blocks.push(render_table(&merged));
                }
            }
            (blocks.join("\n"), count)
        }
        Some(format) => {
            let objects: Vec<Value> = found.iter().flat_map(objects_of).collect();
            let count = objects.len();
            let text = if format == OutputFormat::Name {
                found
                    .iter()
                    .flat_map(|f| {
                        let kind = f.resource.qualified_singular();
                        objects_of(f).into_iter().map(move |o| {
                            let name = o.pointer("/metadata/name").and_then(Value::as_str);
                            format!("{kind}/{}\n", name.unwrap_or(""))
                        })
                    })
                    .collect()
            } else {
                render_objects(objects, single, format)
            };
            (text, count)
        }
    }
}

/// The objects of one resource's answers: list items, or the objects asked for by name.
fn objects_of(found: &Found) -> Vec<Value> {
    let (api_version, kind) = (found.resource.api_version(), &found.resource.kind);
    found
        .answers
        .iter()
        .flat_map(|a| {
            if a.get("items").is_some() {
                list_items(a, &api_version, kind)
            } else {
                vec![a.clone()]
            }
        })
        .collect()
}

/// Prints each change a watch reports until the server ends it.
async fn watch(
    session: &Session,
    path: &str,
    table: bool,
    output: Option<OutputFormat>,
    style: &TableStyle,
    mut known: Vec<usize>,
    mut printed_header: bool,
) -> Result<u8, CliError> {
    let events = session.watch(path, table).await?;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let object = match event.map_err(|e| session.error(e))? {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(status) => return Err(CliError::Server(status)),
        };
        let text = match output {
            None | Some(OutputFormat::Wide) => {
                let t = text_table(&object, style);
                let lines: Vec<&Vec<String>> = (!printed_header)
                    .then_some(&t.header)
                    .into_iter()
                    .chain(t.rows.iter())
                    .collect();
                printed_header = true;
                let fresh = widths(lines.iter().copied());
                for (i, w) in fresh.into_iter().enumerate() {
                    match known.get_mut(i) {
                        Some(old) => *old = (*old).max(w),
                        None => known.push(w),
                    }
                }
                lines.iter().map(|cells| line(cells, &known)).collect()
            }
            Some(OutputFormat::Name) => {
                let name = object.pointer("/metadata/name").and_then(Value::as_str);
                let kind = object["kind"].as_str().unwrap_or("").to_lowercase();
                format!("{kind}/{}\n", name.unwrap_or(""))
            }
            Some(format) => {
                let mut text = render_objects(vec![object], true, format);
                if format == OutputFormat::Yaml {
                    text.insert_str(0, "---\n");
                }
                text
            }
        };
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`| head`): stop quietly, as kubectl does.
            return Ok(0);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn types_names_and_type_slash_name_forms_are_read_as_kubectl_reads_them() {
        assert_eq!(
            parse_requests(&words("po,svc web")).unwrap(),
            vec![
                Request {
                    resource: "po".into(),
                    names: vec!["web".into()]
                },
                Request {
                    resource: "svc".into(),
                    names: vec!["web".into()]
                },
            ]
        );
        assert_eq!(
            parse_requests(&words("po/a po/b cm/c")).unwrap(),
            vec![
                Request {
                    resource: "po".into(),
                    names: vec!["a".into(), "b".into()]
                },
                Request {
                    resource: "cm".into(),
                    names: vec!["c".into()]
                },
            ]
        );
        let err = parse_requests(&words("po po/a")).unwrap_err();
        assert!(err.contains("resource/name form"), "{err}");
    }
}
