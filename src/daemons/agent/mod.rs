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

pub mod backoff;
pub mod docker;
mod docker_model;
pub mod drift;
pub mod endpoint;
pub mod env;
pub mod fake;
pub mod labels;
pub mod pod;
pub mod podspec;
pub mod probe;
pub mod quantity;
pub mod runtime;
pub mod sandbox;
pub mod serve;

pub use docker::DockerRuntime;
pub use runtime::{ContainerRuntime, RuntimeError};
