//! Process wiring: the long-running roles of the `berth` binary.

pub mod server;
