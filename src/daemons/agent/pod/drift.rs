//! Drift: how the containers the engine reports differ from what a pod's plan wants.
//!
//! Pure comparison of a [`PodPlan`] with a label listing ([`ContainerInfo`]s); the sync loop
//! decides what to do about each finding (restart per policy, recreate, remove) and reports
//! it as `DriftDetected` / `DriftRepaired` events.

use std::collections::BTreeSet;
use std::fmt;

use super::podspec::PodPlan;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerInfo, ContainerState};

/// One difference between desired and actual state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A wanted container (or the sandbox) does not exist: removed outside berth.
    Missing { container: String },
    /// It exists but is not running: stopped, killed or crashed.
    NotRunning {
        container: String,
        id: String,
        state: ContainerState,
    },
    /// Its labels carry another spec hash than the plan: changed behind berth's back, or
    /// the pod spec changed.
    SpecChanged {
        container: String,
        id: String,
        expected: String,
        found: String,
    },
    /// A berth container whose pod is not (or no longer) bound to this node.
    Orphan {
        id: String,
        pod: String,
        container: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing { container } => write!(f, "container {container:?} was removed"),
            Drift::NotRunning {
                container, state, ..
            } => write!(
                f,
                "container {container:?} is no longer running ({state:?})"
            ),
            Drift::SpecChanged {
                container,
                expected,
                found,
                ..
            } => write!(
                f,
                "container {container:?} has spec hash {found}, expected {expected}"
            ),
            Drift::Orphan { pod, container, .. } => {
                write!(
                    f,
                    "container {container:?} belongs to pod {pod}, which is gone"
                )
            }
        }
    }
}

fn label<'a>(c: &'a ContainerInfo, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or("")
}

/// Compares a pod's sandbox and app containers with `observed` (the pod's label listing).
/// Init containers are expected to have exited and are not compared. When several
/// containers share a name (restarts), the highest attempt counts.
pub fn pod_drift(plan: &PodPlan, observed: &[ContainerInfo]) -> Vec<Drift> {
    let wanted = std::iter::once((labels::SANDBOX_CONTAINER, &plan.sandbox))
        .chain(plan.containers.iter().map(|c| (c.name.as_str(), &c.spec)));
    let mut drift = Vec::new();
    for (name, spec) in wanted {
        let current = observed
            .iter()
            .filter(|c| label(c, labels::POD_UID) == plan.identity.uid)
            .filter(|c| label(c, labels::CONTAINER_NAME) == name)
            .filter(|c| Role::parse(label(c, labels::ROLE)) != Some(Role::Init))
            .max_by_key(|c| label(c, labels::ATTEMPT).parse::<u32>().unwrap_or(0));
        let Some(current) = current else {
            drift.push(Drift::Missing {
                container: name.to_string(),
            });
            continue;
        };
        let expected = spec
            .labels
            .get(labels::SPEC_HASH)
            .cloned()
            .unwrap_or_default();
        let found = label(current, labels::SPEC_HASH);
        if found != expected {
            drift.push(Drift::SpecChanged {
                container: name.to_string(),
                id: current.id.clone(),
                expected,
                found: found.to_string(),
            });
        } else if current.state != ContainerState::Running {
            drift.push(Drift::NotRunning {
                container: name.to_string(),
                id: current.id.clone(),
                state: current.state.clone(),
            });
        }
    }
    drift
}

/// Containers in `observed` whose pod uid is not among `desired_uids`.
pub fn orphans(desired_uids: &BTreeSet<String>, observed: &[ContainerInfo]) -> Vec<Drift> {
    observed
        .iter()
        .filter(|c| !desired_uids.contains(label(c, labels::POD_UID)))
        .map(|c| Drift::Orphan {
            id: c.id.clone(),
            pod: format!(
                "{}/{}",
                label(c, labels::POD_NAMESPACE),
                label(c, labels::POD_NAME)
            ),
            container: label(c, labels::CONTAINER_NAME).to_string(),
        })
        .collect()
}
