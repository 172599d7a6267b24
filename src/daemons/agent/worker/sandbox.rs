//! A pod worker's sandbox: kept running (a sandbox stopped, removed or changed behind
//! berth's back takes the pod's containers with it and everything is recreated, as in
//! Kubernetes), plugged into the pod network, and the configMap/secret volume files written
//! through it.

use std::net::Ipv4Addr;

use super::events::{EventType, PodRef};
use super::metrics::DriftKind;
use super::{PodWorker, SyncError, attempt, describe_state, label, latest_two};
use crate::daemons::agent::net::attach::{self, Attachment};
use crate::daemons::agent::pod::podspec::PodPlan;
use crate::daemons::agent::pod::projected;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{ContainerInfo, ContainerRuntime, ContainerState};

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Makes the sandbox run. A sandbox stopped, removed or changed behind berth's back
    /// takes the pod's containers with it, as in Kubernetes; they are all recreated.
    /// Returns the new sandbox's id when it made one: then it is the pod's only container.
    pub(super) async fn ensure_sandbox(
        &mut self,
        pref: &PodRef,
        plan: &PodPlan,
        observed: &[ContainerInfo],
    ) -> Result<Option<String>, SyncError> {
        let (current, _) = latest_two(observed, labels::SANDBOX_CONTAINER, Role::Sandbox);
        let expected = plan
            .sandbox
            .labels
            .get(labels::SPEC_HASH)
            .cloned()
            .unwrap_or_default();
        let lost = current.and_then(attach::lost_interface);
        let drift = match current {
            Some(c) if label(c, labels::SPEC_HASH) != expected => Some((
                DriftKind::Changed,
                format!(
                    "the pod sandbox no longer matches its spec (spec hash {}, expected {expected})",
                    label(c, labels::SPEC_HASH)
                ),
            )),
            Some(_) if lost.is_some() => Some((
                DriftKind::Changed,
                format!(
                    "the pod sandbox lost its network interface (the node's end, {}, is gone)",
                    lost.unwrap_or_default()
                ),
            )),
            Some(c) if c.state == ContainerState::Running => {
                // After a restart the agent learns the addresses its sandboxes hold.
                let held = self.ctx.addresses.as_ref().and_then(|p| p.claim_sandbox(c));
                if let (true, Some(ip)) = (plan.plugged, held) {
                    self.restore_pod_files(pref, plan, ip);
                }
                return Ok(None);
            }
            Some(c) => Some((
                DriftKind::Stopped,
                format!(
                    "the pod sandbox was stopped outside berth ({})",
                    describe_state(&c.state)
                ),
            )),
            None if self.known.contains_key(labels::SANDBOX_CONTAINER) => Some((
                DriftKind::Removed,
                "the pod sandbox was removed outside berth".to_string(),
            )),
            None => None,
        };
        if let Some((kind, message)) = &drift {
            self.detected(pref, *kind, None, message.clone());
        }
        for c in observed {
            self.ctx.stopping(&c.id);
            self.removed_ids.insert(c.id.clone());
            self.ctx.runtime.remove_container(&c.id).await?;
        }
        let next_attempt = current
            .map(attempt)
            .or(self.known.get(labels::SANDBOX_CONTAINER).map(|(_, a)| *a))
            .map_or(0, |a| a + 1);
        let mut spec = plan.sandbox.clone();
        spec.name = crate::daemons::agent::pod::podspec::container_name(
            &plan.identity,
            labels::SANDBOX_CONTAINER,
            next_attempt,
        );
        spec.labels
            .insert(labels::ATTEMPT.into(), next_attempt.to_string());
        let address = match &self.ctx.addresses {
            Some(_) if plan.host_network => None,
            Some(pool) => Some(
                pool.assign(&pref.uid)
                    .map_err(|e| self.sandbox_failed(pref, e.to_string()))?,
            ),
            None => None,
        };
        if let Some(ip) = address {
            spec.labels.insert(labels::POD_IP.into(), ip.to_string());
            if plan.plugged {
                spec.labels.insert(
                    labels::VETH.into(),
                    attach::host_interface(&pref.uid, next_attempt),
                );
                self.write_pod_files(pref, plan, ip)
                    .map_err(|e| self.sandbox_failed(pref, e))?;
            } else {
                spec.ipv4_address = Some(ip.to_string());
            }
        }
        self.ctx.runtime.ensure_sandbox_image().await?;
        let id = self.ctx.runtime.create_container(&spec).await?;
        self.ctx.runtime.start_container(&id).await?;
        if let (true, Some(ip)) = (plan.plugged, address) {
            self.plug(pref, &id, ip, next_attempt).await?;
        }
        // The pod's containers went with the old sandbox; they come back as new attempts.
        self.known
            .retain(|name, _| name == labels::SANDBOX_CONTAINER);
        if let Some((kind, message)) = drift {
            self.repaired(
                pref,
                kind,
                None,
                format!("recreated the pod sandbox and its containers after: {message}"),
            );
        }
        Ok(Some(id))
    }

    /// Plugs a new sandbox into the pod network; a sandbox that cannot be plugged in is
    /// removed, and the next pass makes a new one.
    async fn plug(
        &mut self,
        pref: &PodRef,
        id: &str,
        ip: Ipv4Addr,
        attempt: u32,
    ) -> Result<(), SyncError> {
        let Some(net) = &self.ctx.policy.pod_network else {
            return Ok(());
        };
        let at = Attachment {
            bridge: net.bridge.clone(),
            cidr: net.cidr,
            ip,
            host_interface: attach::host_interface(&pref.uid, attempt),
        };
        let pid = self
            .ctx
            .runtime
            .inspect_container(id)
            .await?
            .and_then(|c| c.pid);
        let plugged = match pid {
            Some(pid) => attach::plug(pid, &at).await.map_err(|e| e.to_string()),
            None => Err("the sandbox is not running".to_string()),
        };
        if let Err(message) = plugged {
            self.ctx.stopping(id);
            self.removed_ids.insert(id.to_string());
            self.ctx.runtime.remove_container(id).await?;
            return Err(self.sandbox_failed(pref, message));
        }
        Ok(())
    }

    /// Writes the pod's `hosts` and `resolv.conf` (with its hostname and address).
    fn write_pod_files(&self, pref: &PodRef, plan: &PodPlan, ip: Ipv4Addr) -> Result<(), String> {
        let Some(dir) = self.ctx.pod_files_dir(&pref.uid) else {
            return Ok(());
        };
        let hostname = plan.sandbox.hostname.as_deref().unwrap_or(&pref.name);
        let (dns, aliases) = (plan.sandbox.dns.as_ref(), &plan.sandbox.host_aliases);
        attach::write_pod_files(&dir, hostname, ip, dns, aliases).map_err(|e| {
            format!(
                "cannot write its hosts and resolv.conf in {}: {e}",
                dir.display()
            )
        })
    }

    /// Writes the pod's files again when they went missing under a running sandbox.
    fn restore_pod_files(&self, pref: &PodRef, plan: &PodPlan, ip: Ipv4Addr) {
        let missing = self
            .ctx
            .pod_files_dir(&pref.uid)
            .is_some_and(|dir| !attach::pod_files_exist(&dir));
        if !missing {
            return;
        }
        if let Err(e) = self.write_pod_files(pref, plan, ip) {
            tracing::warn!(error = %e, pod = %pref.name, "cannot write the pod's hosts and resolv.conf again");
        }
    }

    /// Reports a sandbox that could not be made, as the kubelet does.
    fn sandbox_failed(&self, pref: &PodRef, message: String) -> SyncError {
        self.ctx.events.pod(
            pref,
            EventType::Warning,
            "FailedCreatePodSandBox",
            None,
            format!("Failed to create pod sandbox: {message}"),
        );
        SyncError::Sandbox { message }
    }

    /// Writes the configMap and secret volume files when they changed or the sandbox is new.
    pub(super) async fn write_files(
        &mut self,
        pref: &PodRef,
        plan: &PodPlan,
        sandbox: &str,
    ) -> Result<(), SyncError> {
        if plan.files.is_empty() {
            return Ok(());
        }
        let digest = labels::spec_hash(
            &plan
                .files
                .iter()
                .flat_map(|v| {
                    v.files
                        .iter()
                        .map(move |f| (&v.volume, &f.path, f.mode, &f.content))
                })
                .collect::<Vec<_>>(),
        );
        let current = (sandbox.to_string(), digest);
        if self.written_files.as_ref() == Some(&current) {
            return Ok(());
        }
        // A volume this worker has not written yet gets its `..data` link straight from the
        // archive; an update writes a new generation and swaps the link in one rename.
        let update = self.written_files.is_some();
        let generation = projected::generation_name(chrono::Utc::now());
        for volume in &plan.files {
            let link = if update {
                projected::NEXT_LINK
            } else {
                projected::DATA_LINK
            };
            let written = match projected::archive(&volume.files, &generation, link) {
                Ok(archive) => {
                    self.publish(sandbox, volume, archive, update, &generation)
                        .await
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(message) = written {
                self.ctx.events.pod(
                    pref,
                    EventType::Warning,
                    "FailedMount",
                    None,
                    format!(
                        "MountVolume.SetUp failed for volume {:?}: {message}",
                        volume.volume
                    ),
                );
                return Err(SyncError::Mount {
                    volume: volume.volume.clone(),
                    message,
                });
            }
        }
        self.written_files = Some(current);
        Ok(())
    }

    /// Extracts one volume's archive in the sandbox and, for an update, swaps `..data`.
    async fn publish(
        &self,
        sandbox: &str,
        volume: &projected::VolumeFiles,
        archive: Vec<u8>,
        update: bool,
        generation: &str,
    ) -> Result<(), String> {
        let runtime = &self.ctx.runtime;
        runtime
            .copy_into(sandbox, &volume.sandbox_path, archive)
            .await
            .map_err(|e| e.to_string())?;
        if !update {
            return Ok(());
        }
        let swap = projected::swap_command(&volume.sandbox_path, generation);
        let out = runtime
            .exec(sandbox, &swap)
            .await
            .map_err(|e| e.to_string())?;
        if out.exit_code != 0 {
            return Err(format!(
                "cannot switch to the new files (exit {}): {}",
                out.exit_code,
                out.output.trim()
            ));
        }
        Ok(())
    }
}
