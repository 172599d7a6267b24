//! Field errors in the form the Kubernetes API server words them
//! (`spec.replicas: Invalid value: "two": spec.replicas in body must be of type integer: "string"`),
//! each with the cause `reason` a 422 `Status` carries.

use std::fmt;

use serde_json::Value;

use crate::manifest::report::FieldPath;

/// What is wrong with a field, as apimachinery's `field.ErrorType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid,
    NotSupported,
    TooLong,
    TooMany,
    Forbidden,
    Duplicate,
}

impl ErrorKind {
    /// The `reason` of a `Status` cause (`FieldValueInvalid`).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::Duplicate => "FieldValueDuplicate",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            ErrorKind::Required => "Required value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::Duplicate => "Duplicate value",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: FieldPath,
    pub kind: ErrorKind,
    /// The offending value, shown for `Invalid`, `NotSupported` and `Duplicate`.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(kind: ErrorKind, field: &FieldPath, value: Option<&Value>, detail: String) -> Self {
        FieldError {
            field: field.clone(),
            kind,
            value: value.cloned(),
            detail,
        }
    }

    pub fn required(field: &FieldPath, detail: &str) -> Self {
        FieldError::new(ErrorKind::Required, field, None, detail.to_string())
    }

    pub fn invalid(field: &FieldPath, value: &Value, detail: String) -> Self {
        FieldError::new(ErrorKind::Invalid, field, Some(value), detail)
    }

    pub fn forbidden(field: &FieldPath, detail: &str) -> Self {
        FieldError::new(ErrorKind::Forbidden, field, None, detail.to_string())
    }

    /// The message without the field, as a `Status` cause's `message` has it
    /// (`Invalid value: "two": spec.replicas in body must be of type integer: "string"`).
    pub fn message(&self) -> String {
        let mut text = self.kind.phrase().to_string();
        if let Some(value) = &self.value {
            text.push_str(": ");
            text.push_str(&short_value(value));
        }
        if !self.detail.is_empty() {
            text.push_str(": ");
            text.push_str(&self.detail);
        }
        text
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// A value as an error shows it: JSON, cut short past 80 characters.
fn short_value(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `spec.replicas`, or `<root>` where Kubernetes would print an empty path.
pub(super) fn body_path(path: &FieldPath) -> String {
    if path.0.is_empty() {
        "<root>".into()
    } else {
        path.to_string()
    }
}
