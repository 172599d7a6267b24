//! Turning a plan into one store transaction: ApplySet ownership, prune and its guard.
//!
//! [`applyset`] is the ApplySet bookkeeping of KEP-3659 (parent object, member label,
//! mass-delete guard), shared by `berth apply` and git sync; [`batch`] is the wire format of
//! the API server's atomic batch apply, and [`client`] sends it. The server side, which
//! computes and commits the batch in one store transaction, is `crate::cluster::api::batch`.

pub mod applyset;
pub mod batch;
pub mod cause;
pub mod client;
pub mod ssa;
