//! A recording, in-memory `ContainerRuntime` for unit tests of the pod worker only (it is
//! built for tests alone); everything that touches real containers is tested against the
//! real engine. Tests play the world around the agent through its methods: a container
//! that exits, one removed or stopped behind berth's back, a leftover of the same name.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
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
    /// Containers (by name) that exit with this code as soon as they start.
    exit_on_start: BTreeMap<String, i64>,
}

/// The fake. Containers are keyed by name, which is also their id. A clone shares its
/// containers, volumes and calls: the same engine, as a restarted agent finds it.
#[derive(Debug, Default, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    /// Images that are "present"; others fail with `ErrImageNeverPull` under `Never`.
    pub images: HashSet<String>,
}

impl FakeRuntime {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("fake state").calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.state.lock().expect("fake state").calls.clear();
    }

    /// Makes container `name` exit with `code` whenever it starts.
    pub fn exit_on_start(&self, name: &str, code: i64) {
        let mut state = self.state.lock().expect("fake state");
        state.exit_on_start.insert(name.to_string(), code);
    }

    /// Container `id` exits by itself (or is stopped by someone else) with `code`.
    pub fn exit(&self, id: &str, code: i64) {
        let exited = ContainerState::Exited {
            exit_code: code,
            oom_killed: false,
        };
        self.set_state(id, exited).expect("a container of the fake");
    }

    /// Someone other than the agent removes container `id`.
    pub fn remove_behind_back(&self, id: &str) {
        let mut state = self.state.lock().expect("fake state");
        state
            .containers
            .remove(id)
            .expect("a container of the fake");
    }

    /// A container the agent did not make (this run) is there already.
    pub fn insert(&self, spec: ContainerSpec, state: ContainerState) {
        let mut fake = self.state.lock().expect("fake state");
        fake.containers.insert(spec.name.clone(), (spec, state));
    }

    /// The containers there are now, by name: their spec and state.
    pub fn containers(&self) -> BTreeMap<String, (ContainerSpec, ContainerState)> {
        self.state.lock().expect("fake state").containers.clone()
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
        if state.containers.contains_key(&spec.name) {
            return Err(RuntimeError::NameConflict {
                name: spec.name.clone(),
            });
        }
        state
            .containers
            .insert(spec.name.clone(), (spec.clone(), ContainerState::Created));
        Ok(spec.name.clone())
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let state = self.record(Call::Start(id.to_string()));
        let started = match state.exit_on_start.get(id) {
            Some(&exit_code) => ContainerState::Exited {
                exit_code,
                oom_killed: false,
            },
            None => ContainerState::Running,
        };
        drop(state);
        self.set_state(id, started)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let mut state = self.record(Call::Stop(id.to_string(), grace));
        // As the engine: stopping a container that does not run is not an error.
        if let Some((_, current @ ContainerState::Running)) = state.containers.get_mut(id) {
            *current = ContainerState::Exited {
                exit_code: 143,
                oom_killed: false,
            };
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.record(Call::Remove(id.to_string()));
        state.containers.remove(id);
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        let state = self.record(Call::Wait(id.to_string()));
        let code = match state.containers.get(id) {
            Some((_, ContainerState::Exited { exit_code, .. })) => *exit_code,
            Some(_) => 0,
            None => return Err(RuntimeError::NotFound { id: id.to_string() }),
        };
        drop(state);
        self.exit(id, code);
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
