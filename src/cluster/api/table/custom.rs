//! A custom resource's Table: NAME, then its version's `additionalPrinterColumns` (AGE when
//! it has none, as Kubernetes prints), each cell read with the JSONPath subset printer columns
//! use (`.spec.replicas`, `.status.conditions[0].type`, `.metadata.creationTimestamp`).

use serde_json::{Value, json};

use crate::manifest::crd::{PrinterColumn, Version};

/// The columns after NAME.
pub(super) fn columns(version: &Version) -> Vec<PrinterColumn> {
    if !version.printer_columns.is_empty() {
        return version.printer_columns.clone();
    }
    vec![PrinterColumn {
        name: "Age".into(),
        column_type: "date".into(),
        format: None,
        description: Some("Age of the object".into()),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

/// The column definitions of a Table.
pub(super) fn definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.column_type,
                "format": c.format.clone().unwrap_or_default(),
                "description": c.description.clone().unwrap_or_default(),
                "priority": c.priority,
            })
        })
        .collect()
}

/// An object's cells in `columns`: the value at the column's path, a date as an age, nothing
/// (`<none>` in kubectl) where the path finds nothing.
pub(super) fn cells(columns: &[PrinterColumn], object: &Value) -> Vec<Value> {
    columns
        .iter()
        .map(
            |c| match (at_path(object, &c.json_path), c.column_type.as_str()) {
                (None, _) => Value::Null,
                (Some(v), "date") => match v.as_str() {
                    Some(_) => json!(super::age(&json!({"metadata": {"creationTimestamp": v}}))),
                    None => v.clone(),
                },
                (Some(Value::Array(items)), _) => json!(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                (Some(v @ Value::Object(_)), _) => json!(v.to_string()),
                (Some(v), _) => v.clone(),
            },
        )
        .collect()
}

/// The value a simple JSONPath names: dotted keys, each optionally indexed (`[0]`).
fn at_path<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut at = object;
    for segment in path.trim_start_matches('.').split('.') {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            at = at.get(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            at = at.get(i)?;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, column_type: &str, json_path: &str) -> PrinterColumn {
        PrinterColumn {
            name: name.into(),
            column_type: column_type.into(),
            format: None,
            description: None,
            priority: 0,
            json_path: json_path.into(),
        }
    }

    #[test]
    fn printer_columns_read_their_paths_and_dates_become_ages() {
        let object = json!({
            "metadata": {"name": "w", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"size": 3, "colour": "blue"},
            "status": {"conditions": [{"type": "Ready"}]},
        });
        let columns = [
            column("Size", "integer", ".spec.size"),
            column("Colour", "string", ".spec.colour"),
            column("Ready", "string", ".status.conditions[0].type"),
            column("Missing", "string", ".spec.nothing"),
            column("Age", "date", ".metadata.creationTimestamp"),
        ];
        let cells = cells(&columns, &object);
        assert_eq!(
            cells[..4],
            [json!(3), json!("blue"), json!("Ready"), Value::Null]
        );
        let age = cells[4].as_str().unwrap();
        assert!(
            age.starts_with(char::is_numeric) && age.contains('y'),
            "{age}"
        );
    }
}
