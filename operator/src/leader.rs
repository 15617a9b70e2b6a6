//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles, writes status and ingests heartbeats.
//!
//! The rules are client-go's: a candidate takes the lease when it is free or when its record has
//! not changed for a whole lease duration *as observed on the candidate's own clock* (so clock skew
//! between nodes does not matter); every write carries the resourceVersion it read, so two
//! candidates can never both win. A leader renews every retry period and, if it has not renewed
//! for the renew deadline (shorter than the lease duration), gives up before anyone else may take
//! over. kube-lease-manager fits kube 5 but keeps reporting leadership while the API server is
//! unreachable, which is exactly when a leader must stop.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::labels;

/// Where the lease lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub lease_name: String,
    pub namespace: String,
    /// This replica: its pod name where it runs in a pod.
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops leading; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between two attempts to take or renew the lease.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Checks the timings relate the way the algorithm needs.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() || self.renew_deadline <= self.retry_period {
            return Err(
                "--lease-renew-deadline-seconds must be greater than --lease-retry-period-seconds"
                    .into(),
            );
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(
                "--lease-duration-seconds must be greater than --lease-renew-deadline-seconds"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Whether this replica leads now. Cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
}

impl Leadership {
    /// For a single replica without election: always the leader.
    pub fn always() -> Self {
        Self::fixed(true)
    }

    /// A leadership that never changes, for a replica that never elects (and for tests).
    pub fn fixed(leading: bool) -> Self {
        let (tx, rx) = watch::channel(leading);
        // The value never changes; the receiver keeps reading the last one after the sender is gone.
        drop(tx);
        Self { leading: rx }
    }

    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) {
        let _ = self.leading.wait_for(|leading| *leading).await;
    }

    /// Resolves when this replica stops leading (it led, then lost or released the lease).
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }
}

/// How an election loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The leader could not renew in time, or saw another holder: it must stop writing now.
    Lost,
    /// Shutdown was asked; a held lease was released so a follower takes over at once.
    Shutdown,
}

/// The lease record as this replica last saw it, and when it saw it change.
#[derive(Clone, Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    duration: Duration,
    changed_at: Instant,
}

/// Starts electing; the returned handle tells whether this replica leads.
pub fn start(
    client: Client,
    settings: LeaseSettings,
    shutdown: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<Ended>) {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let task = tokio::spawn(run(api, settings, tx, shutdown));
    (Leadership { leading: rx }, task)
}

async fn run(
    api: Api<Lease>,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Ended {
    let mut observed: Option<Observed> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        let attempt_started = Instant::now();
        // A hanging API call must not keep a leader past its renew deadline.
        let budget = match (last_renewal, *leading.borrow()) {
            (Some(at), true) => settings.renew_deadline.saturating_sub(at.elapsed()),
            _ => settings.lease_duration,
        };
        let attempt = tokio::time::timeout(
            budget.max(Duration::from_millis(100)),
            try_acquire_or_renew(&api, &settings, &mut observed),
        )
        .await
        .unwrap_or_else(|_| Err(kube::Error::Service("lease request timed out".into())));
        match attempt {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(lease = %settings.lease_name, identity = %settings.identity, "became the leader");
                    leading.send_replace(true);
                }
                last_renewal = Some(attempt_started);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::error!(lease = %settings.lease_name, "another replica holds the lease: stopping");
                    leading.send_replace(false);
                    return Ended::Lost;
                }
            }
            Err(error) => {
                tracing::warn!(lease = %settings.lease_name, %error, "lease attempt failed");
                if *leading.borrow()
                    && last_renewal.is_none_or(|at| at.elapsed() >= settings.renew_deadline)
                {
                    tracing::error!(lease = %settings.lease_name, "could not renew the lease within the renew deadline: stopping");
                    leading.send_replace(false);
                    return Ended::Lost;
                }
            }
        }
        // A leader whose renewal is late must stop even while an attempt hangs: the wait below is
        // cut at the renew deadline.
        let wait = match (last_renewal, *leading.borrow()) {
            (Some(at), true) => settings
                .retry_period
                .min(settings.renew_deadline.saturating_sub(at.elapsed())),
            _ => settings.retry_period,
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                if *leading.borrow() {
                    leading.send_replace(false);
                    release(&api, &settings).await;
                }
                return Ended::Shutdown;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt: true when this replica holds the lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> kube::Result<bool> {
    let now = MicroTime(jiff::Timestamp::now());
    let Some(mut lease) = api.get_opt(&settings.lease_name).await? else {
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(settings.lease_name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(held_spec(settings, now.clone(), now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = Observed {
        holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
        renew_time: spec.renew_time.clone(),
        duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        changed_at: Instant::now(),
    };
    let seen = match observed.take() {
        Some(previous)
            if previous.holder == record.holder && previous.renew_time == record.renew_time =>
        {
            previous
        }
        _ => record,
    };
    let holder = seen.holder.clone();
    let held_by_us = holder.as_deref() == Some(settings.identity.as_str());
    let expired = seen.changed_at.elapsed() >= seen.duration;
    *observed = Some(seen);
    if holder.is_some() && !held_by_us && !expired {
        return Ok(false);
    }
    let (acquire_time, transitions) = if held_by_us {
        (
            spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
            spec.lease_transitions.unwrap_or(0),
        )
    } else {
        (
            now.clone(),
            spec.lease_transitions.unwrap_or(0).saturating_add(1),
        )
    };
    lease.spec = Some(held_spec(settings, acquire_time, now, transitions));
    // `replace` sends the resourceVersion that was read: a concurrent writer makes this a 409.
    match api
        .replace(&settings.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn held_spec(
    settings: &LeaseSettings,
    acquire_time: MicroTime,
    renew_time: MicroTime,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(acquire_time),
        renew_time: Some(renew_time),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Hands the lease back on a clean shutdown so a follower need not wait for it to expire.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.lease_name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    lease.spec = Some(spec);
    match api
        .replace(&settings.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %settings.lease_name, "released the lease"),
        Err(error) => {
            tracing::warn!(lease = %settings.lease_name, %error, "could not release the lease")
        }
    }
}

/// Sets (`leading`) or clears the leader label on this replica's own pod, which the heartbeat
/// Service selects. A new leader also clears the label from any other pod of the namespace: a
/// killed leader's pod keeps its labels until its container runs again.
pub async fn mark_own_pod(client: Client, namespace: &str, pod: &str, leading: bool) {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    if leading {
        let selector = format!("{}=true", labels::LEADER);
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(others) => {
                for other in others.items {
                    let name = other.metadata.name.unwrap_or_default();
                    if name != pod {
                        set_label(&api, &name, false).await;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list pods carrying the leader label"),
        }
    }
    set_label(&api, pod, leading).await;
}

async fn set_label(api: &Api<Pod>, pod: &str, leading: bool) {
    let value = if leading {
        serde_json::Value::String("true".into())
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {labels::LEADER: value}}});
    match api
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(pod, leading, "leader label updated"),
        Err(error) => tracing::warn!(pod, %error, "could not update the leader label"),
    }
}

/// `capsule_operator_leader`: 1 while this replica leads.
pub fn register_gauge(registry: &mut prometheus_client::registry::Registry) -> Gauge {
    let gauge = Gauge::default();
    registry.sub_registry_with_prefix("capsule").register(
        "operator_leader",
        "1 while this operator replica holds the lease (always 1 without leader election)",
        gauge.clone(),
    );
    gauge
}

/// Keeps the gauge equal to the leadership until the election ends.
pub async fn track_gauge(mut leadership: Leadership, gauge: Gauge) {
    loop {
        gauge.set(i64::from(leadership.is_leading()));
        // An unseen last value is still reported before the closed channel ends the loop.
        if leadership.leading.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, deadline: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            lease_name: "capsule-operator".into(),
            namespace: "default".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_must_nest() {
        assert!(settings(10, 7, 2).validate().is_ok());
        assert!(settings(7, 7, 2)
            .validate()
            .unwrap_err()
            .contains("--lease-duration-seconds"));
        assert!(settings(10, 2, 2)
            .validate()
            .unwrap_err()
            .contains("--lease-renew-deadline-seconds"));
    }

    #[tokio::test]
    async fn always_leads_without_election() {
        let mut leadership = Leadership::always();
        assert!(leadership.is_leading());
        leadership.acquired().await;
    }
}
