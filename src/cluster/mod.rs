//! The control plane's building blocks: the revisioned store everything else sits on, the
//! Kubernetes-compatible API over it, and the scheduler and controllers that act on it.

pub mod agent_endpoint;
pub mod api;
pub mod controllers;
pub mod events;
pub mod scheduler;
pub mod store;
