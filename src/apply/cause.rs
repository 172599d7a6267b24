//! One field-level cause of a refused write, as a Kubernetes `Status` lists it in
//! `details.causes`: what server-side apply reports for each conflict and the planner for each
//! invalid object, and what the API server sends back.

/// One field-level cause of a 422 or a server-side apply conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`, …
    pub reason: String,
    pub message: String,
    /// `spec.replicas`.
    pub field: String,
}
