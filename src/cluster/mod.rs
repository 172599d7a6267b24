//! The control plane's building blocks: for now, the revisioned store everything else sits on.

pub mod store;
