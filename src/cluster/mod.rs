//! The control plane's building blocks: the revisioned store everything else sits on, the
//! Kubernetes-compatible API over it, and the scheduler and controllers that act on it.
//!
//! Layers, low to high: [`store`] < [`api`] < [`scheduler`] and [`controllers`] (the scheduler
//! builds on the controllers' caches, client and selectors); [`events`] (Event aggregation, also
//! the agent's) imports none of them. A lower one never imports a higher one and no two import
//! each other (`tests/layers.rs` checks). [`acted`] says which served kinds any of them acts on.

pub mod acted;
pub mod agent_endpoint;
pub mod api;
pub mod controllers;
pub mod events;
pub mod scheduler;
pub mod store;
