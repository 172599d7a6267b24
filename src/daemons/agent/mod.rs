//! The node agent: turns the pods bound to this node into Docker containers.
//!
//! Layers, from the engine up; each imports only those before it:
//! - [`runtime`]: the `ContainerRuntime` trait and its engine-neutral types, the labels every
//!   berth container carries, the sandbox image, and the Docker implementation (the only
//!   code that touches bollard); a recording fake for unit tests.
//! - [`net`]: the Service data plane: the pod network ([`net::podnet`]), plugging sandboxes
//!   into it ([`net::attach`]), nftables rules ([`net::proxy`]), cluster DNS ([`net::dns`]).
//! - [`pod`]: a pod computed purely: its translation into container specs, environment,
//!   projected files, status, restart back-off, probes, and drift (what differs from the
//!   plan, the one detector the worker acts on).
//! - [`node`]: the Node object, its heartbeat and its Lease.
//! - [`worker`]: one pod worker per pod (a pass that makes the engine match the pod, the
//!   one path by which the agent starts, restarts and repairs containers), the sync loop
//!   that runs them, and their shared context, events and metrics.
//! - [`serve`]: the HTTPS endpoint the API server reaches for logs and exec.
//! - [`daemon`]: `berth agent` as a process, wiring all of the above; [`watch`] turns watch
//!   streams into wake-ups for it and for [`net`].

pub mod daemon;
pub mod net;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod serve;
pub mod watch;
pub mod worker;

pub use runtime::{ContainerRuntime, DockerRuntime, RuntimeError};
