//! The pod `restartPolicy` and the kubelet's crash back-off, as a pure state machine.
//!
//! The agent (not Docker's restart policy) decides whether an exited container comes back
//! and when: after the n-th consecutive crash it waits `initial · 2^(n-1)`, capped at `max`
//! (10 s doubling to 5 min by default), and reports `CrashLoopBackOff` while it waits. A
//! container that ran for `reset_after` before exiting starts the count afresh. Time is
//! passed in, so every transition is tested without sleeping.

use std::time::{Duration, Instant};

/// Kubernetes' `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit code.
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// From the pod spec; Kubernetes' default is `Always`.
    pub fn from_pod(policy: Option<&str>) -> RestartPolicy {
        match policy {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` is restarted.
    pub fn restarts(self, exit_code: i64) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Back-off settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The delay after the first crash.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the crash count.
    pub reset_after: Duration,
}

impl BackoffConfig {
    /// The wait after `failures` consecutive failures (crashes, or failed pulls): `initial`
    /// doubling, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// What to do about a container now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again now.
    StartNow,
    /// Wait; its waiting reason is `CrashLoopBackOff`.
    BackOff { remaining: Duration },
    /// It stays terminated (policy says so).
    StayTerminated,
    /// It is running; nothing to do.
    Running,
}

/// The restart state of one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartTracker {
    policy: RestartPolicy,
    config: BackoffConfig,
    /// Kubernetes' `restartCount`.
    pub restart_count: u32,
    consecutive_crashes: u32,
    state: TrackerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackerState {
    Running { since: Instant },
    Waiting { until: Instant },
    Terminated,
}

impl RestartTracker {
    /// A tracker for a container that started at `now`.
    pub fn started(policy: RestartPolicy, config: BackoffConfig, now: Instant) -> Self {
        RestartTracker {
            policy,
            config,
            restart_count: 0,
            consecutive_crashes: 0,
            state: TrackerState::Running { since: now },
        }
    }

    /// The delay after `crashes` consecutive crashes.
    fn delay(&self, crashes: u32) -> Duration {
        self.config.delay(crashes)
    }

    /// Records that the container exited at `now`.
    pub fn exited(&mut self, exit_code: i64, now: Instant) {
        let ran_long = matches!(self.state, TrackerState::Running { since }
            if now.saturating_duration_since(since) >= self.config.reset_after);
        if ran_long {
            self.consecutive_crashes = 0;
        }
        if !self.policy.restarts(exit_code) {
            self.state = TrackerState::Terminated;
            return;
        }
        self.consecutive_crashes += 1;
        let until = now + self.delay(self.consecutive_crashes);
        self.state = TrackerState::Waiting { until };
    }

    /// Records that the agent started the container again at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.restart_count += 1;
        self.state = TrackerState::Running { since: now };
    }

    /// What to do at `now`.
    pub fn decide(&self, now: Instant) -> RestartDecision {
        match self.state {
            TrackerState::Running { .. } => RestartDecision::Running,
            TrackerState::Terminated => RestartDecision::StayTerminated,
            TrackerState::Waiting { until } if now >= until => RestartDecision::StartNow,
            TrackerState::Waiting { until } => RestartDecision::BackOff {
                remaining: until - now,
            },
        }
    }

    /// The Kubernetes waiting reason while backing off.
    pub fn waiting_reason(&self, now: Instant) -> Option<&'static str> {
        matches!(self.decide(now), RestartDecision::BackOff { .. }).then_some("CrashLoopBackOff")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn crash_loop(tracker: &mut RestartTracker, mut now: Instant, crashes: usize) -> Vec<u64> {
        let mut delays = Vec::new();
        for _ in 0..crashes {
            tracker.exited(1, now);
            let RestartDecision::BackOff { remaining } = tracker.decide(now) else {
                panic!("expected back-off");
            };
            delays.push(remaining.as_secs());
            now += remaining;
            assert_eq!(tracker.decide(now), RestartDecision::StartNow);
            tracker.restarted(now);
            now += S(1);
        }
        delays
    }

    #[test]
    fn crashes_back_off_from_ten_seconds_doubling_to_five_minutes() {
        let now = Instant::now();
        let mut t = RestartTracker::started(RestartPolicy::Always, BackoffConfig::default(), now);
        let delays = crash_loop(&mut t, now, 8);
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(t.restart_count, 8);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let now = Instant::now();
        let mut t = RestartTracker::started(RestartPolicy::Always, BackoffConfig::default(), now);
        crash_loop(&mut t, now, 3);
        let later = now + S(3600);
        t.restarted(later);
        t.exited(1, later + S(601));
        assert_eq!(
            t.decide(later + S(601)),
            RestartDecision::BackOff { remaining: S(10) }
        );
        assert_eq!(t.waiting_reason(later + S(601)), Some("CrashLoopBackOff"));
    }

    #[test]
    fn policies_decide_which_exits_restart() {
        let now = Instant::now();
        let config = BackoffConfig::default();
        let mut on_failure = RestartTracker::started(RestartPolicy::OnFailure, config, now);
        on_failure.exited(0, now);
        assert_eq!(on_failure.decide(now), RestartDecision::StayTerminated);
        let mut on_failure = RestartTracker::started(RestartPolicy::OnFailure, config, now);
        on_failure.exited(2, now);
        assert!(matches!(
            on_failure.decide(now),
            RestartDecision::BackOff { .. }
        ));
        let mut never = RestartTracker::started(RestartPolicy::Never, config, now);
        never.exited(2, now);
        assert_eq!(never.decide(now), RestartDecision::StayTerminated);
        assert_eq!(RestartPolicy::from_pod(None), RestartPolicy::Always);
    }

    #[test]
    fn failures_wait_from_initial_doubling_up_to_max() {
        let config = BackoffConfig::default();
        let waits: Vec<u64> = (1..=7).map(|n| config.delay(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(config.delay(200), Duration::from_secs(300), "no overflow");
    }

    #[test]
    fn configured_back_off_is_honoured() {
        let now = Instant::now();
        let config = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(250),
            reset_after: S(1),
        };
        let mut t = RestartTracker::started(RestartPolicy::Always, config, now);
        t.exited(1, now);
        assert_eq!(
            t.decide(now),
            RestartDecision::BackOff {
                remaining: Duration::from_millis(100)
            }
        );
        t.restarted(now);
        t.exited(1, now);
        t.restarted(now);
        t.exited(1, now);
        assert_eq!(
            t.decide(now),
            RestartDecision::BackOff {
                remaining: Duration::from_millis(250)
            }
        );
    }
}
