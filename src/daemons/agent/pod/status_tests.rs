use std::collections::BTreeMap;

use super::*;

fn info(id: &str, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: id.into(),
        image: "busybox".into(),
        image_id: Some("sha256:abc".into()),
        labels: BTreeMap::new(),
        state,
        started_at: Some("2026-11-22T03:00:00.123456789Z".into()),
        finished_at: Some("2026-11-22T03:00:05.5Z".into()),
        ip_address: None,
        pid: None,
    }
}

fn view(name: &str, latest: Option<ContainerInfo>) -> ContainerView {
    let ready = latest
        .as_ref()
        .is_some_and(|c| c.state == ContainerState::Running);
    ContainerView {
        name: name.into(),
        image: "busybox".into(),
        latest,
        ready,
        ..Default::default()
    }
}

fn facts<'a>(
    init: &'a [ContainerView],
    containers: &'a [ContainerView],
    policy: RestartPolicy,
) -> PodFacts<'a> {
    PodFacts {
        init,
        containers,
        restart_policy: policy,
        pod_ip: Some("172.17.0.5".into()),
        host_ip: Some("10.0.0.1".into()),
        start_time: Some(now()),
        init_failed: false,
    }
}

fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
        .unwrap()
}

#[test]
fn running_containers_make_a_ready_running_pod() {
    let apps = [view("app", Some(info("a1", ContainerState::Running)))];
    let s = pod_status(&facts(&[], &apps, RestartPolicy::Always), None);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Ready"), "True");
    assert_eq!(cond(&s, "Initialized"), "True");
    assert_eq!(s.pod_ip.as_deref(), Some("172.17.0.5"));
    let c = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(c.container_id.as_deref(), Some("docker://a1"));
    assert_eq!(c.image_id, "docker://sha256:abc");
    let started = c.state.as_ref().unwrap().running.as_ref().unwrap();
    assert_eq!(
        started.started_at.as_ref().unwrap().0.to_string(),
        "2026-11-22T03:00:00Z"
    );
}

#[test]
fn a_crash_loop_waits_with_the_last_run_as_last_state() {
    let crashed = info(
        "a2",
        ContainerState::Exited {
            exit_code: 3,
            oom_killed: false,
        },
    );
    let mut v = view("app", Some(crashed));
    v.restart_count = 2;
    v.waiting = Some(Waiting {
        reason: "CrashLoopBackOff".into(),
        message: Some("back-off 20s".into()),
    });
    let apps = [v];
    let s = pod_status(&facts(&[], &apps, RestartPolicy::Always), None);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Ready"), "False");
    let c = &s.container_statuses.as_ref().unwrap()[0];
    let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(c.restart_count, 2);
}

#[test]
fn finished_containers_end_the_pod_by_policy() {
    let done = |code| {
        info(
            "x",
            ContainerState::Exited {
                exit_code: code,
                oom_killed: false,
            },
        )
    };
    let ok = [view("a", Some(done(0)))];
    let s = pod_status(&facts(&[], &ok, RestartPolicy::Never), None);
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    let c = s.conditions.as_ref().unwrap();
    assert_eq!(c[3].reason.as_deref(), Some("PodCompleted"));
    let bad = [view("a", Some(done(1)))];
    let s = pod_status(&facts(&[], &bad, RestartPolicy::OnFailure), None);
    assert_eq!(s.phase.as_deref(), Some("Running"), "OnFailure restarts it");
    let s = pod_status(&facts(&[], &bad, RestartPolicy::Never), None);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
}

#[test]
fn pending_until_init_containers_complete() {
    let init = [view("setup", Some(info("i1", ContainerState::Running)))];
    let apps = [view("app", None)];
    let s = pod_status(&facts(&init, &apps, RestartPolicy::Always), None);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(cond(&s, "Initialized"), "False");
    let app = &s.container_statuses.as_ref().unwrap()[0];
    let w = app.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(w.reason.as_deref(), Some("PodInitializing"));
}

#[test]
fn transition_times_stay_while_a_condition_holds() {
    let apps = [view("app", Some(info("a1", ContainerState::Running)))];
    let f = facts(&[], &apps, RestartPolicy::Always);
    let mut first = pod_status(&f, None);
    let old = Time(Timestamp::from_second(1_000_000).unwrap());
    for c in first.conditions.as_mut().unwrap() {
        c.last_transition_time = Some(old.clone());
    }
    let second = pod_status(&f, Some(&first));
    assert!(
        second
            .conditions
            .unwrap()
            .iter()
            .all(|c| c.last_transition_time == Some(old.clone()))
    );
}
