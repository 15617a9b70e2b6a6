//! A container's supervisor: runs its process, its probes and its restarts, and publishes a status
//! snapshot after every change. It knows nothing of the Kubernetes API, so it is tested with plain
//! processes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::log_sink::LogSink;
use super::probe::{ExecContext, ProbeSpec};
use super::process::{ExitOutcome, ProcessSpec, RunningProcess};
use super::reaper::Reaper;

mod probes;

use probes::{spawn_probe, ProbeKind, ProbeSignal, ProbeTasks};

/// A run that lasted this long resets the crash-loop back-off to its initial delay.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Bound of the probe → supervisor channel; probes wait when it is full.
const PROBE_SIGNAL_CAPACITY: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    fn restarts_after(self, outcome: &Terminated) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => outcome.exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Crash-loop back-off: the delay before a restart doubles from `initial` up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ContainerLaunch {
    pub name: String,
    pub process: ProcessSpec,
    /// Directory of `<name>.log` (and `<name>.previous.log`).
    pub log_dir: PathBuf,
    pub max_log_bytes: u64,
    pub startup_probe: Option<ProbeSpec>,
    pub liveness_probe: Option<ProbeSpec>,
    pub readiness_probe: Option<ProbeSpec>,
    pub restart_policy: RestartPolicy,
    /// Grace period used when a liveness or startup probe kills the process.
    pub termination_grace: Duration,
    pub backoff: Backoff,
    /// Restart count carried over (a pod the kubelet picks up again after its own restart).
    pub initial_restart_count: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSnapshot {
    pub state: RunState,
    pub last_terminated: Option<Terminated>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    /// Process (and process group) id of the current run.
    pub pid: Option<i32>,
}

impl ContainerSnapshot {
    /// Terminated and not going to run again.
    pub fn is_finished(&self, policy: RestartPolicy) -> bool {
        matches!(&self.state, RunState::Terminated(t) if !policy.restarts_after(t))
    }
}

/// Something worth an Event on the pod.
#[derive(Clone, Debug)]
pub struct ContainerEvent {
    pub container: String,
    pub reason: &'static str,
    pub message: String,
    pub warning: bool,
}

pub struct ContainerHandle {
    snapshot: watch::Receiver<ContainerSnapshot>,
    stop: Option<oneshot::Sender<Duration>>,
    task: JoinHandle<()>,
}

impl ContainerHandle {
    /// Starts supervising. `changed` is notified after every snapshot change; `events` receives
    /// Event-worthy moments (dropped when the channel is full).
    pub fn start(
        launch: ContainerLaunch,
        reaper: Reaper,
        changed: Arc<Notify>,
        events: Option<mpsc::Sender<ContainerEvent>>,
    ) -> Self {
        let initial = ContainerSnapshot {
            state: RunState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_terminated: None,
            ready: false,
            started: false,
            restart_count: launch.initial_restart_count,
            pid: None,
        };
        let (snapshot_tx, snapshot) = watch::channel(initial);
        let (stop, stop_rx) = oneshot::channel();
        let supervisor = Supervisor {
            launch,
            reaper,
            snapshot: snapshot_tx,
            changed,
            events,
        };
        let task = tokio::spawn(supervisor.run(stop_rx));
        ContainerHandle {
            snapshot,
            stop: Some(stop),
            task,
        }
    }

    pub fn snapshot(&self) -> ContainerSnapshot {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<ContainerSnapshot> {
        self.snapshot.clone()
    }

    /// SIGTERM, up to `grace`, SIGKILL; returns the final snapshot.
    pub async fn stop(mut self, grace: Duration) -> ContainerSnapshot {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        let _ = (&mut self.task).await;
        self.snapshot.borrow().clone()
    }
}

impl Drop for ContainerHandle {
    fn drop(&mut self) {
        // Dropping the stop sender makes the supervisor stop its process with the default grace.
        self.stop.take();
    }
}

enum RunEnd {
    Exited(ExitOutcome),
    KilledByProbe(ExitOutcome, String),
    Stopped(ExitOutcome),
}

struct Supervisor {
    launch: ContainerLaunch,
    reaper: Reaper,
    snapshot: watch::Sender<ContainerSnapshot>,
    changed: Arc<Notify>,
    events: Option<mpsc::Sender<ContainerEvent>>,
}

impl Supervisor {
    fn publish(&self, update: impl FnOnce(&mut ContainerSnapshot)) {
        let changed = self.snapshot.send_if_modified(|snapshot| {
            let before = snapshot.clone();
            update(snapshot);
            *snapshot != before
        });
        if changed {
            self.changed.notify_one();
        }
    }

    fn event(&self, reason: &'static str, message: String, warning: bool) {
        if let Some(events) = &self.events {
            let _ = events.try_send(ContainerEvent {
                container: self.launch.name.clone(),
                reason,
                message,
                warning,
            });
        }
    }

    async fn run(self, mut stop: oneshot::Receiver<Duration>) {
        let mut delay = self.launch.backoff.initial;
        loop {
            let started_at = Timestamp::now();
            let begun = Instant::now();
            let (end, message) = match self.run_once(&mut stop).await {
                Ok(RunEnd::Exited(outcome)) => (Some(outcome), None),
                Ok(RunEnd::KilledByProbe(outcome, why)) => (Some(outcome), Some(why)),
                Ok(RunEnd::Stopped(outcome)) => {
                    let terminated = terminated(outcome, started_at, None);
                    self.publish(|s| {
                        s.state = RunState::Terminated(terminated);
                        s.ready = false;
                        s.pid = None;
                    });
                    return;
                }
                Err(start_error) => (None, Some(start_error)),
            };
            let terminated = match end {
                Some(outcome) => terminated(outcome, started_at, message),
                None => Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message,
                    started_at,
                    finished_at: Timestamp::now(),
                },
            };
            if !self.launch.restart_policy.restarts_after(&terminated) {
                self.publish(|s| {
                    s.state = RunState::Terminated(terminated);
                    s.ready = false;
                    s.pid = None;
                });
                // Finished for good; stay until the pod goes away (nothing left to stop).
                let _ = stop.await;
                return;
            }
            if begun.elapsed() >= BACKOFF_RESET_AFTER {
                delay = self.launch.backoff.initial;
            }
            let back_off_message = format!(
                "back-off {}ms restarting failed container={}",
                delay.as_millis(),
                self.launch.name
            );
            self.event("BackOff", back_off_message.clone(), true);
            self.publish(|s| {
                s.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(back_off_message),
                };
                s.last_terminated = Some(terminated.clone());
                s.ready = false;
                s.started = false;
                s.pid = None;
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut stop => {
                    self.publish(|s| s.state = RunState::Terminated(terminated));
                    return;
                }
            }
            delay = (delay * 2).min(self.launch.backoff.max);
            self.publish(|s| s.restart_count += 1);
        }
    }

    /// Opens the run's log, spawns the process and publishes it as running; a container with
    /// a startup probe is not started (nor ready) until the probe passes.
    async fn start_process(&self) -> Result<RunningProcess, String> {
        let log = LogSink::open_for_new_run(
            &self.launch.log_dir,
            &self.launch.name,
            self.launch.max_log_bytes,
        )
        .await
        .map_err(|e| e.to_string())?;
        let process = match RunningProcess::spawn(&self.launch.process, log, &self.reaper).await {
            Ok(process) => process,
            Err(error) => {
                self.event("Failed", format!("Error: {error}"), true);
                return Err(error.to_string());
            }
        };
        let started_at = Timestamp::now();
        let has_startup = self.launch.startup_probe.is_some();
        let has_readiness = self.launch.readiness_probe.is_some();
        self.publish(|s| {
            s.state = RunState::Running { started_at };
            s.started = !has_startup;
            s.ready = !has_startup && !has_readiness;
            s.pid = Some(process.pid());
        });
        self.event(
            "Started",
            format!("Started container {}", self.launch.name),
            false,
        );
        Ok(process)
    }

    /// Where exec probes run: the container's env and working dir, inside its image when it
    /// has one.
    fn exec_context(&self, process: &RunningProcess) -> ExecContext {
        ExecContext {
            env: self.launch.process.env.clone(),
            working_dir: self.launch.process.working_dir.clone(),
            in_image: self
                .launch
                .process
                .sandbox
                .as_ref()
                .map(|_| super::probe::InImage {
                    shim_pid: process.pid(),
                    uid: self.launch.process.security.user.map_or(0, |u| u.0),
                    gid: self.launch.process.security.user.map_or(0, |u| u.1),
                }),
        }
    }

    /// One run of the process. Err is a start failure, described.
    async fn run_once(&self, stop: &mut oneshot::Receiver<Duration>) -> Result<RunEnd, String> {
        let mut process = self.start_process().await?;
        let has_readiness = self.launch.readiness_probe.is_some();
        let exec = self.exec_context(&process);
        let (probe_tx, mut probe_rx) = mpsc::channel(PROBE_SIGNAL_CAPACITY);
        let mut probes = ProbeTasks(Vec::new());
        match &self.launch.startup_probe {
            Some(spec) => probes
                .0
                .push(spawn_probe(ProbeKind::Startup, spec, &exec, &probe_tx)),
            None => self.start_steady_probes(&mut probes, &exec, &probe_tx),
        }

        loop {
            tokio::select! {
                outcome = process.wait() => return Ok(RunEnd::Exited(outcome)),
                grace = &mut *stop => {
                    let grace = grace.unwrap_or(self.launch.termination_grace);
                    self.event("Killing", format!("Stopping container {}", self.launch.name), false);
                    return Ok(RunEnd::Stopped(process.stop(grace).await));
                }
                Some(signal) = probe_rx.recv() => match signal {
                    ProbeSignal::StartupPassed => {
                        self.publish(|s| {
                            s.started = true;
                            s.ready = !has_readiness;
                        });
                        self.start_steady_probes(&mut probes, &exec, &probe_tx);
                    }
                    ProbeSignal::Readiness(ready) => {
                        self.publish(|s| s.ready = ready);
                    }
                    ProbeSignal::StartupFailed(why) | ProbeSignal::LivenessFailed(why) => {
                        self.event("Unhealthy", why.clone(), true);
                        self.event(
                            "Killing",
                            format!("Container {} failed a probe, will be restarted", self.launch.name),
                            false,
                        );
                        self.publish(|s| s.ready = false);
                        let outcome = process.stop(self.launch.termination_grace).await;
                        return Ok(RunEnd::KilledByProbe(outcome, why));
                    }
                }
            }
        }
    }
}

fn terminated(outcome: ExitOutcome, started_at: Timestamp, message: Option<String>) -> Terminated {
    Terminated {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        reason: if outcome.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .into(),
        message,
        started_at,
        finished_at: Timestamp::now(),
    }
}
