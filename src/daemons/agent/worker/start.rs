//! The one way a pod worker starts a container (an app or init container, first attempt or
//! restart): make its image present, create it under its attempt's name (replacing a
//! leftover of that name), start it, and prune attempts older than the previous one. A
//! failure becomes the container's waiting reason with the engine's words, and is retried
//! after the back-off.

use std::time::Instant;

use super::containers::Step;
use super::events::{EventType, PodRef};
use super::{PodWorker, RETRY_START, SyncError};
use crate::daemons::agent::pod::podspec::{ContainerPlan, PodPlan, container_name};
use crate::daemons::agent::pod::status::Waiting;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerRuntime, ContainerState, PullPolicy, RuntimeError};

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Creates and starts attempt `n` of a container, then removes attempts older than the
    /// previous one. A failure becomes the container's waiting reason and is retried later.
    pub(super) async fn start_new(
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
        if let Some((_, retry_at)) = self.waiting.get(&c.name)
            && *retry_at > now
        {
            return Ok(Step::wait(*retry_at - now));
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
                    self.seen.removing(&made.id);
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
                    "ErrImageNeverPull" => RETRY_START,
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
