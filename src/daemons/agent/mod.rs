//! The node agent: turns the pods bound to this node into Docker containers.

pub mod daemon;
pub mod net;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod serve;
pub mod watch;
pub mod worker;

pub use runtime::{ContainerRuntime, DockerRuntime, RuntimeError};

// The old paths `tests/support_docker.rs` still imports, until the test harness moves to
// `tests/support/` and imports the layered ones (issue 16). Re-exports, not second homes.
#[doc(hidden)]
pub use pod::{env, podspec};
#[doc(hidden)]
pub use runtime::sandbox;
