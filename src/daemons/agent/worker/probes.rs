//! Startup, liveness and readiness probes of a pod worker: each running container's probes
//! run on their period after `initialDelaySeconds`; until a startup probe passes the other
//! two wait and the container is not `started`; readiness decides the container's `ready`;
//! a liveness failure, or a startup probe out of attempts, stops the container so the
//! restart policy brings it back, with `Unhealthy` and `Killing` events as the kubelet
//! writes them.
//!
//! A readiness probe's first attempt runs the moment the container starts, usually before
//! its server listens. Until it first passes, a failed readiness probe is therefore tried
//! again after a short back-off ([`settle_delay`]) rather than a whole period, and those
//! early failures write at most one `Unhealthy` event per period: a container is Ready
//! within a fraction of a second of answering, where waiting a period would add up to
//! `periodSeconds` to every start. Startup probes keep their period (their failures count
//! toward the container's start budget), and so does every probe once it has passed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use super::events::{EventType, PodRef};
use super::{PodWorker, SyncError};
use crate::daemons::agent::pod::drift::latest_two;
use crate::daemons::agent::pod::probe::{ProbeOutcome, ProbeTracker, run_probe};
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerInfo, ContainerRuntime, ContainerState};

/// One probe of one container instance.
pub(super) struct ProbeState {
    container_id: String,
    tracker: ProbeTracker,
    next_at: Instant,
    /// A readiness probe that has never passed: its failures so far (quick retries).
    settling: Option<u32>,
    /// While settling: no `Unhealthy` event before this instant.
    quiet_until: Option<Instant>,
}

/// The first quick retry of a readiness probe that has not passed yet.
const SETTLE_FIRST: Duration = Duration::from_millis(50);

/// How long after its `failures`-th failure a readiness probe that has never passed runs
/// again: 50 ms doubling, never longer than its period.
pub(super) fn settle_delay(failures: u32, period: Duration) -> Duration {
    SETTLE_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(period)
}

/// The container a probe runs against.
struct Target<'a> {
    container: &'a Container,
    running: &'a ContainerInfo,
    pod_ip: Option<&'a str>,
    pod_grace: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |s| s.max(0) as u64))
}

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Runs the probes that are due; returns when the next one is.
    pub(super) async fn run_probes(
        &mut self,
        pod: &Pod,
        pref: &PodRef,
        observed: &[ContainerInfo],
        pod_ip: Option<&str>,
    ) -> Result<Option<Duration>, SyncError> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(None);
        };
        let mut next: Option<Duration> = None;
        let pod_grace = spec.termination_grace_period_seconds.unwrap_or(30);
        for c in &spec.containers {
            let (latest, _) = latest_two(observed, &c.name, Role::App);
            let Some(latest) = latest.filter(|l| l.state == ContainerState::Running) else {
                self.probes.retain(|(name, _), _| name != &c.name);
                continue;
            };
            let starting = c.startup_probe.is_some() && !self.started_ok.contains(&latest.id);
            let kinds: &[(ProbeKind, &Option<Probe>)] = if starting {
                &[(ProbeKind::Startup, &c.startup_probe)]
            } else {
                &[
                    (ProbeKind::Readiness, &c.readiness_probe),
                    (ProbeKind::Liveness, &c.liveness_probe),
                ]
            };
            for &(kind, probe) in kinds {
                let Some(probe) = probe else { continue };
                let target = Target {
                    container: c,
                    running: latest,
                    pod_ip,
                    pod_grace,
                };
                if let Some(wait) = self.probe_once(pref, &target, kind, probe).await? {
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                }
            }
        }
        Ok(next)
    }

    async fn probe_once(
        &mut self,
        pref: &PodRef,
        target: &Target<'_>,
        kind: ProbeKind,
        probe: &Probe,
    ) -> Result<Option<Duration>, SyncError> {
        let (c, running, pod_ip) = (target.container, target.running, target.pod_ip);
        let now = Instant::now();
        let key = (c.name.clone(), kind);
        let fresh = self
            .probes
            .get(&key)
            .is_none_or(|s| s.container_id != running.id);
        if fresh {
            let mut tracker = ProbeTracker::new(probe);
            if kind == ProbeKind::Liveness {
                // Alive until proven otherwise.
                tracker.record(&ProbeOutcome::Success);
            }
            let next_at = now + seconds(probe.initial_delay_seconds, 0);
            let readiness = kind == ProbeKind::Readiness;
            let state = ProbeState {
                container_id: running.id.clone(),
                tracker,
                next_at,
                settling: readiness.then_some(0),
                quiet_until: readiness.then_some(next_at + seconds(probe.period_seconds, 10)),
            };
            self.probes.insert(key.clone(), state);
        }
        let state = self.probes.get_mut(&key).expect("inserted above");
        if state.next_at > now {
            return Ok(Some(state.next_at - now));
        }
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        let ports: Vec<(String, u16)> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect();
        let outcome = run_probe(&self.ctx.runtime, &running.id, pod_ip, &ports, probe).await;
        let state = self.probes.get_mut(&key).expect("still there");
        let now = Instant::now();
        let quick = match (&outcome, state.settling) {
            (ProbeOutcome::Failure(_), Some(failures)) => {
                state.settling = Some(failures + 1);
                Some(settle_delay(failures + 1, period))
            }
            _ => {
                state.settling = None;
                None
            }
        };
        let wait = quick.unwrap_or(period);
        state.next_at = now + wait;
        let changed = state.tracker.record(&outcome);
        let passing = state.tracker.passing;
        let quiet = quick.is_some() && state.quiet_until.is_some_and(|t| now < t);
        if quick.is_some() && !quiet {
            state.quiet_until = Some(now + period);
        }
        if let (ProbeOutcome::Failure(message), false) = (&outcome, quiet) {
            self.ctx.events.pod(
                pref,
                EventType::Warning,
                "Unhealthy",
                Some(&c.name),
                format!("{} probe failed: {message}", kind.name()),
            );
        }
        if kind == ProbeKind::Readiness {
            if passing {
                self.ready.insert(running.id.clone());
            } else {
                self.ready.remove(&running.id);
            }
        }
        if kind == ProbeKind::Startup && passing {
            self.started_ok.insert(running.id.clone());
            self.probes
                .retain(|(n, k), _| n != &c.name || *k != ProbeKind::Startup);
            return Ok(Some(Duration::ZERO));
        }
        let exhausted = kind == ProbeKind::Startup && state.tracker.exhausted();
        if (kind == ProbeKind::Liveness && changed && !passing) || exhausted {
            let name = running
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            self.ctx.events.pod(
                pref,
                EventType::Normal,
                "Killing",
                Some(&name),
                format!(
                    "Container {name} failed {} probe, will be restarted",
                    kind.name().to_lowercase()
                ),
            );
            self.ctx.stopping(&running.id);
            // The probe's own grace period, else the pod's, as the kubelet uses them.
            let grace = probe
                .termination_grace_period_seconds
                .unwrap_or(target.pod_grace)
                .max(0);
            let grace = Duration::from_secs(grace as u64);
            self.ctx.runtime.stop_container(&running.id, grace).await?;
            self.probes.retain(|(n, _), _| n != &name);
            return Ok(Some(Duration::ZERO));
        }
        Ok(Some(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readiness_probe_not_yet_passed_retries_quickly_but_never_past_its_period() {
        let period = Duration::from_secs(2);
        let delays: Vec<u128> = (1..=8)
            .map(|n| settle_delay(n, period).as_millis())
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(
            settle_delay(u32::MAX, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
