//! Checks the Kubernetes API server makes that a JSON Schema cannot: name syntax per kind,
//! label and annotation syntax, selectors that match their templates, unique container names
//! and ports, port ranges, references between fields, and enumerations.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::kinds::KindInfo;
use super::names;
use super::report::{FieldPath, ObjectReport};

type NameRule = fn(&str) -> Result<(), String>;

fn name_rule(kind: &KindInfo) -> NameRule {
    match (kind.group(), kind.kind) {
        ("", "Namespace") => names::dns1123_label,
        ("", "Service") => names::dns1035_label,
        ("rbac.authorization.k8s.io", _) => names::path_segment_name,
        _ => names::dns1123_subdomain,
    }
}

pub(crate) fn check(report: &mut ObjectReport<'_>, kind: &KindInfo, value: &Value) {
    let root = FieldPath::default();
    check_metadata(report, kind, value, &root);
    let template = |p: &[&str]| FieldPath::parse_keys(p);
    match (kind.group(), kind.kind) {
        ("", "Pod") => pod_spec(report, value, &template(&["spec"]), PodOwner::Bare, &[]),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            workload(
                report,
                value,
                &template(&["spec"]),
                SelectorStyle::LabelSelector,
                PodOwner::Controller,
            );
        }
        ("", "ReplicationController") => {
            workload(
                report,
                value,
                &template(&["spec"]),
                SelectorStyle::Map,
                PodOwner::Controller,
            );
        }
        ("batch", "Job") => workload(
            report,
            value,
            &template(&["spec"]),
            SelectorStyle::Optional,
            PodOwner::Job,
        ),
        ("batch", "CronJob") => {
            workload(
                report,
                value,
                &template(&["spec", "jobTemplate", "spec"]),
                SelectorStyle::Optional,
                PodOwner::Job,
            );
        }
        ("", "PodTemplate") => {
            let t = template(&["template"]);
            check_labels_and_annotations(report, value, &t.child("metadata"));
            pod_spec(report, value, &t.child("spec"), PodOwner::Bare, &[]);
        }
        ("", "Service") => service(report, value),
        ("", "ConfigMap") => data_keys(report, value, &["data", "binaryData"]),
        ("", "Secret") => {
            data_keys(report, value, &["data", "stringData"]);
            super::secret_types::check(report, value);
        }
        _ => {}
    }
}

fn at<'v>(value: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    path.lookup(value)
}

fn check_metadata(report: &mut ObjectReport<'_>, kind: &KindInfo, value: &Value, root: &FieldPath) {
    let meta = root.child("metadata");
    let rule = name_rule(kind);
    let name = at(value, &meta.child("name")).and_then(Value::as_str);
    let generate_name = at(value, &meta.child("generateName")).and_then(Value::as_str);
    match (name, generate_name) {
        (Some(name), _) => {
            if let Err(e) = rule(name) {
                report.error(
                    "name",
                    &meta.child("name"),
                    format!("invalid name {name:?}: {e}"),
                    Some(name_help(kind)),
                );
            }
        }
        (None, Some(prefix)) => {
            let stem = prefix.trim_end_matches('-');
            if !stem.is_empty()
                && let Err(e) = rule(stem)
            {
                report.error("name", &meta.child("generateName"), format!("invalid generateName {prefix:?}: {e}"), Some(name_help(kind)));
            }
        }
        (None, None) => report.error(
            "name",
            &meta,
            "missing metadata.name".into(),
            Some("every object needs `metadata.name` (or `metadata.generateName` for generated names)".into()),
        ),
    }
    if let Some(ns) = at(value, &meta.child("namespace")).and_then(Value::as_str)
        && let Err(e) = names::dns1123_label(ns)
    {
        report.error(
            "name",
            &meta.child("namespace"),
            format!("invalid namespace {ns:?}: {e}"),
            None,
        );
    }
    check_labels_and_annotations(report, value, &meta);
}

fn name_help(kind: &KindInfo) -> String {
    match (kind.group(), kind.kind) {
        ("", "Namespace") => "use lower-case letters, digits and '-', at most 63 characters (e.g. my-team)".into(),
        ("", "Service") => "use lower-case letters, digits and '-', starting with a letter, at most 63 characters (e.g. web-api)".into(),
        _ => "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. web-v2)".into(),
    }
}

fn check_labels_and_annotations(report: &mut ObjectReport<'_>, value: &Value, meta: &FieldPath) {
    if let Some(labels) = at(value, &meta.child("labels")).and_then(Value::as_object) {
        for (k, v) in labels {
            let field = meta.child("labels").child(k);
            if let Err(e) = names::qualified_name(k) {
                report.error(
                    "label",
                    &field,
                    format!("invalid label key {k:?}: {e}"),
                    None,
                );
            }
            if let Some(v) = v.as_str()
                && let Err(e) = names::label_value(v)
            {
                report.error("label", &field, format!("invalid label value {v:?}: {e}"), Some("label values are at most 63 characters of letters, digits, '-', '_' and '.'; put longer text in an annotation".into()));
            }
        }
    }
    if let Some(annotations) = at(value, &meta.child("annotations")).and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Err(e) = names::qualified_name(k) {
                report.error(
                    "annotation",
                    &meta.child("annotations").child(k),
                    format!("invalid annotation key {k:?}: {e}"),
                    None,
                );
            }
        }
        if total > 256 * 1024 {
            report.error(
                "annotation",
                &meta.child("annotations"),
                format!("annotations total {total} bytes; the limit is 262144"),
                None,
            );
        }
    }
}

#[derive(Clone, Copy)]
enum SelectorStyle {
    /// `apps/v1`: a required, non-empty LabelSelector.
    LabelSelector,
    /// ReplicationController: a plain map, defaulted from the template when absent.
    Map,
    /// Job: an optional LabelSelector, usually generated.
    Optional,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PodOwner {
    Bare,
    Controller,
    Job,
}

fn workload(
    report: &mut ObjectReport<'_>,
    value: &Value,
    spec: &FieldPath,
    style: SelectorStyle,
    owner: PodOwner,
) {
    let template = spec.child("template");
    let template_meta = template.child("metadata");
    check_labels_and_annotations(report, value, &template_meta);
    let labels: BTreeMap<String, String> = at(value, &template_meta.child("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let selector_path = spec.child("selector");
    let selector = at(value, &selector_path);
    match (style, selector) {
        (SelectorStyle::LabelSelector, Some(sel)) | (SelectorStyle::Optional, Some(sel)) => {
            label_selector(
                report,
                sel,
                &selector_path,
                &labels,
                matches!(style, SelectorStyle::LabelSelector),
            );
        }
        (SelectorStyle::Map, Some(Value::Object(sel))) => {
            for (k, v) in sel {
                if labels.get(k).map(String::as_str) != v.as_str() {
                    report.error(
                        "selector",
                        &selector_path.child(k),
                        format!(
                            "selector {k}={} does not match the template labels",
                            v.as_str().unwrap_or_default()
                        ),
                        Some(
                            "the pod template's metadata.labels must carry every selector label"
                                .into(),
                        ),
                    );
                }
            }
        }
        _ => {}
    }
    // A StatefulSet's pods mount the claims of its volumeClaimTemplates by name.
    let claims: Vec<&str> = at(value, &spec.child("volumeClaimTemplates"))
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    pod_spec(report, value, &template.child("spec"), owner, &claims);
}

fn label_selector(
    report: &mut ObjectReport<'_>,
    sel: &Value,
    path: &FieldPath,
    labels: &BTreeMap<String, String>,
    required: bool,
) {
    let match_labels = sel.get("matchLabels").and_then(Value::as_object);
    let exprs = sel.get("matchExpressions").and_then(Value::as_array);
    if required && match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty()) {
        report.error(
            "selector",
            path,
            "empty selector: it would select every pod".into(),
            Some("set spec.selector.matchLabels to the template's labels".into()),
        );
        return;
    }
    let mut matches = true;
    if let Some(ml) = match_labels {
        for (k, v) in ml {
            if let Err(e) = names::qualified_name(k) {
                report.error(
                    "selector",
                    &path.child("matchLabels").child(k),
                    format!("invalid label key {k:?}: {e}"),
                    None,
                );
            }
            if labels.get(k).map(String::as_str) != v.as_str() {
                matches = false;
            }
        }
    }
    for (i, expr) in exprs.into_iter().flatten().enumerate() {
        let epath = path.child("matchExpressions").index(i);
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let op = expr
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let label = labels.get(key).map(String::as_str);
        let ok = match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    report.error(
                        "selector",
                        &epath.child("values"),
                        format!("operator {op} needs at least one value"),
                        None,
                    );
                }
                (op == "In") == label.is_some_and(|l| values.contains(&l))
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    report.error(
                        "selector",
                        &epath.child("values"),
                        format!("operator {op} takes no values"),
                        None,
                    );
                }
                (op == "Exists") == label.is_some()
            }
            other => {
                report.error(
                    "enum",
                    &epath.child("operator"),
                    format!("unknown operator {other:?}"),
                    Some("use In, NotIn, Exists or DoesNotExist".into()),
                );
                true
            }
        };
        matches &= ok;
    }
    if !matches {
        report.error(
            "selector",
            path,
            "selector does not match the template labels".into(),
            Some("the pod template's metadata.labels must satisfy spec.selector, or the controller can never see its pods".into()),
        );
    }
}

fn one_of(report: &mut ObjectReport<'_>, value: &Value, path: &FieldPath, allowed: &[&str]) {
    if let Some(s) = at(value, path).and_then(Value::as_str)
        && !allowed.contains(&s)
    {
        let help = allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s))
            .map(|a| format!("did you mean `{a}`?"))
            .unwrap_or_else(|| format!("use one of: {}", allowed.join(", ")));
        report.error("enum", path, format!("unsupported value {s:?}"), Some(help));
    }
}

fn port_number(report: &mut ObjectReport<'_>, value: &Value, path: &FieldPath, min: i64) {
    if let Some(n) = at(value, path).and_then(Value::as_i64)
        && !(min..=65535).contains(&n)
    {
        report.error(
            "port",
            path,
            format!("port {n} is out of range"),
            Some(format!("ports are between {min} and 65535")),
        );
    }
}

/// `hostAliases`: each an IP address with DNS names, as the hosts file needs them.
fn host_aliases(report: &mut ObjectReport<'_>, spec_value: &Value, spec: &FieldPath) {
    let aliases = spec_value.get("hostAliases").and_then(Value::as_array);
    for (i, alias) in aliases.into_iter().flatten().enumerate() {
        let path = spec.child("hostAliases").index(i);
        if let Some(ip) = alias.get("ip").and_then(Value::as_str)
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            report.error(
                "ip",
                &path.child("ip"),
                format!("{ip:?} is not an IP address"),
                Some("hostAliases map an address such as 10.1.2.3 to names".into()),
            );
        }
        let hostnames = alias.get("hostnames").and_then(Value::as_array);
        for (j, name) in hostnames.into_iter().flatten().enumerate() {
            if let Some(name) = name.as_str()
                && let Err(e) = names::dns1123_subdomain(name)
            {
                report.error(
                    "name",
                    &path.child("hostnames").index(j),
                    format!("invalid hostname {name:?}: {e}"),
                    None,
                );
            }
        }
    }
}

fn pod_spec(
    report: &mut ObjectReport<'_>,
    value: &Value,
    spec: &FieldPath,
    owner: PodOwner,
    claim_volumes: &[&str],
) {
    let Some(spec_value) = at(value, spec) else {
        return;
    };
    match owner {
        PodOwner::Bare => one_of(
            report,
            value,
            &spec.child("restartPolicy"),
            &["Always", "OnFailure", "Never"],
        ),
        PodOwner::Controller => one_of(report, value, &spec.child("restartPolicy"), &["Always"]),
        PodOwner::Job => one_of(
            report,
            value,
            &spec.child("restartPolicy"),
            &["OnFailure", "Never"],
        ),
    }
    one_of(
        report,
        value,
        &spec.child("dnsPolicy"),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    host_aliases(report, spec_value, spec);
    let host_network = spec_value.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let volumes: HashSet<&str> = spec_value
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .chain(claim_volumes.iter().copied())
        .collect();
    let mut seen_volumes = HashSet::new();
    for (i, v) in spec_value
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            let path = spec.child("volumes").index(i).child("name");
            if !seen_volumes.insert(name) {
                report.error(
                    "duplicate",
                    &path,
                    format!("volume name {name:?} is used twice"),
                    None,
                );
            } else if let Err(e) = names::dns1123_label(name) {
                report.error(
                    "name",
                    &path,
                    format!("invalid volume name {name:?}: {e}"),
                    None,
                );
            }
        }
    }
    if spec_value
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        report.error(
            "required",
            &spec.child("containers"),
            "a pod needs at least one container".into(),
            None,
        );
    }
    let mut container_names = HashSet::new();
    let mut pod_ports: HashSet<(i64, String)> = HashSet::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in spec_value
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = spec.child(list).index(i);
            if let Some(name) = c.get("name").and_then(Value::as_str) {
                if !container_names.insert(name.to_string()) {
                    report.error(
                        "duplicate",
                        &cpath.child("name"),
                        format!("container name {name:?} is used twice in this pod"),
                        Some("container names must be unique within a pod".into()),
                    );
                } else if let Err(e) = names::dns1123_label(name) {
                    report.error(
                        "name",
                        &cpath.child("name"),
                        format!("invalid container name {name:?}: {e}"),
                        None,
                    );
                }
            }
            one_of(
                report,
                value,
                &cpath.child("imagePullPolicy"),
                &["Always", "IfNotPresent", "Never"],
            );
            let mut port_names = HashSet::new();
            for (j, p) in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let ppath = cpath.child("ports").index(j);
                port_number(report, value, &ppath.child("containerPort"), 1);
                port_number(report, value, &ppath.child("hostPort"), 0);
                let (container_port, host_port) = (
                    p.get("containerPort").and_then(Value::as_i64),
                    // 0 is "not set": Kubernetes fills in the containerPort.
                    p.get("hostPort")
                        .and_then(Value::as_i64)
                        .filter(|hp| *hp != 0),
                );
                if let (true, Some(cp), Some(hp)) = (host_network, container_port, host_port)
                    && cp != hp
                {
                    report.error(
                        "port",
                        &ppath.child("hostPort"),
                        format!("hostPort {hp} differs from containerPort {cp} in a hostNetwork pod"),
                        Some("a hostNetwork pod listens on the node's own ports: leave hostPort out or make it equal containerPort".into()),
                    );
                }
                one_of(
                    report,
                    value,
                    &ppath.child("protocol"),
                    &["TCP", "UDP", "SCTP"],
                );
                if let Some(name) = p.get("name").and_then(Value::as_str) {
                    if let Err(e) = names::port_name(name) {
                        report.error(
                            "port",
                            &ppath.child("name"),
                            format!("invalid port name {name:?}: {e}"),
                            None,
                        );
                    } else if !port_names.insert(name) {
                        report.error(
                            "duplicate",
                            &ppath.child("name"),
                            format!("port name {name:?} is used twice in this container"),
                            None,
                        );
                    }
                }
                if let Some(port) = p.get("containerPort").and_then(Value::as_i64) {
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string();
                    if !pod_ports.insert((port, proto.clone())) {
                        report.error("duplicate", &ppath.child("containerPort"), format!("port {port}/{proto} is declared twice in this pod"), Some("containers of a pod share one network namespace; each port can be declared once".into()));
                    }
                }
            }
            for (j, m) in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(name) = m.get("name").and_then(Value::as_str)
                    && !volumes.contains(name)
                {
                    report.error(
                        "reference",
                        &cpath.child("volumeMounts").index(j).child("name"),
                        format!("volume {name:?} is not defined in the pod's volumes"),
                        Some("add it to spec.volumes, or fix the name".into()),
                    );
                }
            }
        }
    }
}

fn service(report: &mut ObjectReport<'_>, value: &Value) {
    let spec = FieldPath::parse_keys(&["spec"]);
    one_of(
        report,
        value,
        &spec.child("type"),
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    );
    let svc_type = at(value, &spec.child("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if svc_type == "ExternalName" && at(value, &spec.child("externalName")).is_none() {
        report.error(
            "required",
            &spec,
            "type ExternalName needs spec.externalName".into(),
            None,
        );
    }
    let ports = at(value, &spec.child("ports")).and_then(Value::as_array);
    let headless = at(value, &spec.child("clusterIP")).and_then(Value::as_str) == Some("None");
    if ports.is_none_or(|p| p.is_empty()) && svc_type != "ExternalName" && !headless {
        report.error("required", &spec, "missing spec.ports".into(), Some("a Service needs at least one port, unless it is headless (clusterIP: None) or ExternalName".into()));
    }
    let ports = ports.cloned().unwrap_or_default();
    let mut names_seen = HashSet::new();
    let mut port_seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let ppath = spec.child("ports").index(i);
        port_number(report, value, &ppath.child("port"), 1);
        port_number(report, value, &ppath.child("nodePort"), 0);
        one_of(
            report,
            value,
            &ppath.child("protocol"),
            &["TCP", "UDP", "SCTP"],
        );
        match p.get("targetPort") {
            Some(Value::Number(_)) => port_number(report, value, &ppath.child("targetPort"), 1),
            Some(Value::String(s)) => {
                if let Err(e) = names::port_name(s) {
                    report.error(
                        "port",
                        &ppath.child("targetPort"),
                        format!("invalid targetPort {s:?}: {e}"),
                        Some("use a port number or the name of a container port".into()),
                    );
                }
            }
            _ => {}
        }
        match p.get("name").and_then(Value::as_str) {
            Some(name) => {
                if !names_seen.insert(name.to_string()) {
                    report.error(
                        "duplicate",
                        &ppath.child("name"),
                        format!("port name {name:?} is used twice"),
                        None,
                    );
                } else if let Err(e) = names::dns1123_label(name) {
                    report.error(
                        "port",
                        &ppath.child("name"),
                        format!("invalid port name {name:?}: {e}"),
                        None,
                    );
                }
            }
            None if ports.len() > 1 => report.error(
                "required",
                &ppath,
                "each port needs a name when a Service has more than one".into(),
                Some("add `name:` to every port".into()),
            ),
            None => {}
        }
        if let Some(port) = p.get("port").and_then(Value::as_i64) {
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            if !port_seen.insert((port, proto.clone())) {
                report.error(
                    "duplicate",
                    &ppath.child("port"),
                    format!("port {port}/{proto} is declared twice"),
                    None,
                );
            }
        }
    }
}

fn data_keys(report: &mut ObjectReport<'_>, value: &Value, fields: &[&str]) {
    let mut seen = HashSet::new();
    for field in fields {
        let path = FieldPath::parse_keys(&[field]);
        if let Some(map) = at(value, &path).and_then(Value::as_object) {
            for k in map.keys() {
                if let Err(e) = names::config_map_key(k) {
                    report.error(
                        "key",
                        &path.child(k),
                        format!("invalid key {k:?}: {e}"),
                        None,
                    );
                }
                if *field != "stringData" && !seen.insert(k.clone()) {
                    report.error(
                        "duplicate",
                        &path.child(k),
                        format!("key {k:?} is in both data and binaryData"),
                        None,
                    );
                }
            }
        }
    }
}
