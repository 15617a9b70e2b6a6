//! The CapsuleSession controller: binds an idle worker of the referenced pool to each session, hands
//! the client an endpoint and a token, and releases the worker when the session goes.
//!
//! Binding is a compare-and-swap on the worker pod (a patch carrying the pod's resourceVersion), so
//! two sessions can never take the same worker, even across operator restarts: a session that finds a
//! pod already labelled with its own name finishes that binding instead of taking another.

mod finished;
pub mod info;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_crds::{
    CapsulePool, CapsuleSession, CapsuleSessionStatus, PoolCounters, ReleaseAction, SecretKeyRef,
    SessionPhase, SessionPolicy, WorkerPhase,
};
use capsule_protocol::admin::WorkerClient;
use capsule_protocol::auth::token_sha256_hex;
use capsule_protocol::heartbeat::SessionBinding;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::conditions::{self, DesiredCondition};
use crate::context::{Context, PendingAcquisition};
use crate::error::{backoff, Error, Result};
use crate::labels;
use crate::metrics::{ControllerName, PoolLabels};
use crate::pool::plan;
use crate::pool::token::{new_token, owned_token_secret};
use crate::reconcile_timer::ReconcileTimer;
use crate::relay::index::WorkerRecord;

/// How often a waiting session looks for a worker again (a new worker turning Ready also wakes it).
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How often a bound session checks its worker and idle timeout.
const BOUND_CHECK: Duration = Duration::from_secs(5);
/// Pending sessions whose first sighting is remembered before old entries are swept.
const FIRST_SEEN_LIMIT: usize = 10_000;
/// How often a session whose pool does not exist looks for it again.
const POOL_POLL: Duration = Duration::from_secs(2);

fn pool_labels(ns: &str, pool: &str) -> PoolLabels {
    PoolLabels {
        namespace: ns.into(),
        pool: pool.into(),
    }
}

#[instrument(skip_all, fields(namespace = session.namespace().unwrap_or_default(), session = session.name_any(), trace_id = tracing::field::Empty))]
pub async fn reconcile(session: Arc<CapsuleSession>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ReconcileTimer::start(&ctx.metrics, ControllerName::session);
    reconcile_inner(&session, &ctx).await
}

async fn reconcile_inner(session: &CapsuleSession, ctx: &Context) -> Result<Action> {
    let ns = session
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(session.name_any()))?;
    let name = session.name_any();
    let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), &ns);
    let has_finalizer = session
        .finalizers()
        .iter()
        .any(|f| f == labels::RELEASE_FINALIZER);

    if session.metadata.deletion_timestamp.is_some() {
        forget_pending(ctx, session);
        if has_finalizer {
            release(ctx, session, &ns).await?;
            let remaining: Vec<&String> = session
                .finalizers()
                .iter()
                .filter(|f| *f != labels::RELEASE_FINALIZER)
                .collect();
            let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": session.resource_version()}});
            sessions
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        return Ok(Action::await_change());
    }

    let phase = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match phase {
        SessionPhase::Released | SessionPhase::Failed => {
            forget_pending(ctx, session);
            finished::reconcile(ctx, session, &ns).await
        }
        SessionPhase::Bound => check_bound(ctx, session, &ns).await,
        SessionPhase::Pending if has_finalizer => {
            note_pending(ctx, session);
            acquire(ctx, session, &ns, None).await
        }
        SessionPhase::Pending => {
            note_pending(ctx, session);
            // The finalizer is added in the same pass as the binding, concurrently with the reads
            // the binding needs: waiting for the finalizer's own watch event would add a round
            // trip to every acquisition. No worker is taken before the finalizer is stored.
            let mut finalizers = session.finalizers().to_vec();
            finalizers.push(labels::RELEASE_FINALIZER.into());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": session.resource_version()}});
            let add_finalizer = async {
                sessions
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::from)
            };
            acquire(ctx, session, &ns, Some(Box::pin(add_finalizer))).await
        }
    }
}

/// Writes the session's status with server-side apply, only when it changed.
async fn write_status(
    ctx: &Context,
    session: &CapsuleSession,
    status: CapsuleSessionStatus,
) -> Result<()> {
    if session.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = session.namespace().unwrap_or_default();
    let api: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
                       "metadata": {"name": session.name_any()}, "status": status});
    api.patch_status(
        &session.name_any(),
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn status_with(
    session: &CapsuleSession,
    phase: SessionPhase,
    ready: DesiredCondition,
) -> CapsuleSessionStatus {
    let mut status = session.status.clone().unwrap_or_default();
    status.phase = phase;
    status.observed_generation = session.metadata.generation;
    status.conditions = conditions::merge(
        &status.conditions,
        &[ready],
        session.metadata.generation,
        Timestamp::now(),
    );
    status
}

async fn event(
    ctx: &Context,
    session: &CapsuleSession,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &session.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

fn age_ms(session: &CapsuleSession) -> i64 {
    session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).as_millis() as i64)
        .unwrap_or(0)
        .max(0)
}

/// Takes what this process noted of a session that is now bound: how long it waited for a worker
/// (from when this process first saw it, or, for a session an earlier process saw first, from its
/// `creationTimestamp`, whole seconds, so up to a second more than the truth) and what was counted.
fn take_pending(ctx: &Context, session: &CapsuleSession) -> (i64, Option<PendingAcquisition>) {
    let pending = session.uid().and_then(|uid| {
        ctx.pending_sessions
            .lock()
            .expect("pending-sessions lock")
            .remove(&uid)
    });
    let waited_ms = match &pending {
        Some(p) => p.first_seen.elapsed().as_millis() as i64,
        None => age_ms(session),
    };
    (waited_ms, pending)
}

fn forget_pending(ctx: &Context, session: &CapsuleSession) {
    if let Some(uid) = session.uid() {
        ctx.pending_sessions
            .lock()
            .expect("pending-sessions lock")
            .remove(&uid);
    }
}

/// Notes when this process first saw a pending session.
fn note_pending(ctx: &Context, session: &CapsuleSession) {
    let Some(uid) = session.uid() else { return };
    let mut pending = ctx.pending_sessions.lock().expect("pending-sessions lock");
    if pending.len() >= FIRST_SEEN_LIMIT {
        // Entries of sessions removed without a final pass (finalizer stripped by hand) would
        // otherwise stay: drop everything older than any acquire timeout.
        pending.retain(|_, p| p.first_seen.elapsed() < Duration::from_secs(86_400));
    }
    pending.entry(uid).or_insert_with(|| PendingAcquisition {
        first_seen: Instant::now(),
        attempt_counted: false,
        miss_counted: false,
    });
}

/// Marks the attempt (and, with `miss`, the miss) of a pending session counted; returns which of
/// the two were not counted before by this process.
fn mark_counted(ctx: &Context, session: &CapsuleSession, miss: bool) -> (bool, bool) {
    let Some(uid) = session.uid() else {
        return (true, miss);
    };
    let mut pending = ctx.pending_sessions.lock().expect("pending-sessions lock");
    match pending.get_mut(&uid) {
        Some(p) => {
            let new_attempt = !p.attempt_counted;
            let new_miss = miss && !p.miss_counted;
            p.attempt_counted = true;
            p.miss_counted |= miss;
            (new_attempt, new_miss)
        }
        None => (true, miss),
    }
}

/// A request still to be awaited, such as the finalizer patch that runs alongside the reads.
type InFlight<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The pool's counters as its last written status has them: the operator's in-memory counters
/// start from there after a restart, whichever controller sees the pool first.
fn pool_seed(pool: &CapsulePool) -> PoolCounters {
    pool.status
        .as_ref()
        .and_then(|s| s.pool.clone())
        .unwrap_or_default()
}

async fn acquire(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    add_finalizer: Option<InFlight<'_, CapsuleSession>>,
) -> Result<Action> {
    let name = session.name_any();
    let pool_name = session.spec.pool.clone();
    let key = (ns.to_string(), pool_name.clone());
    let metric = pool_labels(ns, &pool_name);
    let pools: Api<CapsulePool> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // The first pass that sees the session pending: it counts one acquisition attempt.
    let first_pass = session.status.as_ref().is_none_or(first_look_at_pool);

    // Every read the binding needs goes out at once; each is one round trip to the API server.
    let finalizer = async {
        match add_finalizer {
            Some(patch) => patch.await.map(Some),
            None => Ok(None),
        }
    };
    let selector = labels::pool_selector(&pool_name);
    let list_params = ListParams::default().labels(&selector);
    let (finalizer, pool, listed, token) = tokio::join!(
        finalizer,
        pools.get_opt(&pool_name),
        pods.list(&list_params),
        ensure_token(ctx, session, ns, first_pass),
    );
    // No worker is taken before the finalizer that releases it is stored.
    finalizer?;
    let token_hash = token?.1;
    let listed = listed?.items;
    let Some(pool) = pool? else {
        return pool_missing(ctx, session, ns).await;
    };
    let seed = || pool_seed(&pool);
    ctx.with_pool(&key, seed, |_| ());

    // Finish a binding an earlier pass (or an earlier operator) started.
    if let Some(pod) = listed
        .iter()
        .find(|p| p.labels().get(labels::SESSION) == Some(&name))
    {
        // The cached session may predate that pass's status write: read it fresh, so a binding
        // already recorded is neither written nor counted again.
        let sessions: Api<CapsuleSession> = Api::namespaced(ctx.client.clone(), ns);
        let Some(fresh) = sessions.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        let status = fresh.status.clone().unwrap_or_default();
        if status.phase != SessionPhase::Pending {
            return Ok(Action::requeue(BOUND_CHECK));
        }
        let first_pass = first_look_at_pool(&status);
        return finish_binding(ctx, &fresh, &pool, pod.clone(), first_pass, &token_hash).await;
    }

    let now = Instant::now();
    let mut candidates: Vec<&Pod> = listed
        .iter()
        .filter(|p| plan::classify(p) == WorkerPhase::Idle)
        .filter(|p| {
            // A worker that has heartbeated recently; one never heard from is trusted only while the
            // operator itself is young (after a restart the index is empty for a heartbeat period).
            match ctx.index.heartbeat_age(ns, &p.name_any(), now) {
                Some(age) => age.as_secs() <= pool.spec.heartbeat.staleness_seconds as u64,
                None => {
                    ctx.started.elapsed().as_secs() <= pool.spec.heartbeat.staleness_seconds as u64
                }
            }
        })
        .collect();
    // Oldest first: the most warmed-up worker.
    candidates.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });

    for pod in candidates {
        let patch = json!({"metadata": {
            "resourceVersion": pod.resource_version(),
            "labels": {labels::SESSION: name},
            "annotations": {labels::SESSION_TOKEN_SHA256: token_hash},
        }});
        match pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(bound) => {
                return finish_binding(ctx, session, &pool, bound, first_pass, &token_hash).await
            }
            // Another session took it first: try the next.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }

    // A miss: no idle worker. The pool controller counts this session as waiting and grows.
    let waited_ms = age_ms(session);
    let already_missed = session
        .status
        .as_ref()
        .is_some_and(|s| s.warm_hit == Some(false));
    let timeout_ms = pool.spec.sessions.acquire_timeout_seconds * 1000;
    if waited_ms > timeout_ms {
        let message = format!(
            "no worker of pool {pool_name} became free within spec.sessions.acquireTimeoutSeconds ({}s)",
            pool.spec.sessions.acquire_timeout_seconds
        );
        let mut status = status_with(
            session,
            SessionPhase::Failed,
            DesiredCondition::new("Bound", false, "AcquireTimeout", message.clone()),
        );
        status.reason = Some("AcquireTimeout".into());
        status.message = Some(message.clone());
        write_status(ctx, session, status).await?;
        ctx.with_pool(&key, seed, |s| s.counters.acquisition.timeouts += 1);
        ctx.metrics
            .acquisition_timeouts
            .get_or_create(&metric)
            .inc();
        event(ctx, session, EventType::Warning, "AcquireTimeout", message).await;
        return Ok(Action::await_change());
    }
    let live = listed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let condition = if live as i32 >= pool.spec.max_workers {
        DesiredCondition::new(
            "Bound",
            false,
            "PoolExhausted",
            format!(
                "all {} workers of pool {pool_name} are in use (spec.maxWorkers): waiting for one to be released",
                pool.spec.max_workers
            ),
        )
    } else {
        DesiredCondition::new(
            "Bound",
            false,
            "WaitingForWorker",
            format!("starting a new worker in pool {pool_name}"),
        )
    };
    let mut status = status_with(session, SessionPhase::Pending, condition);
    status.warm_hit = Some(false);
    write_status(ctx, session, status).await?;
    // Counted once the status that records them is stored, so a failed write never counts twice.
    let (new_attempt, new_miss) = mark_counted(ctx, session, !already_missed);
    if first_pass && new_attempt {
        ctx.with_pool(&key, seed, |s| s.counters.acquisition.attempts += 1);
    }
    if new_miss {
        ctx.with_pool(&key, seed, |s| s.counters.misses += 1);
        ctx.metrics.misses.get_or_create(&metric).inc();
    }
    Ok(Action::requeue(WAIT_POLL))
}

/// Whether no pass has looked for a worker yet: the status has no condition, or only the one that
/// says the pool was missing. Such a pass counts the acquisition attempt.
fn first_look_at_pool(status: &CapsuleSessionStatus) -> bool {
    status
        .conditions
        .iter()
        .all(|c| c.type_ == "Bound" && c.reason == "PoolNotFound")
}

/// A session whose pool does not exist waits for it, up to the default acquire timeout (the
/// pool's own setting cannot be read), then fails with reason `PoolNotFound`.
async fn pool_missing(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<Action> {
    let pool_name = &session.spec.pool;
    let timeout_s = SessionPolicy::default().acquire_timeout_seconds;
    if age_ms(session) > timeout_s * 1000 {
        let message = format!(
            "CapsulePool {pool_name} did not appear in namespace {ns} within {timeout_s}s (the default spec.sessions.acquireTimeoutSeconds)"
        );
        let mut status = status_with(
            session,
            SessionPhase::Failed,
            DesiredCondition::new("Bound", false, "PoolNotFound", message.clone()),
        );
        status.reason = Some("PoolNotFound".into());
        status.message = Some(message.clone());
        write_status(ctx, session, status).await?;
        event(ctx, session, EventType::Warning, "PoolNotFound", message).await;
        return Ok(Action::await_change());
    }
    let status = status_with(
        session,
        SessionPhase::Pending,
        DesiredCondition::new(
            "Bound",
            false,
            "PoolNotFound",
            format!("CapsulePool {pool_name} does not exist in namespace {ns}: create it or fix spec.pool"),
        ),
    );
    write_status(ctx, session, status).await?;
    Ok(Action::requeue(POOL_POLL))
}

/// The session's token Secret (created once, owned by the session) and the token's sha256. On the
/// session's first pass the create goes first (one round trip when the Secret is new); later
/// passes read it first.
async fn ensure_token(
    ctx: &Context,
    session: &CapsuleSession,
    ns: &str,
    likely_new: bool,
) -> Result<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = labels::session_token_secret(&session.name_any());
    let existing = if likely_new {
        None
    } else {
        secrets.get_opt(&secret_name).await?
    };
    let existing = match existing {
        Some(stale) if !owned_by(&stale, session) => {
            delete_stale_token(&secrets, &stale).await?;
            None
        }
        other => other,
    };
    let token = match existing {
        Some(existing) => crate::relay::directory::secret_token(&existing).unwrap_or_default(),
        None => {
            let token = new_token();
            let secret = owned_token_secret(session, secret_name.clone(), labels::SESSION, &token);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => token,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = secrets.get(&secret_name).await?;
                    if !owned_by(&existing, session) {
                        // An earlier session of this name left it: never hand its token on.
                        delete_stale_token(&secrets, &existing).await?;
                        return Err(kube::Error::Api(s).into());
                    }
                    crate::relay::directory::secret_token(&existing).unwrap_or_default()
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let hash = token_sha256_hex(&token);
    Ok((token, hash))
}

/// Whether the token Secret belongs to this very session (by uid), not to an earlier session of
/// the same name whose Secret the garbage collector has not removed yet.
fn owned_by(secret: &Secret, session: &CapsuleSession) -> bool {
    let uid = session.metadata.uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.kind == "CapsuleSession" && Some(o.uid.as_str()) == uid)
}

async fn delete_stale_token(secrets: &Api<Secret>, stale: &Secret) -> Result<()> {
    let uid = stale.metadata.uid.clone();
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&stale.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The credential the operator presents to the worker `pod` of `pool`.
fn worker_token(ctx: &Context, ns: &str, pool: &str, pod: &Pod) -> Option<String> {
    let key = ctx.directory.get()?.pool_key(ns, pool)?;
    Some(crate::relay::directory::credential_of(&key, pod))
}

fn endpoint(pod: &Pod, port: i32) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(format!("http://{ip}:{port}"))
}

async fn finish_binding(
    ctx: &Context,
    session: &CapsuleSession,
    pool: &CapsulePool,
    pod: Pod,
    first_pass: bool,
    token_hash: &str,
) -> Result<Action> {
    let ns = session.namespace().unwrap_or_default();
    let name = session.name_any();
    let pool_name = pool.name_any();
    let key = (ns.clone(), pool_name.clone());
    let metric = pool_labels(&ns, &pool_name);
    let Some(url) = endpoint(&pod, ctx.config.worker_port) else {
        return Ok(Action::requeue(WAIT_POLL));
    };

    // Tell the worker before the client can learn the endpoint, so the client's first execution
    // is accepted; the heartbeat reply says the same, so a lost call heals itself.
    if let Some(token) = worker_token(ctx, &ns, &pool_name, &pod) {
        let binding = SessionBinding {
            session: name.clone(),
            namespace: ns.clone(),
            token_sha256: token_hash.to_owned(),
            session_uid: None,
            checkpoint_key: None,
        };
        if let Err(error) = WorkerClient::new(ctx.http.clone(), &url, token)
            .bind(&binding)
            .await
        {
            warn!(%error, pod = %pod.name_any(), "the session binding did not reach the worker; its next heartbeat retries");
        }
    }
    ctx.index.touch(&ns, &pod.name_any(), Instant::now());

    let (latency_ms, pending) = take_pending(ctx, session);
    // What this process counted outranks a cached status that may predate its write.
    let first_pass = first_pass && !pending.is_some_and(|p| p.attempt_counted);
    let warm_hit = session
        .status
        .as_ref()
        .and_then(|s| s.warm_hit)
        .unwrap_or(true)
        && first_pass;
    let mut status = status_with(
        session,
        SessionPhase::Bound,
        DesiredCondition::new(
            "Bound",
            true,
            "WorkerBound",
            format!("bound to worker {}", pod.name_any()),
        ),
    );
    status.worker = Some(pod.name_any());
    status.endpoint = Some(url);
    status.token_secret = Some(SecretKeyRef {
        name: labels::session_token_secret(&name),
        key: labels::TOKEN_KEY.into(),
    });
    status.warm_hit = Some(warm_hit);
    status.acquisition_latency_ms = Some(latency_ms);
    status.bound_at = Some(Time(Timestamp::now()));
    status.gateway_url = ctx.config.session_gateway_url(&ns, &name);
    status.reason = None;
    status.message = None;
    write_status(ctx, session, status).await?;

    // Counted only once the status that records the binding is stored: a failed write is retried
    // by a later pass, which must not count the hit a second time.
    ctx.with_pool(
        &key,
        || pool_seed(pool),
        |s| {
            if first_pass {
                s.counters.acquisition.attempts += 1;
            }
            s.counters.acquisition.successes += 1;
            if warm_hit {
                s.counters.hits += 1;
            }
            s.record_latency(latency_ms);
        },
    );
    if warm_hit {
        ctx.metrics.hits.get_or_create(&metric).inc();
    }
    ctx.metrics
        .acquisition
        .get_or_create(&metric)
        .observe(latency_ms as f64 / 1000.0);
    info!(worker = %pod.name_any(), warm_hit, latency_ms, "session bound");
    event(
        ctx,
        session,
        EventType::Normal,
        "Bound",
        format!("bound to worker {} in {latency_ms} ms", pod.name_any()),
    )
    .await;
    Ok(Action::requeue(BOUND_CHECK))
}

async fn check_bound(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<Action> {
    let name = session.name_any();
    let status = session.status.clone().unwrap_or_default();
    let worker = status.worker.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod = pods.get_opt(&worker).await?;
    let lost = match &pod {
        None => Some(format!("worker {worker} is gone")),
        Some(p) if p.labels().get(labels::SESSION) != Some(&name) => Some(format!(
            "worker {worker} is no longer bound to this session"
        )),
        Some(p) if p.metadata.deletion_timestamp.is_some() => {
            Some(format!("worker {worker} is being deleted"))
        }
        Some(p) if plan::classify(p) == WorkerPhase::Unhealthy => {
            Some(format!("worker {worker} failed"))
        }
        Some(_) => None,
    };
    let pools: Api<CapsulePool> = Api::namespaced(ctx.client.clone(), ns);
    let pool = pools.get_opt(&session.spec.pool).await?;
    // One read of the worker's record serves staleness, restarts, the idle timeout and the view.
    let record = ctx.index.get(ns, &worker);
    let now = Instant::now();
    let stale = pool.as_ref().zip(record.as_ref()).is_some_and(|(pool, r)| {
        now.saturating_duration_since(r.last_seen).as_secs()
            > pool.spec.heartbeat.staleness_seconds as u64
    });
    let restarted = record.as_ref().is_some_and(|r| r.lost_session);
    let lost = lost
        .or_else(|| stale.then(|| format!("worker {worker} stopped sending heartbeats")))
        .or_else(|| {
            restarted.then(|| format!("worker {worker} restarted: the session's namespace is lost"))
        });
    if let Some(message) = lost {
        let mut failed = status_with(
            session,
            SessionPhase::Failed,
            DesiredCondition::new("Bound", false, "WorkerLost", message.clone()),
        );
        failed.reason = Some("WorkerLost".into());
        failed.message = Some(message.clone());
        write_status(ctx, session, failed).await?;
        event(ctx, session, EventType::Warning, "WorkerLost", message).await;
        return Ok(Action::await_change());
    }

    // Idle timeout: no execution for that long releases the session.
    if let Some(pool) = pool {
        let timeout = pool.spec.sessions.idle_timeout_seconds;
        if timeout > 0 {
            if let Some(record) = &record {
                let idle_for = now.saturating_duration_since(record.last_activity);
                if idle_for.as_secs() as i64 >= timeout {
                    let message = format!(
                        "no execution for {timeout}s (spec.sessions.idleTimeoutSeconds of pool {})",
                        pool.name_any()
                    );
                    let mut released = status_with(
                        session,
                        SessionPhase::Released,
                        DesiredCondition::new("Bound", false, "IdleTimeout", message.clone()),
                    );
                    released.reason = Some("IdleTimeout".into());
                    released.message = Some(message.clone());
                    // Status first: an operator killed before the release below finishes it in
                    // the Released phase's pass, whereas a release first would leave a Bound
                    // session without its worker, to be failed as WorkerLost.
                    write_status(ctx, session, released).await?;
                    release(ctx, session, ns).await?;
                    event(ctx, session, EventType::Normal, "Released", message).await;
                    return Ok(Action::await_change());
                }
            }
        }
    }
    if let Some(record) = &record {
        refresh_info(ctx, session, record).await?;
    }
    Ok(Action::requeue(BOUND_CHECK))
}

/// Writes the session's live view when it changed, at most once per status interval.
async fn refresh_info(
    ctx: &Context,
    session: &CapsuleSession,
    record: &WorkerRecord,
) -> Result<()> {
    let fresh = info::live_view(record);
    let mut status = session.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if !info::due(
        status.info.as_ref(),
        &fresh,
        now,
        ctx.config.status_interval,
    ) {
        return Ok(());
    }
    status.info = Some(capsule_crds::SessionInfo {
        observed_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        ..fresh
    });
    write_status(ctx, session, status).await
}

/// Gives the session's worker back: reset and return it to the pool, or replace it, per the pool's
/// `spec.recycle.onRelease`. A worker that cannot be reset is replaced: a dirty worker is never
/// handed to the next session.
async fn release(ctx: &Context, session: &CapsuleSession, ns: &str) -> Result<()> {
    let name = session.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let bound = pods
        .list(&ListParams::default().labels(&format!("{}={}", labels::SESSION, name)))
        .await?
        .items
        .into_iter()
        // A worker already being deleted is gone for good, and counted by whoever deleted it.
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect::<Vec<_>>();
    if bound.is_empty() {
        return Ok(());
    }
    let pools: Api<CapsulePool> = Api::namespaced(ctx.client.clone(), ns);
    let pool = pools.get_opt(&session.spec.pool).await?;
    let action = pool
        .as_ref()
        .map(|p| p.spec.recycle.on_release)
        .unwrap_or(ReleaseAction::Replace);
    for pod in bound {
        let pod_name = pod.name_any();
        let mut reset_ok = false;
        if action == ReleaseAction::Reset {
            if let (Some(url), Some(token)) = (
                endpoint(&pod, ctx.config.worker_port),
                worker_token(ctx, ns, &session.spec.pool, &pod),
            ) {
                reset_ok = WorkerClient::new(ctx.http.clone(), url, token)
                    .release(true)
                    .await
                    .is_ok();
            }
        }
        if reset_ok {
            let patch = json!({"metadata": {
                "labels": {labels::SESSION: null},
                "annotations": {labels::SESSION_TOKEN_SHA256: null},
            }});
            pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(worker = %pod_name, "released worker (reset)");
        } else {
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {}
                // Deleted meanwhile, by the pool controller or an earlier pass: counted there.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(e.into()),
            }
            let key = (ns.to_string(), session.spec.pool.clone());
            let seed = || pool.as_ref().map(pool_seed).unwrap_or_default();
            ctx.with_pool(&key, seed, |s| s.counters.workers_removed += 1);
            ctx.metrics.removed(
                &pool_labels(ns, &session.spec.pool),
                plan::RemovalReason::Released,
            );
            info!(worker = %pod_name, "released worker (replaced)");
        }
        event(
            ctx,
            session,
            EventType::Normal,
            "Released",
            format!("released worker {pod_name}"),
        )
        .await;
    }
    Ok(())
}

pub fn error_policy(_session: Arc<CapsuleSession>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(ControllerName::session, error.kind());
    warn!(error = %error, "session reconcile failed");
    Action::requeue(backoff(1))
}

/// Runs the session controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (sessions, pods): (Api<CapsuleSession>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(sessions, watcher::Config::default());
    let store = controller.store();
    // A worker turning Ready wakes the sessions waiting on its pool.
    let pod_watch =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    controller
        .watches(pods, pod_watch, move |pod: Pod| {
            let pool = pod.labels().get(labels::POOL).cloned();
            let ns = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|s| s.namespace() == ns && Some(&s.spec.pool) == pool.as_ref())
                .filter(|s| {
                    s.status
                        .as_ref()
                        .is_none_or(|st| st.phase == SessionPhase::Pending)
                })
                .map(|s| kube::runtime::reflector::ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                warn!(%error, "session controller stream error");
            }
            futures::future::ready(())
        })
        .await;
}
