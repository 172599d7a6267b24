//! The node agent: turns the pods bound to this node into Docker containers.
//!
//! The layers, from the engine up:
//! - [`runtime`]: the `ContainerRuntime` trait and the engine-neutral container description.
//! - [`docker`]: its production implementation, Docker through `bollard` (conversions in `docker_model`).
//! - [`sandbox`]: the per-pod sandbox ("pause") container and its locally built image.
//! - [`podspec`]: pure translation of a Kubernetes `Pod` into container and volume specs.
//! - [`quantity`]: resource quantities as Docker numbers.
//! - [`labels`]: the labels every berth container carries and the spec hash.
//! - [`pod`]: starting and stopping a whole pod through any runtime.
//! - [`probe`]: exec, httpGet and tcpSocket probes and their thresholds.
//! - [`drift`]: what differs between a pod's plan and the containers the engine reports.
//! - [`endpoint`]: how the API server finds and trusts an agent's log and exec endpoint.
//! - [`serve`]: that endpoint: container logs and exec over HTTPS for the API server.
//! - [`backoff`]: the restart policy and CrashLoopBackOff state machine.
//! - [`env`]: environment variables and `$(VAR)` expansion.
//! - [`fake`]: a recording runtime for unit tests of sync logic.
//!
//! The agent process on top of them:
//! - [`daemon`]: wiring (API client, Docker, caches, tasks) and shutdown.
//! - [`node`] and [`lease`]: the Node object, its status heartbeat and its Lease.
//! - [`sync`]: the watch-driven loop with one [`worker`] per pod, relist and orphans.
//! - [`status`]: pod status, computed purely; [`events`]: Kubernetes Events.
//! - [`context`], [`objects`], [`metrics`]: shared state, the ConfigMap/Secret cache, `/metrics`.
//! - [`services`]: the Service data plane: the pod network ([`podnet`]), nftables rules
//!   ([`proxy`]) and the cluster DNS server ([`dns`]); [`attach`] plugs sandboxes into it.

pub mod attach;
pub mod backoff;
pub mod context;
pub mod daemon;
pub mod dns;
pub mod docker;
mod docker_model;
pub mod drift;
pub mod endpoint;
pub mod env;
pub mod events;
pub mod fake;
pub mod labels;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod objects;
pub mod pod;
pub mod podnet;
pub mod podspec;
pub mod probe;
pub mod projected;
pub mod proxy;
pub mod quantity;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod services;
pub mod status;
pub mod sync;
pub mod worker;

pub use docker::DockerRuntime;
pub use runtime::{ContainerRuntime, RuntimeError};
