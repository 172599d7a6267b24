//! What a source's `Ready` waits for once its commit is applied: the health of its
//! Deployments (always), of the objects of `spec.healthChecks`, and — with `spec.wait` or
//! `spec.healthChecks` — for at most `spec.timeout` (default: the interval), after which
//! `Ready` turns `HealthCheckFailed` with what is unhealthy. The wait is timed from the first
//! look at a commit and spec (in memory: a restart starts it again).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::index::Index;
use super::reconcile::{Pass, Stop};
use super::{GitSyncController, Waiting, health, parse_interval};
use crate::cluster::api::resources::by_kind;
use crate::cluster::controllers::client::path;
use crate::cluster::controllers::runtime::ReconcileError;
use crate::manifest::gitsource::HealthCheckReference;

/// The health of what a source applied, and how long `Ready` has waited for it.
pub(super) struct Readiness {
    /// Healthy, Progressing or Degraded.
    pub health: &'static str,
    /// What is not healthy, and why.
    pub message: String,
    /// How long the source has waited, when it waits for health and it is not there.
    pub waited: Option<Duration>,
    pub timeout: Duration,
}

impl Readiness {
    pub fn timed_out(&self) -> bool {
        self.waited.is_some_and(|w| w >= self.timeout)
    }

    /// The message of `HealthCheckFailed`.
    pub fn failure(&self) -> String {
        format!(
            "health check failed after {}: {}",
            humantime(self.timeout),
            self.message
        )
    }
}

impl GitSyncController {
    /// Rolls up the health of `index` (the source's applied `commit`) and its health checks.
    pub(super) async fn readiness(
        &self,
        pass: &Pass<'_>,
        commit: &str,
        index: &Index,
    ) -> Result<Readiness, Stop> {
        let mut deployments: Vec<Value> = index
            .objects()
            .filter(|o| o["kind"] == "Deployment")
            .map(|o| {
                json!({"kind": "Deployment",
                    "namespace": o.pointer("/metadata/namespace").and_then(Value::as_str)
                        .unwrap_or(pass.namespace),
                    "name": o.pointer("/metadata/name")})
            })
            .collect();
        let spec = &pass.source.spec;
        let mut others = Vec::new();
        for check in &spec.health_checks {
            let namespace = check.namespace.as_deref().unwrap_or(pass.namespace);
            if check.kind == "Deployment" && check.api_version == "apps/v1" {
                let entry =
                    json!({"kind": "Deployment", "namespace": namespace, "name": check.name});
                if !deployments.contains(&entry) {
                    deployments.push(entry);
                }
            } else {
                others.push(self.checked_object(check, namespace).await?);
            }
        }
        let (mut health, mut message) = health::roll_up(&deployments, &self.caches);
        let others: Vec<String> = others.into_iter().flatten().collect();
        if !others.is_empty() && health != "Degraded" {
            health = "Progressing";
            message = [message, others.join("; ")]
                .into_iter()
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
        }
        // With `wait` or `healthChecks`, Ready waits for health at most `timeout`.
        let gated = spec.wait || !spec.health_checks.is_empty();
        let timeout = spec
            .timeout
            .as_deref()
            .and_then(parse_interval)
            .unwrap_or(pass.interval);
        let waited = if gated && health != "Healthy" {
            Some(self.waiting_since(pass.key, commit, pass.source.metadata.generation))
        } else {
            self.waiting.lock().expect("waiting lock").remove(pass.key);
            None
        };
        Ok(Readiness {
            health,
            message,
            waited,
            timeout,
        })
    }

    /// How long the source has waited for the health of `commit` at `generation`.
    fn waiting_since(&self, key: &str, commit: &str, generation: Option<i64>) -> Duration {
        let now = || Waiting {
            commit: commit.to_string(),
            generation,
            since: Instant::now(),
        };
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let entry = waiting.entry(key.to_string()).or_insert_with(now);
        if entry.commit != commit || entry.generation != generation {
            *entry = now();
        }
        entry.since.elapsed()
    }

    /// Why an object of `spec.healthChecks` (other than a Deployment) is not healthy, if it
    /// is not.
    async fn checked_object(
        &self,
        check: &HealthCheckReference,
        namespace: &str,
    ) -> Result<Option<String>, Stop> {
        let what = format!("{} {namespace}/{}", check.kind, check.name);
        let Some(r) = by_kind(&check.api_version, &check.kind) else {
            return Ok(Some(format!(
                "{what}: the server does not serve {} {}",
                check.api_version, check.kind
            )));
        };
        let live = match self
            .api
            .get(&path(r, Some(namespace), Some(&check.name), None))
            .await
        {
            Ok(live) => Some(live),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(ReconcileError::Api(e).into()),
        };
        Ok(health::object_trouble(&what, live.as_ref()))
    }
}

/// `30s`, `2m`, `1m30s`: a duration as the spec writes it.
fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        _ if d.subsec_millis() != 0 => format!("{}ms", d.as_millis()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_spec_writes_them() {
        assert_eq!(humantime(Duration::from_secs(6)), "6s");
        assert_eq!(humantime(Duration::from_secs(180)), "3m");
        assert_eq!(humantime(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1500ms");
    }
}
