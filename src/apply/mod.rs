//! Turning a plan into one store transaction: ApplySet ownership, prune and its guard.
//!
//! What exists so far is the ApplySet bookkeeping of KEP-3659, shared by `berth apply` and
//! git sync: the parent object, the member label, and the mass-delete guard.

pub mod applyset;
