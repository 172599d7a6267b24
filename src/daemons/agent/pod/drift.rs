//! Drift: how the containers the engine reports differ from what a pod's plan wants and
//! from what the agent last saw and did itself.
//!
//! Pure: [`sandbox`] and [`container`] say where each of a pod's containers stands, and the
//! pod worker acts on it (recreate, restart by policy, replace); [`orphans`] finds the
//! containers of pods this node no longer runs, which the sync loop removes. Both report
//! drift as `DriftDetected` / `DriftRepaired` events and count it in `/metrics`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::backoff::RestartPolicy;
use super::podspec::{ContainerPlan, PodPlan};
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerInfo, ContainerState};

/// What kind of drift was found (the label of the `/metrics` counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// A container stopped or killed outside berth.
    Stopped,
    /// A container removed outside berth.
    Removed,
    /// A container whose configuration no longer matches its spec hash.
    Changed,
    /// A berth container whose pod no longer exists on this node.
    Orphan,
}

impl DriftKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [DriftKind; 4] = [
        DriftKind::Stopped,
        DriftKind::Removed,
        DriftKind::Changed,
        DriftKind::Orphan,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Stopped => "stopped",
            DriftKind::Removed => "removed",
            DriftKind::Changed => "changed",
            DriftKind::Orphan => "orphan",
        }
    }
}

/// One difference between what a pod wants and what the engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// The newest container of that name (or the sandbox) was removed outside berth.
    Removed { container: String },
    /// It was stopped outside berth; `by` is the engine's action (`kill`, `stop`) when known.
    Stopped {
        container: String,
        state: ContainerState,
        by: Option<String>,
    },
    /// Its labels carry another spec hash than the plan: changed behind berth's back, or
    /// the pod spec changed.
    SpecChanged {
        container: String,
        expected: String,
        found: String,
    },
    /// The sandbox lost the network interface the agent plugged in (`veth` is the node's end).
    LostInterface { veth: String },
}

impl Drift {
    /// The metric kind.
    pub fn kind(&self) -> DriftKind {
        match self {
            Drift::Removed { .. } => DriftKind::Removed,
            Drift::Stopped { .. } => DriftKind::Stopped,
            Drift::SpecChanged { .. } | Drift::LostInterface { .. } => DriftKind::Changed,
        }
    }
}

fn is_sandbox(container: &str) -> bool {
    container == labels::SANDBOX_CONTAINER
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Removed { container } if is_sandbox(container) => {
                write!(f, "the pod sandbox was removed outside berth")
            }
            Drift::Removed { container } => {
                write!(f, "container {container} was removed outside berth")
            }
            Drift::Stopped {
                container, state, ..
            } if is_sandbox(container) => {
                write!(f, "the pod sandbox was stopped outside berth ({state})")
            }
            Drift::Stopped {
                container,
                state,
                by,
            } => match by {
                Some(by) => write!(
                    f,
                    "container {container} was stopped outside berth (docker {by}; {state})"
                ),
                None => write!(
                    f,
                    "container {container} was stopped outside berth ({state})"
                ),
            },
            Drift::SpecChanged {
                container,
                expected,
                found,
            } => {
                let what = match is_sandbox(container) {
                    true => "the pod sandbox".to_string(),
                    false => format!("container {container}"),
                };
                write!(
                    f,
                    "{what} no longer matches its spec (spec hash {found}, expected {expected})"
                )
            }
            Drift::LostInterface { veth } => write!(
                f,
                "the pod sandbox lost its network interface (the node's end, {veth}, is gone)"
            ),
        }
    }
}

fn label<'a>(c: &'a ContainerInfo, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or("")
}

/// How many times the agent had made this container before (its `attempt` label).
pub fn attempt(c: &ContainerInfo) -> u32 {
    label(c, labels::ATTEMPT).parse().unwrap_or(0)
}

/// The newest and the previous container of `name` in `role` (restarts are new containers;
/// the previous one stays for `logs --previous`).
pub fn latest_two<'a>(
    observed: &'a [ContainerInfo],
    name: &str,
    role: Role,
) -> (Option<&'a ContainerInfo>, Option<&'a ContainerInfo>) {
    let mut mine: Vec<&ContainerInfo> = observed
        .iter()
        .filter(|c| label(c, labels::CONTAINER_NAME) == name)
        .filter(|c| Role::parse(label(c, labels::ROLE)) == Some(role))
        .collect();
    mine.sort_by_key(|c| std::cmp::Reverse(attempt(c)));
    (mine.first().copied(), mine.get(1).copied())
}

/// What the agent remembers of one pod's containers from pass to pass, so that it tells a
/// container removed or stopped behind its back from one it removed or saw exit itself.
#[derive(Debug, Default)]
pub struct Seen {
    /// The newest container of each name last seen: its id and attempt.
    newest: HashMap<String, (String, u32)>,
    /// Containers the agent removed itself: their going is not drift.
    removed: HashSet<String>,
    /// Containers whose exit the agent has acted on.
    exits: HashSet<String>,
    /// The attempt to make next of each container that went with a replaced sandbox: the
    /// pod's containers come back as their next attempts, so their restart counts go on.
    after_sandbox: HashMap<String, u32>,
}

impl Seen {
    /// Notes the newest container of each name in `observed`.
    pub fn remember(&mut self, observed: &[ContainerInfo]) {
        for c in observed {
            let name = label(c, labels::CONTAINER_NAME).to_string();
            let n = attempt(c);
            if self.newest.get(&name).is_none_or(|(_, a)| *a <= n) {
                self.newest.insert(name, (c.id.clone(), n));
            }
        }
    }

    /// Notes that the agent itself removes container `id`.
    pub fn removing(&mut self, id: &str) {
        self.removed.insert(id.to_string());
    }

    /// Notes that the agent acts on the exit of container `id`; false when it did already.
    pub fn first_exit(&mut self, id: &str) -> bool {
        self.exits.insert(id.to_string())
    }

    /// Forgets the pod's containers but the sandbox: they went with an old sandbox (`gone`
    /// lists what was removed with it) and come back as new attempts, which is not drift;
    /// each the attempt after the newest of its name, seen before or among `gone`.
    pub fn sandbox_replaced(&mut self, gone: &[ContainerInfo]) {
        let before = self.newest.iter().map(|(name, (_, a))| (name.as_str(), *a));
        let removed = gone
            .iter()
            .map(|c| (label(c, labels::CONTAINER_NAME), attempt(c)));
        for (name, a) in before.chain(removed) {
            if !is_sandbox(name) {
                let next = self.after_sandbox.entry(name.to_string()).or_insert(0);
                *next = (*next).max(a + 1);
            }
        }
        self.newest.retain(|name, _| is_sandbox(name));
    }

    /// The attempt to make of container `name` when none of it is left to restart: 0 for a
    /// new pod, else the one after the newest the agent saw, in this sandbox or one before.
    pub fn next_attempt(&self, name: &str) -> u32 {
        let after_newest = self.newest.get(name).map(|(_, a)| a + 1);
        let after_sandbox = self.after_sandbox.get(name).copied();
        after_newest.max(after_sandbox).unwrap_or(0)
    }

    /// The attempt of the newest container of `name` seen, when it has vanished from
    /// `observed` without the agent removing it.
    fn vanished(&self, name: &str, observed: &[ContainerInfo]) -> Option<u32> {
        let (id, attempt) = self.newest.get(name)?;
        let gone = !observed.iter().any(|o| &o.id == id) && !self.removed.contains(id);
        gone.then_some(*attempt)
    }
}

/// Where a pod's sandbox stands.
#[derive(Debug, PartialEq, Eq)]
pub enum SandboxStanding<'a> {
    /// It runs as planned.
    Running(&'a ContainerInfo),
    /// A sandbox is to be made, attempt `attempt`, the pod's other containers going with the
    /// old one (as in Kubernetes); `drift` says why, when the old one drifted.
    Make { attempt: u32, drift: Option<Drift> },
}

/// Where the sandbox of `plan` stands. `lost_interface` tells whether a running sandbox has
/// lost its network interface (the one fact not in the listing).
pub fn sandbox<'a>(
    plan: &PodPlan,
    observed: &'a [ContainerInfo],
    seen: &Seen,
    lost_interface: impl Fn(&ContainerInfo) -> Option<String>,
) -> SandboxStanding<'a> {
    let name = labels::SANDBOX_CONTAINER;
    let (current, _) = latest_two(observed, name, Role::Sandbox);
    let expected = plan.sandbox.labels.get(labels::SPEC_HASH);
    let expected = expected.cloned().unwrap_or_default();
    let drift = match current {
        Some(c) if label(c, labels::SPEC_HASH) != expected => Some(Drift::SpecChanged {
            container: name.to_string(),
            expected,
            found: label(c, labels::SPEC_HASH).to_string(),
        }),
        Some(c) => match lost_interface(c) {
            Some(veth) => Some(Drift::LostInterface { veth }),
            None if c.state == ContainerState::Running => return SandboxStanding::Running(c),
            None => Some(Drift::Stopped {
                container: name.to_string(),
                state: c.state.clone(),
                by: None,
            }),
        },
        None => seen.vanished(name, observed).map(|_| Drift::Removed {
            container: name.to_string(),
        }),
    };
    let before = current
        .map(attempt)
        .or_else(|| seen.newest.get(name).map(|(_, a)| *a));
    SandboxStanding::Make {
        attempt: before.map_or(0, |a| a + 1),
        drift,
    }
}

/// Where one wanted container stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing<'a> {
    /// None is left to restart (none made yet, the agent removed the last itself, or they
    /// went with a replaced sandbox): make attempt `attempt` ([`Seen::next_attempt`]).
    Absent { attempt: u32 },
    /// The newest was removed outside berth: make attempt `attempt`.
    Removed { drift: Drift, attempt: u32 },
    /// It no longer matches its spec: replace it.
    Changed {
        drift: Drift,
        current: &'a ContainerInfo,
    },
    /// It was stopped outside berth: start the next attempt at once, whatever the back-off.
    Stopped {
        drift: Drift,
        current: &'a ContainerInfo,
    },
    /// It runs.
    Running(&'a ContainerInfo),
    /// It was made and never started.
    Created(&'a ContainerInfo),
    /// It exited by itself: the restart policy decides.
    Exited {
        current: &'a ContainerInfo,
        exit_code: i64,
    },
    /// The engine is busy with it (restarting, removing): look again soon.
    Busy(&'a ContainerInfo),
}

/// Where container `want` of a pod stands. `stopped_by` gives the engine's action when a
/// container was stopped by someone other than the agent; a stop counts as drift only when
/// the policy would bring the container back and its exit is news.
pub fn container<'a>(
    want: &ContainerPlan,
    role: Role,
    observed: &'a [ContainerInfo],
    seen: &Seen,
    stopped_by: impl Fn(&str) -> Option<String>,
    restart: RestartPolicy,
) -> Standing<'a> {
    let (latest, _) = latest_two(observed, &want.name, role);
    // The newest container the agent saw is gone (the one before may remain).
    if let Some(before) = seen.vanished(&want.name, observed) {
        return Standing::Removed {
            drift: Drift::Removed {
                container: want.name.clone(),
            },
            attempt: before.max(latest.map_or(0, attempt)) + 1,
        };
    }
    let Some(current) = latest else {
        return Standing::Absent {
            attempt: seen.next_attempt(&want.name),
        };
    };
    let found = label(current, labels::SPEC_HASH);
    if found != want.spec_hash {
        let drift = Drift::SpecChanged {
            container: want.name.clone(),
            expected: want.spec_hash.clone(),
            found: found.to_string(),
        };
        return Standing::Changed { drift, current };
    }
    match current.state {
        ContainerState::Running => Standing::Running(current),
        ContainerState::Created => Standing::Created(current),
        ContainerState::Exited { exit_code, .. } => {
            let news = restart != RestartPolicy::Never && !seen.exits.contains(&current.id);
            match stopped_by(&current.id).filter(|_| news) {
                Some(by) => Standing::Stopped {
                    drift: Drift::Stopped {
                        container: want.name.clone(),
                        state: current.state.clone(),
                        by: Some(by),
                    },
                    current,
                },
                None => Standing::Exited { current, exit_code },
            }
        }
        ContainerState::Restarting | ContainerState::Other(_) => Standing::Busy(current),
    }
}

/// The containers in `observed` whose pod this node does not run (`runs(uid)` is false),
/// by pod uid.
pub fn orphans(
    observed: &[ContainerInfo],
    runs: impl Fn(&str) -> bool,
) -> BTreeMap<&str, Vec<&ContainerInfo>> {
    let mut by_pod: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in observed {
        let uid = label(c, labels::POD_UID);
        if !runs(uid) {
            by_pod.entry(uid).or_default().push(c);
        }
    }
    by_pod
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
