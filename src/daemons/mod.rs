//! Process wiring for the long-running roles: the node agent (and, later, the server).

pub mod agent;
