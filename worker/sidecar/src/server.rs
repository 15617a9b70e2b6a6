//! The HTTP server on the pod IP (port 8001): `/healthz`, `/readyz`, `/metrics` (unauthenticated,
//! like any scrape target) and the gated introspection views under `/v1/introspection/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use capsule_protocol::auth::bearer_header;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::audit::{self, AuditRecord};
use crate::config::View;
use crate::exposition;
use crate::gate::{Caller, Gate, Verdict};
use crate::metrics::{Decision, Metrics};
use crate::rate_limit::{RateLimiter, Scope};
use crate::views::Sources;

/// Shared by every request.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub gate: Gate,
    pub views: Vec<View>,
    pub audit: bool,
    pub sources: Sources,
    pub limiter: RateLimiter,
}

/// The routes. Serve them with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// introspection rate limit keys clients by peer address.
pub fn router(state: Arc<AppState>) -> Router {
    let introspection = Router::new()
        .route("/v1/introspection/{view}", get(view))
        .route(
            "/v1/introspection/traces/{execution_id}",
            get(execution_traces),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .merge(introspection)
        .with_state(state)
}

/// Refuses over-limit introspection requests with 429 before they reach the gate. They are counted
/// (`capsule_sidecar_introspection_rate_limited_total`) rather than audited one by one, so a flood
/// cannot flood the log either.
async fn rate_limit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match state.limiter.check(peer.ip(), Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state.metrics.record_rate_limited(refusal.scope);
            let bound = match refusal.scope {
                Scope::Client => "per-client introspection rate limit (CAPSULE_INTROSPECTION_CLIENT_RATE / _BURST)",
                Scope::Global => "overall introspection rate limit (CAPSULE_INTROSPECTION_GLOBAL_RATE / _BURST)",
            };
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimited",
                &format!("over the {bound}; retry later"),
            );
            let seconds = refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            exposition::to_prometheus_text(&text),
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
struct RecentQuery {
    limit: Option<usize>,
    /// Only this session's executions and lifecycle events (given raw or as stored, hashed).
    session: Option<String>,
}

async fn view(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<RecentQuery>,
) -> Response {
    let view = View::parse(&name).filter(|v| v.name().eq_ignore_ascii_case(&name));
    gated(&state, &headers, view, |sources| async move {
        match view {
            Some(View::Traces) => {
                Ok(sources.recent_traces(query.limit.unwrap_or(20), query.session.as_deref()))
            }
            Some(View::Promises) => sources.promises().await,
            Some(View::Namespace) => sources.namespace_summary().await,
            Some(View::Counters) => sources.counters().await,
            Some(View::Pool) => sources.pool_status().await,
            None => unreachable!("gated() answers 404 for unknown views"),
        }
        .map(Some)
    })
    .await
}

async fn execution_traces(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(execution_id): Path<String>,
) -> Response {
    gated(&state, &headers, Some(View::Traces), |sources| async move {
        Ok(sources.execution_traces(&execution_id))
    })
    .await
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, Json(json!({ "code": code, "message": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Authenticates, authorises, checks the policy, serves, and audits the outcome.
async fn gated<'a, F, Fut>(
    state: &'a Arc<AppState>,
    headers: &HeaderMap,
    view: Option<View>,
    serve: F,
) -> Response
where
    F: FnOnce(&'a Sources) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Option<serde_json::Value>>>,
{
    let view_name = view.map_or("unknown", View::name);
    let review = state.gate.review(bearer_header(headers)).await;
    let (decision, user, response) = match admission(review) {
        Admission::Allowed(caller) => {
            let (decision, response) = serve_allowed(state, view, serve).await;
            (decision, caller.username, response)
        }
        Admission::Refused(decision, user, response) => (decision, user, response),
    };
    state.metrics.record_decision(decision);
    if state.audit {
        audit_outcome(state, &user, view_name, decision, &response);
    }
    response
}

enum Admission {
    Allowed(Caller),
    /// The decision, the caller's name (empty when unknown) and the answer.
    Refused(Decision, String, Response),
}

fn admission(review: Result<Verdict, kube::Error>) -> Admission {
    match review {
        Ok(Verdict::Allowed(caller)) => Admission::Allowed(caller),
        Err(error) => {
            tracing::warn!(%error, "access review failed");
            Admission::Refused(
                Decision::Unavailable,
                String::new(),
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "reviewUnavailable",
                    "the access review could not be completed",
                ),
            )
        }
        Ok(Verdict::Unauthenticated) => Admission::Refused(
            Decision::Unauthenticated,
            String::new(),
            problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ),
        ),
        Ok(Verdict::Forbidden(caller)) => Admission::Refused(
            Decision::Forbidden,
            caller.username,
            problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "get capsulepools/introspection is not allowed for this pool",
            ),
        ),
    }
}

/// Serves an allowed caller the view, if the pool's policy enables it.
async fn serve_allowed<'a, F, Fut>(
    state: &'a Arc<AppState>,
    view: Option<View>,
    serve: F,
) -> (Decision, Response)
where
    F: FnOnce(&'a Sources) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Option<serde_json::Value>>>,
{
    let Some(view) = view.filter(|v| state.views.contains(v)) else {
        return (
            Decision::Disabled,
            problem(
                StatusCode::NOT_FOUND,
                "viewDisabled",
                "this view is not enabled by the pool's introspection policy",
            ),
        );
    };
    let response = match serve(&state.sources).await {
        Ok(Some(body)) => Json(body).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "notFound",
            "no such execution in the buffer",
        ),
        Err(error) => {
            tracing::warn!(%error, view = view.name(), "introspection source failed");
            problem(
                StatusCode::BAD_GATEWAY,
                "sourceUnavailable",
                "the view's source could not be read",
            )
        }
    };
    (Decision::Allowed, response)
}

fn audit_outcome(
    state: &AppState,
    user: &str,
    view_name: &str,
    decision: Decision,
    response: &Response,
) {
    audit::write(&AuditRecord {
        user: if user.is_empty() {
            "system:anonymous"
        } else {
            user
        },
        view: view_name,
        pool: &state.sources.pool,
        namespace: &state.sources.namespace,
        decision,
        status: response.status().as_u16(),
    });
}
