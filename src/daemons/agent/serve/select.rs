//! Which engine container a log or exec request means: the pod's current container of that
//! name, or with `previous` the most recent one before it, told apart by berth's labels.

use crate::daemons::agent::runtime::labels;
use crate::daemons::agent::runtime::{ContainerInfo, ContainerState};

/// The pod and container a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The pod's uid when the caller knows it: containers of an older pod of the same name
    /// are then never picked.
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    /// The label filter that lists every instance of this container.
    pub fn label_filter(&self) -> Vec<(&str, &str)> {
        let mut filter = vec![
            (labels::MANAGED, "true"),
            (labels::POD_NAMESPACE, self.namespace.as_str()),
            (labels::POD_NAME, self.pod.as_str()),
            (labels::CONTAINER_NAME, self.container.as_str()),
        ];
        if let Some(uid) = &self.pod_uid {
            filter.push((labels::POD_UID, uid.as_str()));
        }
        filter
    }
}

/// Why no container matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No instance of the container exists on this node.
    #[error(
        "container \"{container}\" in pod \"{pod}\" is waiting to start: no container has been created on this node yet"
    )]
    NotCreated { pod: String, container: String },
    /// `previous` asked for, but the container never restarted (or the dead one is gone).
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
    /// Exec needs a running container.
    #[error(
        "unable to upgrade connection: container \"{container}\" in pod \"{pod}\" is not running"
    )]
    NotRunning { pod: String, container: String },
}

fn attempt(c: &ContainerInfo) -> u64 {
    c.labels
        .get(labels::ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// Newest first: by attempt label, then by start time (RFC 3339 sorts as text when the
/// engine writes one format), then running before exited.
fn newest_first(found: &[ContainerInfo]) -> Vec<&ContainerInfo> {
    let mut sorted: Vec<&ContainerInfo> = found.iter().collect();
    sorted.sort_by(|a, b| {
        let running = |c: &ContainerInfo| matches!(c.state, ContainerState::Running);
        (attempt(b), &b.started_at, running(b)).cmp(&(attempt(a), &a.started_at, running(a)))
    });
    sorted
}

/// The container a log request reads: the current instance, or with `previous` the one
/// before it (which has exited).
pub fn for_logs<'a>(
    target: &ContainerRef,
    found: &'a [ContainerInfo],
    previous: bool,
) -> Result<&'a ContainerInfo, SelectError> {
    let sorted = newest_first(found);
    if previous {
        sorted
            .get(1)
            .copied()
            .ok_or_else(|| SelectError::NoPrevious {
                pod: target.pod.clone(),
                container: target.container.clone(),
            })
    } else {
        sorted
            .first()
            .copied()
            .ok_or_else(|| SelectError::NotCreated {
                pod: target.pod.clone(),
                container: target.container.clone(),
            })
    }
}

/// The container an exec runs in: the current instance, which must be running.
pub fn for_exec<'a>(
    target: &ContainerRef,
    found: &'a [ContainerInfo],
) -> Result<&'a ContainerInfo, SelectError> {
    let current = for_logs(target, found, false)?;
    if matches!(current.state, ContainerState::Running) {
        Ok(current)
    } else {
        Err(SelectError::NotRunning {
            pod: target.pod.clone(),
            container: target.container.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn container(id: &str, attempt: u32, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: id.into(),
            image: "busybox".into(),
            image_id: None,
            labels: BTreeMap::from([(labels::ATTEMPT.to_string(), attempt.to_string())]),
            state,
            started_at: None,
            finished_at: None,
            ip_address: None,
            pid: None,
        }
    }

    fn target() -> ContainerRef {
        ContainerRef {
            namespace: "default".into(),
            pod: "web".into(),
            container: "app".into(),
            pod_uid: None,
        }
    }

    const EXITED: ContainerState = ContainerState::Exited {
        exit_code: 1,
        oom_killed: false,
    };

    #[test]
    fn current_is_the_highest_attempt_and_previous_the_one_before() {
        let found = vec![
            container("a0", 0, EXITED),
            container("a2", 2, ContainerState::Running),
            container("a1", 1, EXITED),
        ];
        assert_eq!(for_logs(&target(), &found, false).unwrap().id, "a2");
        assert_eq!(for_logs(&target(), &found, true).unwrap().id, "a1");
        assert_eq!(for_exec(&target(), &found).unwrap().id, "a2");
    }

    #[test]
    fn a_container_that_never_restarted_has_no_previous() {
        let found = vec![container("a0", 0, ContainerState::Running)];
        let err = for_logs(&target(), &found, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "previous terminated container \"app\" in pod \"web\" not found"
        );
        let err = for_logs(&target(), &[], false).unwrap_err();
        assert!(err.to_string().contains("waiting to start"), "{err}");
    }

    #[test]
    fn exec_needs_a_running_container() {
        let found = vec![container("a0", 0, EXITED)];
        assert!(matches!(
            for_exec(&target(), &found),
            Err(SelectError::NotRunning { .. })
        ));
    }

    #[test]
    fn the_pod_uid_narrows_the_filter() {
        let mut t = target();
        assert_eq!(t.label_filter().len(), 4);
        t.pod_uid = Some("u1".into());
        assert!(t.label_filter().contains(&(labels::POD_UID, "u1")));
    }
}
