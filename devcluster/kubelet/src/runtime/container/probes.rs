//! A run's probes: each probe is a task that counts successes and failures against its
//! thresholds and tells the supervisor only what changes the container's state.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::probe::{run_probe, ExecContext, ProbeOutcome, ProbeSpec};
use super::Supervisor;

pub(super) enum ProbeSignal {
    StartupPassed,
    StartupFailed(String),
    LivenessFailed(String),
    Readiness(bool),
}

#[derive(Clone, Copy)]
pub(super) enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// Aborts the probe tasks of a run when the run ends, however it ends.
pub(super) struct ProbeTasks(pub(super) Vec<JoinHandle<()>>);

impl Drop for ProbeTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Supervisor {
    pub(super) fn start_steady_probes(
        &self,
        probes: &mut ProbeTasks,
        exec: &ExecContext,
        tx: &mpsc::Sender<ProbeSignal>,
    ) {
        if let Some(spec) = &self.launch.liveness_probe {
            probes
                .0
                .push(spawn_probe(ProbeKind::Liveness, spec, exec, tx));
        }
        if let Some(spec) = &self.launch.readiness_probe {
            probes
                .0
                .push(spawn_probe(ProbeKind::Readiness, spec, exec, tx));
        }
    }
}

pub(super) fn spawn_probe(
    kind: ProbeKind,
    spec: &ProbeSpec,
    exec: &ExecContext,
    tx: &mpsc::Sender<ProbeSignal>,
) -> JoinHandle<()> {
    tokio::spawn(probe_loop(kind, spec.clone(), exec.clone(), tx.clone()))
}

async fn probe_loop(
    kind: ProbeKind,
    spec: ProbeSpec,
    exec: ExecContext,
    tx: mpsc::Sender<ProbeSignal>,
) {
    let failure_threshold = spec.failure_threshold.max(1);
    let success_threshold = spec.success_threshold.max(1);
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut ready = false;
    tokio::time::sleep(spec.initial_delay).await;
    loop {
        match run_probe(&spec.action, spec.timeout, &exec).await {
            ProbeOutcome::Success => {
                successes += 1;
                failures = 0;
                match kind {
                    ProbeKind::Startup => {
                        let _ = tx.send(ProbeSignal::StartupPassed).await;
                        return;
                    }
                    ProbeKind::Readiness if !ready && successes >= success_threshold => {
                        ready = true;
                        let _ = tx.send(ProbeSignal::Readiness(true)).await;
                    }
                    _ => {}
                }
            }
            ProbeOutcome::Failure(why) => {
                failures += 1;
                successes = 0;
                if failures >= failure_threshold {
                    match kind {
                        ProbeKind::Startup => {
                            let _ = tx
                                .send(ProbeSignal::StartupFailed(format!(
                                    "Startup probe failed: {why}"
                                )))
                                .await;
                            return;
                        }
                        ProbeKind::Liveness => {
                            let _ = tx
                                .send(ProbeSignal::LivenessFailed(format!(
                                    "Liveness probe failed: {why}"
                                )))
                                .await;
                            return;
                        }
                        ProbeKind::Readiness if ready => {
                            ready = false;
                            let _ = tx.send(ProbeSignal::Readiness(false)).await;
                        }
                        ProbeKind::Readiness => {}
                    }
                }
            }
        }
        tokio::time::sleep(spec.period).await;
    }
}
