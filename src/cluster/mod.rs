//! The control plane's building blocks: the revisioned store everything else sits on, and
//! the Kubernetes-compatible API over it.

pub mod api;
pub mod store;
