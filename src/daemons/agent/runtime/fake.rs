//! A recording, in-memory `ContainerRuntime` for unit tests of pod and sync logic only;
//! everything that touches real containers is tested against the real engine.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream, ExecOutput,
    PullPolicy, RuntimeError, VolumeSpec,
};

/// One call the fake received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    EnsureImage(String),
    EnsureSandboxImage,
    EnsureVolume(String),
    RemoveVolume(String),
    Create(String),
    Start(String),
    Stop(String, Duration),
    Remove(String),
    Wait(String),
    CopyInto(String, String),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    containers: BTreeMap<String, (ContainerSpec, ContainerState)>,
    volumes: BTreeMap<String, VolumeSpec>,
}

/// The fake. Containers are keyed by name, which is also their id.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Exit codes `wait_container` returns, by container name (default 0).
    pub exit_codes: BTreeMap<String, i64>,
    /// Images that are "present"; others fail with `ErrImageNeverPull` under `Never`.
    pub images: HashSet<String>,
}

impl FakeRuntime {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("fake state").calls.clone()
    }

    fn record(&self, call: Call) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().expect("fake state");
        state.calls.push(call);
        state
    }

    fn set_state(&self, id: &str, new: ContainerState) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().expect("fake state");
        let entry = state
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        entry.1 = new;
        Ok(())
    }
}

fn matches(labels: &BTreeMap<String, String>, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

impl ContainerRuntime for FakeRuntime {
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        drop(self.record(Call::EnsureImage(image.to_string())));
        if policy == PullPolicy::Never && !self.images.contains(image) {
            return Err(RuntimeError::ImageNeverPull {
                image: image.to_string(),
            });
        }
        Ok(format!("sha256:{image}"))
    }

    async fn ensure_sandbox_image(&self) -> Result<String, RuntimeError> {
        drop(self.record(Call::EnsureSandboxImage));
        Ok(super::sandbox::SANDBOX_IMAGE.to_string())
    }

    async fn ensure_volume(&self, volume: &VolumeSpec) -> Result<(), RuntimeError> {
        let mut state = self.record(Call::EnsureVolume(volume.name.clone()));
        state.volumes.insert(volume.name.clone(), volume.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut state = self.record(Call::RemoveVolume(name.to_string()));
        state.volumes.remove(name);
        Ok(())
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        let state = self.state.lock().expect("fake state");
        Ok(state
            .volumes
            .values()
            .filter(|v| matches(&v.labels, labels))
            .map(|v| v.name.clone())
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut state = self.record(Call::Create(spec.name.clone()));
        state
            .containers
            .insert(spec.name.clone(), (spec.clone(), ContainerState::Created));
        Ok(spec.name.clone())
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        drop(self.record(Call::Start(id.to_string())));
        self.set_state(id, ContainerState::Running)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        drop(self.record(Call::Stop(id.to_string(), grace)));
        let exited = ContainerState::Exited {
            exit_code: 143,
            oom_killed: false,
        };
        self.set_state(id, exited)
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.record(Call::Remove(id.to_string()));
        state.containers.remove(id);
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        drop(self.record(Call::Wait(id.to_string())));
        let code = self.exit_codes.get(id).copied().unwrap_or(0);
        self.set_state(
            id,
            ContainerState::Exited {
                exit_code: code,
                oom_killed: false,
            },
        )?;
        Ok(code)
    }

    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let state = self.state.lock().expect("fake state");
        Ok(state.containers.get(id).map(|(spec, s)| info(spec, s)))
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let state = self.state.lock().expect("fake state");
        Ok(state
            .containers
            .values()
            .filter(|(spec, _)| matches(&spec.labels, labels))
            .map(|(spec, s)| info(spec, s))
            .collect())
    }

    fn events(&self, _labels: &[(&str, &str)]) -> EventStream {
        Box::pin(futures_util::stream::empty())
    }

    async fn exec(&self, _id: &str, _command: &[String]) -> Result<ExecOutput, RuntimeError> {
        Ok(ExecOutput {
            exit_code: 0,
            output: String::new(),
        })
    }

    async fn copy_into(&self, id: &str, path: &str, _archive: Vec<u8>) -> Result<(), RuntimeError> {
        drop(self.record(Call::CopyInto(id.to_string(), path.to_string())));
        Ok(())
    }

    async fn logs(&self, _id: &str, _tail: Option<usize>) -> Result<String, RuntimeError> {
        Ok(String::new())
    }
}

fn info(spec: &ContainerSpec, state: &ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: spec.name.clone(),
        name: spec.name.clone(),
        image: spec.image.clone(),
        image_id: None,
        labels: spec.labels.clone(),
        state: state.clone(),
        started_at: None,
        finished_at: None,
        ip_address: Some("10.0.0.2".to_string()),
        pid: None,
    }
}
