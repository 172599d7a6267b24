//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with the columns kubectl
//! users know for pods, deployments, replica sets, services, config maps, secrets,
//! namespaces, nodes and events (`cells.rs`); jobs, cron jobs, stateful and daemon sets,
//! ingresses, volumes and claims, RBAC, autoscalers, disruption budgets, classes, quotas
//! (`kinds.rs`); NAME and AGE for the rest.
//!
//! This module is the Table itself (its column definitions and rows) and when a client wants
//! one; what each kind prints, its columns and an object's cells in them, is in those two.

mod cells;
mod custom;
mod kinds;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use self::cells::{cells, columns};
use super::resources::Resource;

/// Whether the client asked for a Table (`Accept: application/json;as=Table;…`).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// `5m`, `3h`, `2d`: age as kubectl shows it.
pub(super) fn age(object: &Value) -> String {
    let Some(ts) = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "<unknown>".into();
    };
    human_age((chrono::Utc::now() - ts.with_timezone(&chrono::Utc)).num_seconds())
}

/// A duration in seconds the way kubectl prints ages: two units while the smaller one still
/// tells something (`3m20s`, `5h10m`, `3d4h`), one unit after that (`45m`, `20h`, `12d`).
pub fn human_age(seconds: i64) -> String {
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    match seconds {
        // Clocks a second or so apart still read as now.
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        _ if minutes < 10 => two(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => two(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => two(days, "d", hours % 24, "h"),
        _ if days < 365 * 2 => format!("{days}d"),
        _ if days < 365 * 8 => two(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

/// A Table of `items`.
pub fn table(r: &Resource, items: &[Value], metadata: &Value) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let printed = super::crds::definition(r).and_then(|d| d.served(r.version).map(custom::columns));
    if let Some(printed) = printed {
        defs.extend(custom::definitions(&printed));
        let rows: Vec<Value> = items
            .iter()
            .map(|o| {
                let name = o.pointer("/metadata/name").cloned().unwrap_or_else(|| json!(""));
                json!({
                    "cells": std::iter::once(name).chain(custom::cells(&printed, o)).collect::<Vec<_>>(),
                    "object": partial_metadata(o),
                })
            })
            .collect();
        return json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "columnDefinitions": defs,
            "rows": rows,
        });
    }
    for (c, priority) in kinds::columns(r.kind).unwrap_or_else(|| columns(r)) {
        defs.push(json!({"name": c, "type": "string", "format": "", "description": "", "priority": priority}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": match kinds::cells(r.kind, o) {
                    Some(rest) => std::iter::once(json!(o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")))
                        .chain(rest)
                        .collect(),
                    None => cells(r, o),
                },
                "object": partial_metadata(o),
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// A row's object: its metadata only, as kubectl asks for.
fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (180, "3m"),
            (45 * 60, "45m"),
            (3 * 3600 + 600, "3h10m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (2 * 86400, "2d"),
            (40 * 86400, "40d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ] {
            assert_eq!(human_age(secs), want, "{secs}s");
        }
    }
}
