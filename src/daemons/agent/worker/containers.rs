//! One container of a pod worker's pass: create it, restart it by policy with back-off,
//! and repair drift (stopped, removed or changed outside berth). The kubelet's rules: each
//! restart is a new container, and the previous one stays for `logs --previous`.

use std::time::{Duration, Instant};

use super::events::{EventType, PodRef};
use super::metrics::DriftKind;
use super::{PodWorker, SyncError, attempt, describe_state, label, latest_two};
use crate::daemons::agent::pod::backoff::{RestartDecision, RestartPolicy, RestartTracker};
use crate::daemons::agent::pod::podspec::{ContainerPlan, PodPlan, container_name};
use crate::daemons::agent::pod::status::Waiting;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, PullPolicy, RuntimeError,
};

/// What one container's step did.
pub(super) struct Step {
    pub acted: bool,
    pub wake: Option<Duration>,
}

impl Step {
    fn idle() -> Step {
        Step {
            acted: false,
            wake: None,
        }
    }
    fn acted() -> Step {
        Step {
            acted: true,
            wake: None,
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
        let (latest, _) = latest_two(observed, &c.name, role);
        // The newest container the worker saw is gone (the one before may remain): drift.
        let removed = self
            .known
            .get(&c.name)
            .filter(|(id, _)| !observed.iter().any(|o| &o.id == id))
            .filter(|(id, _)| !self.removed_ids.contains(id))
            .map(|(_, a)| (*a).max(latest.map_or(0, attempt)));
        let latest = latest.filter(|_| removed.is_none());
        let Some(latest) = latest else {
            let drift = removed;
            if drift.is_some() {
                let message = format!("container {} was removed outside berth", c.name);
                self.detected(pref, DriftKind::Removed, Some(&c.name), message);
            }
            let next = drift.map_or(0, |a| a + 1);
            let started = self.start_new(pref, plan, c, next, role).await?;
            if started.acted && drift.is_some() {
                let message = format!("recreated container {} (attempt {next})", c.name);
                self.repaired(pref, DriftKind::Removed, Some(&c.name), message);
            }
            return Ok(started);
        };
        let found = label(latest, labels::SPEC_HASH);
        if found != c.spec_hash {
            let message = format!(
                "container {} no longer matches its spec (spec hash {found}, expected {})",
                c.name, c.spec_hash
            );
            self.detected(pref, DriftKind::Changed, Some(&c.name), message);
            self.kill(pref, latest, "its configuration changed").await?;
            let started = self
                .start_new(pref, plan, c, attempt(latest) + 1, role)
                .await?;
            if started.acted {
                let message = format!("recreated container {} from its spec", c.name);
                self.repaired(pref, DriftKind::Changed, Some(&c.name), message);
            }
            return Ok(started);
        }
        match latest.state.clone() {
            ContainerState::Running => {
                self.waiting.remove(&c.name);
                self.trackers
                    .entry(c.name.clone())
                    .or_insert_with(|| RestartTracker::started(restart, self.ctx.backoff, now));
                Ok(Step::idle())
            }
            ContainerState::Created => {
                self.ctx.runtime.start_container(&latest.id).await?;
                Ok(Step::acted())
            }
            ContainerState::Exited { exit_code, .. } => {
                if let Some(action) = self.ctx.stopped_externally(&latest.id) {
                    if restart != RestartPolicy::Never && !self.exits_seen.contains(&latest.id) {
                        self.exits_seen.insert(latest.id.clone());
                        let message = format!(
                            "container {} was stopped outside berth (docker {action}; {})",
                            c.name,
                            describe_state(&latest.state)
                        );
                        self.detected(pref, DriftKind::Stopped, Some(&c.name), message);
                        let started = self
                            .start_new(pref, plan, c, attempt(latest) + 1, role)
                            .await?;
                        if started.acted {
                            let message = format!("restarted container {}", c.name);
                            self.repaired(pref, DriftKind::Stopped, Some(&c.name), message);
                        }
                        return Ok(started);
                    }
                }
                let tracker = self
                    .trackers
                    .entry(c.name.clone())
                    .or_insert_with(|| RestartTracker::started(restart, self.ctx.backoff, now));
                if self.exits_seen.insert(latest.id.clone()) {
                    tracker.exited(exit_code, now);
                }
                match tracker.decide(now) {
                    RestartDecision::StartNow => {
                        let step = self
                            .start_new(pref, plan, c, attempt(latest) + 1, role)
                            .await?;
                        if step.acted {
                            if let Some(t) = self.trackers.get_mut(&c.name) {
                                t.restarted(now);
                            }
                        }
                        Ok(step)
                    }
                    RestartDecision::BackOff { remaining } => {
                        let message = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            remaining.as_secs().max(1),
                            c.name,
                            pref.name,
                            pref.namespace,
                            pref.uid
                        );
                        if self.backoff_reported.insert(latest.id.clone()) {
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
                        Ok(Step {
                            acted: false,
                            wake: Some(remaining),
                        })
                    }
                    RestartDecision::StayTerminated | RestartDecision::Running => {
                        self.waiting.remove(&c.name);
                        Ok(Step::idle())
                    }
                }
            }
            ContainerState::Restarting | ContainerState::Other(_) => Ok(Step {
                acted: false,
                wake: Some(Duration::from_secs(1)),
            }),
        }
    }

    /// Stops and removes a container the agent replaces.
    async fn kill(&mut self, pref: &PodRef, c: &ContainerInfo, why: &str) -> Result<(), SyncError> {
        let name = label(c, labels::CONTAINER_NAME).to_string();
        self.ctx.stopping(&c.id);
        self.removed_ids.insert(c.id.clone());
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

    /// Creates and starts attempt `n` of a container, then removes attempts older than the
    /// previous one. A failure becomes the container's waiting reason and is retried later.
    async fn start_new(
        &mut self,
        pref: &PodRef,
        plan: &PodPlan,
        c: &ContainerPlan,
        n: u32,
        role: Role,
    ) -> Result<Step, SyncError> {
        let now = Instant::now();
        // A fixed spec (say, a corrected image) does not wait out the old one's back-off.
        if self
            .failed_starts
            .get(&c.name)
            .is_some_and(|(hash, _)| *hash != c.spec_hash)
        {
            self.failed_starts.remove(&c.name);
            self.waiting.remove(&c.name);
        }
        if let Some((_, retry_at)) = self.waiting.get(&c.name) {
            if *retry_at > now {
                return Ok(Step {
                    acted: false,
                    wake: Some(*retry_at - now),
                });
            }
        }
        let mut spec = c.spec.clone();
        spec.name = container_name(&plan.identity, &c.name, n);
        spec.labels.insert(labels::ATTEMPT.into(), n.to_string());
        let rt = &self.ctx.runtime;
        let result = async {
            rt.ensure_image(&spec.image, c.pull_policy).await?;
            let pulled = match c.pull_policy {
                PullPolicy::Always => format!("Successfully pulled image {:?}", spec.image),
                _ => format!(
                    "Container image {:?} already present on machine",
                    spec.image
                ),
            };
            self.ctx
                .events
                .pod(pref, EventType::Normal, "Pulled", Some(&c.name), pulled);
            let id = match rt.create_container(&spec).await {
                Err(RuntimeError::NameConflict { .. }) => {
                    // A leftover of the same name (the agent died between create and
                    // start, or it was removed from view) is replaced.
                    if let Some(old) = rt.inspect_container(&spec.name).await? {
                        self.ctx.stopping(&old.id);
                        rt.remove_container(&old.id).await?;
                    }
                    rt.create_container(&spec).await?
                }
                other => other?,
            };
            self.ctx.events.pod(
                pref,
                EventType::Normal,
                "Created",
                Some(&c.name),
                format!("Created container {}", c.name),
            );
            rt.start_container(&id).await?;
            self.ctx.events.pod(
                pref,
                EventType::Normal,
                "Started",
                Some(&c.name),
                format!("Started container {}", c.name),
            );
            Ok::<_, RuntimeError>(id)
        }
        .await;
        match result {
            Ok(_) => {
                self.waiting.remove(&c.name);
                self.failed_starts.remove(&c.name);
                if n >= 2 {
                    self.prune(&plan.identity.uid, &c.name, role, n).await?;
                }
                Ok(Step::acted())
            }
            Err(e) => {
                // A container made but not started (its command is missing, say) goes, so
                // the next try comes through here again, after the back-off.
                if let Ok(Some(made)) = rt.inspect_container(&spec.name).await
                    && made.state == ContainerState::Created
                {
                    self.ctx.stopping(&made.id);
                    self.removed_ids.insert(made.id.clone());
                    if let Err(e) = rt.remove_container(&made.id).await {
                        tracing::warn!(error = %e, container = %spec.name, "cannot remove a container that did not start");
                    }
                }
                // The engine's words, without any environment value (some come from Secrets).
                let detail = without_env_values(e.detail(), &spec.env);
                // A pull that failed before fails again as ImagePullBackOff, as in Kubernetes.
                let pulled_before = self.waiting.get(&c.name).is_some_and(|(w, _)| {
                    matches!(w.reason.as_str(), "ErrImagePull" | "ImagePullBackOff")
                });
                let reason = match e.reason() {
                    Some("ErrImagePull") if pulled_before => "ImagePullBackOff",
                    other => other.unwrap_or("CreateContainerError"),
                };
                self.ctx.events.pod(
                    pref,
                    EventType::Warning,
                    "Failed",
                    Some(&c.name),
                    format!("Error: {detail}"),
                );
                // Failed starts back off as crashes do (10 s doubling to 5 min by default);
                // an image that may not be pulled is looked for again every 10 s, as the
                // kubelet does on each sync, for one loaded into the engine by hand.
                let (_, failures) = self
                    .failed_starts
                    .entry(c.name.clone())
                    .or_insert_with(|| (c.spec_hash.clone(), 0));
                *failures += 1;
                let delay = match reason {
                    "ErrImageNeverPull" => super::RETRY_START,
                    _ => self.ctx.backoff.delay(*failures),
                };
                if reason == "ImagePullBackOff" {
                    self.ctx.events.pod(
                        pref,
                        EventType::Normal,
                        "BackOff",
                        Some(&c.name),
                        format!("Back-off pulling image {:?}", spec.image),
                    );
                }
                let waiting = Waiting {
                    reason: reason.into(),
                    message: Some(detail),
                };
                self.waiting.insert(c.name.clone(), (waiting, now + delay));
                Ok(Step {
                    acted: true,
                    wake: Some(delay),
                })
            }
        }
    }

    /// Keeps the newest two attempts of a container (current and previous).
    async fn prune(
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
        for old in all
            .iter()
            .filter(|o| Role::parse(label(o, labels::ROLE)) == Some(role))
        {
            if attempt(old) + 1 < newest {
                self.ctx.stopping(&old.id);
                self.removed_ids.insert(old.id.clone());
                self.ctx.runtime.remove_container(&old.id).await?;
            }
        }
        Ok(())
    }
}

/// `text` with every environment value of three or more characters masked: an engine's
/// message may quote a container's configuration, and values may come from Secrets.
fn without_env_values(mut text: String, env: &[(String, String)]) -> String {
    let mut values: Vec<&str> = env
        .iter()
        .map(|(_, v)| v.as_str())
        .filter(|v| v.len() >= 3)
        .collect();
    // Longest first, so a value containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values {
        if text.contains(value) {
            text = text.replace(value, "(an environment value)");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::without_env_values;

    #[test]
    fn engine_messages_lose_environment_values() {
        let env = vec![
            ("TOKEN".to_string(), "s3cr3t-token".to_string()),
            ("PART".to_string(), "s3cr3t".to_string()),
            ("N".to_string(), "1".to_string()),
        ];
        let text = "invalid environment variable: TOKEN=s3cr3t-token (1 of 1)".to_string();
        assert_eq!(
            without_env_values(text, &env),
            "invalid environment variable: TOKEN=(an environment value) (1 of 1)"
        );
    }
}
