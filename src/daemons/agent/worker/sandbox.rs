//! A pod worker's sandbox: kept running (a sandbox stopped, removed or changed behind
//! berth's back takes the pod's containers with it and everything is recreated, as in
//! Kubernetes), plugged into the pod network, and the configMap/secret volume files written
//! through it.

use std::net::Ipv4Addr;

use super::events::{EventType, PodRef};
use super::{PodWorker, SyncError};
use crate::daemons::agent::net::attach::{self, Attachment};
use crate::daemons::agent::pod::drift::{self, SandboxStanding};
use crate::daemons::agent::pod::podspec::{PodPlan, container_name};
use crate::daemons::agent::pod::projected;
use crate::daemons::agent::runtime::labels;
use crate::daemons::agent::runtime::{ContainerInfo, ContainerRuntime};

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Makes the sandbox run, and returns it when it ran already. A sandbox stopped,
    /// removed or changed behind berth's back takes the pod's containers with it, as in
    /// Kubernetes; they are all recreated. When it made a new sandbox (which is then the
    /// pod's only container, and what the next pass observes) it returns `None`.
    pub(super) async fn ensure_sandbox(
        &mut self,
        pref: &PodRef,
        plan: &PodPlan,
        observed: &[ContainerInfo],
    ) -> Result<Option<ContainerInfo>, SyncError> {
        let lost = |c: &ContainerInfo| attach::lost_interface(c).map(str::to_string);
        let (next_attempt, drift) = match drift::sandbox(plan, observed, &self.seen, lost) {
            SandboxStanding::Running(c) => {
                // After a restart the agent learns the addresses its sandboxes hold.
                let held = self.ctx.addresses.as_ref().and_then(|p| p.claim_sandbox(c));
                if let (true, Some(ip)) = (plan.plugged, held) {
                    self.restore_pod_files(pref, plan, ip);
                }
                return Ok(Some(c.clone()));
            }
            SandboxStanding::Make { attempt, drift } => (attempt, drift),
        };
        if let Some(drift) = &drift {
            self.detected(pref, drift, None);
        }
        for c in observed {
            self.ctx.stopping(&c.id);
            self.seen.removing(&c.id);
            self.ctx.runtime.remove_container(&c.id).await?;
        }
        let mut spec = plan.sandbox.clone();
        spec.name = container_name(&plan.identity, labels::SANDBOX_CONTAINER, next_attempt);
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
        self.seen.sandbox_replaced(observed);
        if let Some(drift) = drift {
            self.repaired(
                pref,
                drift.kind(),
                None,
                format!("recreated the pod sandbox and its containers after: {drift}"),
            );
        }
        self.fresh = match self.ctx.runtime.inspect_container(&id).await? {
            Some(info) => {
                self.inspected.clear();
                self.inspected.insert(id, info.clone());
                Some(vec![info])
            }
            None => None,
        };
        Ok(None)
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
            self.seen.removing(id);
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
