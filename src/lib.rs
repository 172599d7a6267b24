//! berth: a declarative, GitOps-style container orchestrator that speaks the Kubernetes API.
//!
//! The map of the code is in `DESIGN.md`; `manifest` is where every manifest is read and
//! validated, `cli` is the command line.

pub mod apply;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod daemons;
pub mod diff;
pub mod manifest;
