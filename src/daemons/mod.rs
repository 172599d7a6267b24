//! Process wiring: the long-running roles of the `berth` binary — the API server and the
//! node agent.

pub mod agent;
pub mod server;
pub mod up;
