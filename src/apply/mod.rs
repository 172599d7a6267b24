//! Applying a set of objects: the planner, server-side apply, ApplySet bookkeeping and the
//! batch's wire format. Pure except [`client`]; `crate::cluster::api::batch` executes.
//!
//! - [`plan`]: the apply planner. A batch request and a snapshot of the live objects in, each
//!   object's outcome (create / update / unchanged / prune) with what to store, the
//!   mass-delete guard, conflicts and the parent's annotations out; no I/O, no clock. What it
//!   needs of the API server (served kinds, admitting one write) comes through its
//!   [`plan::Admission`] trait. The API server's batch endpoint is its one executor: it reads
//!   the snapshot and commits the plan in one store transaction. `berth apply`,
//!   `berth diff -f` and `berth up` reach it over HTTP ([`client`]), git sync in process.
//! - [`ssa`]: server-side apply's merge and `managedFields`, for the planner and for the API
//!   server's `PATCH application/apply-patch+yaml` alike; [`cause`]: a field-level cause of
//!   a refusal.
//! - [`applyset`]: the ApplySet bookkeeping of KEP-3659 (parent object, member label,
//!   mass-delete guard); [`batch`]: the wire format of the batch endpoint; [`drift`]: that
//!   of a GitSource's drift (a dry-run batch).

pub mod applyset;
pub mod batch;
pub mod cause;
pub mod client;
pub mod drift;
pub mod plan;
pub mod ssa;
