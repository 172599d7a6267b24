//! Leader election among several masters with a `coordination.k8s.io/v1` Lease
//! (`kube-system/berth-controllers`), as client-go's leaderelection does it: the holder
//! renews `spec.renewTime` every retry period; another master takes the Lease over once it
//! has seen no change to it (its resourceVersion) for the lease duration, measured on its
//! own clock, so clocks need not agree. Every write is a compare-and-swap on the
//! resourceVersion, so two masters never both believe they took it.
//!
//! Fencing: a leader that has not renewed within the renew deadline (shorter than the lease
//! duration) closes its fence (`crate::cluster::api::leadership`) and stops its controllers,
//! before another master can take over. The fence is checked by every controller write, on
//! the monotonic clock, so a leader resumed from a long pause writes nothing even before
//! this loop wakes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::client::{LocalApi, path, resource};
use crate::cluster::api::leadership::{LEASE_NAME, LEASE_NAMESPACE};

/// The election's timings (`berth server --leader-elect-*`); Kubernetes' defaults.
#[derive(Debug, Clone, Copy)]
pub struct ElectionOptions {
    /// How long a follower waits, from the last change it saw, before taking the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower tries.
    pub retry_period: Duration,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        ElectionOptions {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl ElectionOptions {
    /// The timings must leave the leader time to stop before another can take over.
    pub fn check(&self) -> Result<(), String> {
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-elect-retry-period ({:?}) must be shorter than --leader-elect-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?}), or two masters could act at once",
                self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }
}

/// A Lease's `MicroTime`.
fn micro_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// What one try found.
enum Try {
    /// This master holds the Lease (took or renewed it).
    Leading,
    /// Another master holds it.
    Following,
}

/// The elector's memory between tries.
struct Elector {
    api: LocalApi,
    identity: String,
    options: ElectionOptions,
    /// The other holder's record as last seen: its resourceVersion and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Elector {
    fn lease_path(&self, name: Option<&str>) -> String {
        path(
            resource("coordination.k8s.io/v1", "Lease"),
            Some(LEASE_NAMESPACE),
            name,
            None,
        )
    }

    fn spec(&self, acquire: bool, transitions: i64) -> Value {
        let now = micro_time();
        let mut spec = json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.options.lease_duration.as_secs().max(1),
            "renewTime": now,
            "leaseTransitions": transitions,
        });
        if acquire {
            spec["acquireTime"] = json!(now);
        }
        spec
    }

    /// Takes or renews the Lease if it is free, expired or ours.
    async fn try_once(&mut self) -> Result<Try, String> {
        let lease = match self.api.get(&self.lease_path(Some(LEASE_NAME))).await {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
                    "spec": self.spec(true, 0),
                });
                return match self.api.create(&self.lease_path(None), &lease).await {
                    Ok(_) => Ok(Try::Leading),
                    Err(e) if e.is_conflict() => Ok(Try::Following),
                    Err(e) => Err(e.to_string()),
                };
            }
            Err(e) => return Err(e.to_string()),
        };
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or("");
        let version = lease["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let now = Instant::now();
            match &self.observed {
                Some((seen, at)) if *seen == version => {
                    if now < *at + self.options.lease_duration {
                        return Ok(Try::Following);
                    }
                }
                _ => {
                    self.observed = Some((version, now));
                    return Ok(Try::Following);
                }
            }
        }
        let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
        let acquire = !ours;
        let mut new = lease.clone();
        new["spec"] = self.spec(
            acquire,
            if acquire {
                transitions + 1
            } else {
                transitions
            },
        );
        if !acquire && let Some(at) = lease["spec"].get("acquireTime") {
            new["spec"]["acquireTime"] = at.clone();
        }
        match self
            .api
            .replace(&self.lease_path(Some(LEASE_NAME)), &new)
            .await
        {
            Ok(_) => {
                if acquire {
                    tracing::info!(identity = %self.identity, "took the controllers' lease");
                }
                Ok(Try::Leading)
            }
            Err(e) if e.is_conflict() => Ok(Try::Following),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Gives the Lease up (on shutdown) so another master need not wait it out.
    async fn release(&self) {
        let Ok(lease) = self.api.get(&self.lease_path(Some(LEASE_NAME))).await else {
            return;
        };
        if lease["spec"]["holderIdentity"].as_str() != Some(self.identity.as_str()) {
            return;
        }
        let mut new = lease.clone();
        new["spec"]["holderIdentity"] = json!("");
        new["spec"]["leaseDurationSeconds"] = json!(1);
        if let Err(e) = self
            .api
            .replace(&self.lease_path(Some(LEASE_NAME)), &new)
            .await
        {
            tracing::debug!(error = %e, "could not release the controllers' lease");
        }
    }
}

/// Runs the election until `stop` turns true (then releases a held Lease): `leading` says
/// whether this master leads, and the API state's fence follows it. `api` must be unfenced.
pub async fn run(
    api: LocalApi,
    identity: String,
    options: ElectionOptions,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let state = api.state().clone();
    state.leadership.use_election();
    let mut elector = Elector {
        api,
        identity,
        options,
        observed: None,
    };
    // Until when this master may act; `None` while following.
    let mut until: Option<Instant> = None;
    let step_down = |why: &str, until: &mut Option<Instant>| {
        if until.take().is_some() {
            state.leadership.release();
            leading.send_replace(false);
            tracing::warn!(why, "stopped the controllers: no longer the leader");
        }
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        // A leader's try may take no longer than its deadline; a follower's, a retry period.
        let budget = match until {
            Some(t) => t.saturating_duration_since(started),
            None => options.retry_period,
        };
        let outcome = tokio::time::timeout(budget, elector.try_once()).await;
        match outcome {
            Ok(Ok(Try::Leading)) => {
                let t = started + options.renew_deadline;
                state.leadership.hold_until(t);
                if until.replace(t).is_none() {
                    leading.send_replace(true);
                }
            }
            Ok(Ok(Try::Following)) => step_down("another master holds the lease", &mut until),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "leader election: the lease could not be read or written");
            }
            Err(_) => tracing::debug!("leader election: the try timed out"),
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            step_down(
                "the lease was not renewed within the renew deadline",
                &mut until,
            );
        }
        // Followers look more often than they try, so a dead leader's Lease is seen expire
        // within a fraction of a retry period.
        let pause = match until {
            Some(t) => options
                .retry_period
                .min(t.saturating_duration_since(Instant::now())),
            None => options.retry_period / 4,
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    let held = until.is_some();
    step_down("the server is shutting down", &mut until);
    if held {
        elector.release().await;
    }
}

/// This master's name in the Lease: host name and a random suffix, unique per process.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &id[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_leave_the_leader_time_to_stop() {
        assert!(ElectionOptions::default().check().is_ok());
        let bad = ElectionOptions {
            renew_deadline: Duration::from_secs(15),
            ..ElectionOptions::default()
        };
        assert!(bad.check().unwrap_err().contains("renew-deadline"));
        let bad = ElectionOptions {
            retry_period: Duration::from_secs(10),
            ..ElectionOptions::default()
        };
        assert!(bad.check().unwrap_err().contains("retry-period"));
    }
}
