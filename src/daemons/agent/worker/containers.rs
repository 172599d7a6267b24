//! One container of a pod worker's pass: acts on where the drift detector says it stands
//! (`pod::drift::container`): creates it, restarts it by policy with back-off, and repairs
//! drift (stopped, removed or changed outside berth). The kubelet's rules: each restart is
//! a new container, and the previous one stays for `logs --previous`.

use std::time::{Duration, Instant};

use super::events::{EventType, PodRef};
use super::{PodWorker, SyncError};
use crate::daemons::agent::pod::backoff::{RestartDecision, RestartPolicy};
use crate::daemons::agent::pod::drift::{self, Standing, attempt};
use crate::daemons::agent::pod::podspec::{ContainerPlan, PodPlan};
use crate::daemons::agent::pod::status::Waiting;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerInfo, ContainerRuntime, ContainerState};

/// What one container's step did.
pub(super) struct Step {
    pub acted: bool,
    pub wake: Option<Duration>,
}

impl Step {
    pub(super) fn idle() -> Step {
        Step {
            acted: false,
            wake: None,
        }
    }
    pub(super) fn acted() -> Step {
        Step {
            acted: true,
            wake: None,
        }
    }
    pub(super) fn wait(delay: Duration) -> Step {
        Step {
            acted: false,
            wake: Some(delay),
        }
    }
}

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    pub(super) async fn sync_container(
        &mut self,
        pref: &PodRef,
        plan: &PodPlan,
        c: &ContainerPlan,
        role: Role,
        observed: &[ContainerInfo],
        restart: RestartPolicy,
    ) -> Result<Step, SyncError> {
        let now = Instant::now();
        let ctx = self.ctx.clone();
        let stopped_by = |id: &str| ctx.stopped_externally(id);
        let name = Some(c.name.as_str());
        match drift::container(c, role, observed, &self.seen, stopped_by, restart) {
            Standing::Absent { attempt } => self.start_new(pref, plan, c, attempt, role).await,
            Standing::Removed { drift, attempt } => {
                self.detected(pref, &drift, name);
                let started = self.start_new(pref, plan, c, attempt, role).await?;
                if started.acted {
                    let message = format!("recreated container {} (attempt {attempt})", c.name);
                    self.repaired(pref, drift.kind(), name, message);
                }
                Ok(started)
            }
            Standing::Changed { drift, current } => {
                self.detected(pref, &drift, name);
                self.kill(pref, current, "its configuration changed")
                    .await?;
                let next = attempt(current) + 1;
                let started = self.start_new(pref, plan, c, next, role).await?;
                if started.acted {
                    let message = format!("recreated container {} from its spec", c.name);
                    self.repaired(pref, drift.kind(), name, message);
                }
                Ok(started)
            }
            Standing::Stopped { drift, current } => {
                self.seen.first_exit(&current.id);
                self.detected(pref, &drift, name);
                let next = attempt(current) + 1;
                let started = self.start_new(pref, plan, c, next, role).await?;
                if started.acted {
                    let message = format!("restarted container {}", c.name);
                    self.repaired(pref, drift.kind(), name, message);
                }
                Ok(started)
            }
            Standing::Running(_) => {
                self.waiting.remove(&c.name);
                self.tracker(&c.name, restart, now);
                Ok(Step::idle())
            }
            Standing::Created(current) => {
                self.ctx.runtime.start_container(&current.id).await?;
                Ok(Step::acted())
            }
            Standing::Exited { current, exit_code } => {
                let first = self.seen.first_exit(&current.id);
                let tracker = self.tracker(&c.name, restart, now);
                if first {
                    tracker.exited(exit_code, now);
                }
                match tracker.decide(now) {
                    RestartDecision::StartNow => {
                        let next = attempt(current) + 1;
                        let step = self.start_new(pref, plan, c, next, role).await?;
                        if step.acted
                            && let Some(t) = self.trackers.get_mut(&c.name)
                        {
                            t.restarted(now);
                        }
                        Ok(step)
                    }
                    RestartDecision::BackOff { remaining } => {
                        self.back_off(pref, c, current, remaining, now);
                        Ok(Step::wait(remaining))
                    }
                    RestartDecision::StayTerminated | RestartDecision::Running => {
                        self.waiting.remove(&c.name);
                        Ok(Step::idle())
                    }
                }
            }
            Standing::Busy(_) => Ok(Step::wait(Duration::from_secs(1))),
        }
    }

    /// A crashed container waits out its back-off: `CrashLoopBackOff`, and one `BackOff`
    /// event per crash.
    fn back_off(
        &mut self,
        pref: &PodRef,
        c: &ContainerPlan,
        current: &ContainerInfo,
        remaining: Duration,
        now: Instant,
    ) {
        let message = format!(
            "back-off {}s restarting failed container={} pod={}_{}({})",
            remaining.as_secs().max(1),
            c.name,
            pref.name,
            pref.namespace,
            pref.uid
        );
        if self.backoff_reported.insert(current.id.clone()) {
            self.ctx.events.pod(
                pref,
                EventType::Warning,
                "BackOff",
                Some(&c.name),
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    c.name, pref.name
                ),
            );
        }
        let waiting = Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(message),
        };
        self.waiting
            .insert(c.name.clone(), (waiting, now + remaining));
    }

    /// Stops and removes a container the agent replaces.
    async fn kill(&mut self, pref: &PodRef, c: &ContainerInfo, why: &str) -> Result<(), SyncError> {
        let name = c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        self.ctx.stopping(&c.id);
        self.seen.removing(&c.id);
        if c.state == ContainerState::Running {
            self.ctx.events.pod(
                pref,
                EventType::Normal,
                "Killing",
                Some(&name),
                format!("Stopping container {name}: {why}"),
            );
        }
        self.ctx
            .runtime
            .stop_container(&c.id, Duration::from_secs(10))
            .await?;
        self.ctx.runtime.remove_container(&c.id).await?;
        Ok(())
    }

    /// Keeps the newest two attempts of a container (current and previous).
    pub(super) async fn prune(
        &mut self,
        uid: &str,
        name: &str,
        role: Role,
        newest: u32,
    ) -> Result<(), SyncError> {
        let all = self
            .ctx
            .runtime
            .list_containers(&[(labels::POD_UID, uid), (labels::CONTAINER_NAME, name)])
            .await?;
        let of_role = |o: &&ContainerInfo| {
            o.labels.get(labels::ROLE).and_then(|r| Role::parse(r)) == Some(role)
        };
        for old in all.iter().filter(of_role) {
            if attempt(old) + 1 < newest {
                self.ctx.stopping(&old.id);
                self.seen.removing(&old.id);
                self.ctx.runtime.remove_container(&old.id).await?;
            }
        }
        Ok(())
    }
}
