//! Pod status from the containers' snapshots: container statuses, phase and conditions.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::{ContainerSnapshot, RestartPolicy, RunState, Terminated};

/// One container as the status shows it.
pub struct ContainerView<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub snapshot: ContainerSnapshot,
}

pub enum Stage {
    /// Not started: images, volumes or env not ready; every container waits with this reason.
    Preparing {
        reason: String,
        message: Option<String>,
    },
    /// Init container `index` of the init list is running (earlier ones completed).
    Initializing,
    /// Main containers started.
    Running,
    /// An init container failed for good (restart policy Never).
    InitFailed,
}

pub struct PodView<'a> {
    pub stage: Stage,
    pub init: Vec<ContainerView<'a>>,
    pub main: Vec<ContainerView<'a>>,
    pub restart_policy: RestartPolicy,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub start_time: Timestamp,
}

/// Keeps each condition's lastTransitionTime until its status changes.
#[derive(Default)]
pub struct ConditionClock {
    since: HashMap<&'static str, (bool, Timestamp)>,
}

impl ConditionClock {
    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        reason: Option<&str>,
    ) -> PodCondition {
        let now = Timestamp::now();
        let entry = self.since.entry(kind).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        PodCondition {
            type_: kind.into(),
            status: if status { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(entry.1)),
            reason: if status {
                None
            } else {
                reason.map(str::to_owned)
            },
            ..Default::default()
        }
    }
}

pub fn pod_status(view: &PodView<'_>, clock: &mut ConditionClock) -> PodStatus {
    let main_finished = !view.main.is_empty()
        && view
            .main
            .iter()
            .all(|c| c.snapshot.is_finished(view.restart_policy));
    let phase = match &view.stage {
        Stage::Preparing { .. } | Stage::Initializing => "Pending",
        Stage::InitFailed => "Failed",
        Stage::Running if main_finished => {
            if view.main.iter().all(|c| exit_code(&c.snapshot) == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        Stage::Running => {
            let any_started = view
                .main
                .iter()
                .any(|c| !matches!(&c.snapshot.state, RunState::Waiting { reason, .. } if reason == "ContainerCreating"));
            if any_started {
                "Running"
            } else {
                "Pending"
            }
        }
    };
    let initialized = matches!(view.stage, Stage::Running);
    let containers_ready = initialized && view.main.iter().all(|c| c.snapshot.ready);
    let not_ready_reason = if initialized {
        "ContainersNotReady"
    } else {
        "ContainersNotInitialized"
    };
    let conditions = vec![
        clock.condition("PodScheduled", true, None),
        clock.condition("Initialized", initialized, Some("ContainersNotInitialized")),
        clock.condition("ContainersReady", containers_ready, Some(not_ready_reason)),
        clock.condition("Ready", containers_ready, Some(not_ready_reason)),
    ];
    let preparing = match &view.stage {
        Stage::Preparing { reason, message } => Some((reason.as_str(), message.clone())),
        _ => None,
    };
    let statuses = |containers: &[ContainerView<'_>]| -> Vec<ContainerStatus> {
        containers
            .iter()
            .map(|c| container_status(c, preparing.clone()))
            .collect()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.into()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.into(),
        }]),
        pod_ip: Some(view.pod_ip.into()),
        pod_ips: Some(vec![PodIP {
            ip: view.pod_ip.into(),
        }]),
        start_time: Some(Time(view.start_time)),
        qos_class: Some("BestEffort".into()),
        init_container_statuses: (!view.init.is_empty()).then(|| statuses(&view.init)),
        container_statuses: Some(statuses(&view.main)),
        ..Default::default()
    }
}

fn exit_code(snapshot: &ContainerSnapshot) -> Option<i32> {
    match &snapshot.state {
        RunState::Terminated(t) => Some(t.exit_code),
        _ => None,
    }
}

fn container_status(
    view: &ContainerView<'_>,
    preparing: Option<(&str, Option<String>)>,
) -> ContainerStatus {
    let snapshot = &view.snapshot;
    let state = match (preparing, &snapshot.state) {
        (Some((reason, message)), _) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message,
            }),
            ..Default::default()
        },
        (None, RunState::Waiting { reason, message }) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        (None, RunState::Running { started_at }) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        (None, RunState::Terminated(terminated)) => ContainerState {
            terminated: Some(terminated_state(terminated, snapshot.pid)),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: view.name.into(),
        image: view.image.into(),
        image_id: format!("devcluster://{}", view.image),
        container_id: snapshot.pid.map(|pid| format!("devcluster://{pid}")),
        ready: snapshot.ready,
        started: Some(snapshot.started),
        restart_count: snapshot.restart_count,
        state: Some(state),
        last_state: snapshot.last_terminated.as_ref().map(|t| ContainerState {
            terminated: Some(terminated_state(t, None)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated_state(terminated: &Terminated, pid: Option<i32>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: terminated.exit_code,
        signal: terminated.signal,
        reason: Some(terminated.reason.clone()),
        message: terminated.message.clone(),
        started_at: Some(Time(terminated.started_at)),
        finished_at: Some(Time(terminated.finished_at)),
        container_id: pid.map(|pid| format!("devcluster://{pid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: RunState, ready: bool) -> ContainerSnapshot {
        ContainerSnapshot {
            state,
            last_terminated: None,
            ready,
            started: true,
            restart_count: 0,
            pid: None,
        }
    }

    fn exited(code: i32) -> RunState {
        RunState::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Timestamp::now(),
            finished_at: Timestamp::now(),
        })
    }

    fn view(main: Vec<ContainerSnapshot>, policy: RestartPolicy) -> PodView<'static> {
        PodView {
            stage: Stage::Running,
            init: Vec::new(),
            main: main
                .into_iter()
                .map(|snapshot| ContainerView {
                    name: "c",
                    image: "busybox",
                    snapshot,
                })
                .collect(),
            restart_policy: policy,
            pod_ip: "127.0.1.1",
            host_ip: "127.0.0.1",
            start_time: Timestamp::now(),
        }
    }

    fn condition(status: &PodStatus, kind: &str) -> String {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn phase_and_readiness_follow_the_containers() {
        let mut clock = ConditionClock::default();
        let running = RunState::Running {
            started_at: Timestamp::now(),
        };
        let status = pod_status(
            &view(
                vec![
                    snapshot(running.clone(), true),
                    snapshot(running.clone(), false),
                ],
                RestartPolicy::Always,
            ),
            &mut clock,
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&status, "Ready"), "False");
        let status = pod_status(
            &view(vec![snapshot(running, true)], RestartPolicy::Always),
            &mut clock,
        );
        assert_eq!(condition(&status, "Ready"), "True");

        let done = pod_status(
            &view(vec![snapshot(exited(0), false)], RestartPolicy::Never),
            &mut clock,
        );
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        let failed = pod_status(
            &view(
                vec![snapshot(exited(0), false), snapshot(exited(2), false)],
                RestartPolicy::OnFailure,
            ),
            &mut clock,
        );
        assert_eq!(
            failed.phase.as_deref(),
            Some("Running"),
            "OnFailure restarts the failed one"
        );
        let failed = pod_status(
            &view(vec![snapshot(exited(2), false)], RestartPolicy::Never),
            &mut clock,
        );
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
    }
}
