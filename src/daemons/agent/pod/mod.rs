//! A pod as the agent sees it, computed purely: its translation into container specs, its
//! environment and projected files, its status, restart back-off, probes and drift.

pub mod backoff;
pub mod drift;
pub mod env;
pub mod podspec;
pub mod probe;
pub mod projected;
pub mod status;
