//! The HTTP front: parses Kubernetes API paths, authenticates bearer tokens, authorises with RBAC,
//! negotiates the response form (JSON, Table, aggregated discovery) and dispatches to the handlers.

use crate::cluster::State;
use crate::error::{Error, Result};
use crate::resources::ResourceInfo;
use crate::tokens::User;
use crate::{discovery, handlers, openapi, rbac};
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (the real server's limit is 3 MiB too).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub struct Shared {
    pub state: Mutex<State>,
    pub state_dir: PathBuf,
    /// Wakes the garbage collector after deletes.
    pub gc_wake: Notify,
    pub shutdown: CancellationToken,
    pub counters: RequestCounters,
}

/// Requests served, by kind: tests use them to show clients do not relist.
#[derive(Default, Debug)]
pub struct RequestCounters {
    pub lists: std::sync::atomic::AtomicU64,
    pub watches: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the store consistent enough for a dev tool.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One parsed request.
pub struct Ctx {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub user: User,
}

impl Ctx {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean query parameter, true as Go's `strconv.ParseBool` reads it (the API server's
    /// parser): the official Python client before v37 sends `watch=True`.
    pub fn flag(&self, name: &str) -> bool {
        self.param(name).is_some_and(is_true)
    }

    pub fn accept(&self) -> &str {
        self.headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn wants_table(&self) -> bool {
        self.accept().contains("as=Table")
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }

    /// The field manager of a write: `fieldManager`, else derived from the User-Agent like the
    /// real server does (`kubectl-client-side-apply`, `kube-rs`...).
    pub fn manager(&self) -> String {
        if let Some(m) = self.param("fieldManager") {
            return m.to_string();
        }
        let agent = self
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        agent.split('/').next().unwrap_or("unknown").to_string()
    }

    pub fn json_body(&self) -> Result<Value> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        let content_type = self.content_type();
        if content_type.contains("protobuf") {
            return crate::protobuf::decode(&self.body);
        }
        // client-go falls back to JSON after a 415 for CBOR.
        if content_type.contains("cbor") {
            return Err(Error::UnsupportedMediaType {
                message: format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"),
            });
        }
        match serde_json::from_slice(&self.body) {
            Ok(v) => Ok(v),
            Err(json_error) => serde_yaml::from_slice(&self.body).map_err(|_| {
                Error::bad_request(format!(
                    "the body of the request could not be decoded: {json_error}"
                ))
            }),
        }
    }
}

/// A resource path: `/api/v1/namespaces/ns/pods/name/status` and its siblings.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

enum Route {
    Public(&'static str),
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3(String),
    Resource(ResourcePath),
}

fn parse_resource(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let owned = |s: &&str| s.to_string();
    let path = |namespace: Option<String>, r: &[&str]| -> Option<ResourcePath> {
        if r.is_empty() || r.len() > 3 {
            return None;
        }
        Some(ResourcePath {
            group: group.into(),
            version: version.into(),
            namespace,
            plural: r[0].into(),
            name: r.get(1).map(owned),
            subresource: r.get(2).map(owned),
        })
    };
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        let is_namespace_subresource =
            rest.len() == 3 && group.is_empty() && matches!(rest[2], "status" | "finalize");
        if !is_namespace_subresource {
            return path(Some(rest[1].to_string()), &rest[2..]);
        }
    }
    path(None, rest)
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Public("version")),
        ["healthz" | "livez" | "readyz", ..] => Some(Route::Public("health")),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["api", version] => Some(Route::ResourceList(String::new(), version.to_string())),
        ["apis", group] => Some(Route::Group(group.to_string())),
        ["apis", group, version] => {
            Some(Route::ResourceList(group.to_string(), version.to_string()))
        }
        ["openapi", "v2"] => Some(Route::OpenApiV2),
        ["openapi", "v3"] => Some(Route::OpenApiV3Root),
        ["openapi", "v3", rest @ ..] => Some(Route::OpenApiV3(rest.join("/"))),
        ["api", version, rest @ ..] => parse_resource("", version, rest).map(Route::Resource),
        ["apis", group, version, rest @ ..] => {
            parse_resource(group, version, rest).map(Route::Resource)
        }
        _ => None,
    }
}

fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Option<User> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    shared
        .lock()
        .tokens
        .authenticate(token)
        .map(|t| t.user.clone())
}

/// The verb RBAC sees for a request.
pub fn verb(method: &Method, path: &ResourcePath, query: &HashMap<String, String>) -> &'static str {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if path.name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if path.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

pub async fn serve(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Like the API server's httplog: one line per request at debug level, for finding out who
    // calls what and how long it takes (`RUST_LOG=capsule_devcluster::api=debug`).
    let started = std::time::Instant::now();
    let log = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let agent = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (method.clone(), uri.clone(), agent)
    });
    let response = match dispatch(&shared, method, uri, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Some((method, uri, agent)) = log {
        tracing::debug!(
            %method,
            %uri,
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            %agent,
            "request"
        );
    }
    response
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let Some(route) = route(uri.path()) else {
        return Err(Error::NotFound {
            message: "the server could not find the requested resource".into(),
        });
    };
    if let Route::Public(which) = route {
        return Ok(match which {
            "version" => json_response(StatusCode::OK, discovery::version(), &[]),
            _ => (StatusCode::OK, "ok").into_response(),
        });
    }
    let user = authenticate(shared, &headers).ok_or(Error::Unauthorized)?;
    let ctx = Ctx {
        method,
        query: parse_query(uri.query()),
        headers,
        body,
        user,
    };
    match route {
        Route::Resource(path) => serve_resource(shared, &ctx, &path).await,
        route => discovery_response(shared, &ctx, route),
    }
}

/// Discovery and OpenAPI documents.
fn discovery_response(shared: &Arc<Shared>, ctx: &Ctx, route: Route) -> Result<Response> {
    match route {
        Route::Public(_) | Route::Resource(_) => unreachable!("answered by dispatch"),
        Route::CoreVersions | Route::Groups
            if ctx.accept().contains("as=APIGroupDiscoveryList") =>
        {
            let core = matches!(route, Route::CoreVersions);
            Ok(aggregated_discovery(shared, ctx, core))
        }
        Route::CoreVersions => Ok(json_response(
            StatusCode::OK,
            discovery::core_versions(),
            &[],
        )),
        Route::Groups => Ok(json_response(
            StatusCode::OK,
            discovery::groups(&shared.lock()),
            &[],
        )),
        Route::Group(group) => {
            let body = discovery::group(&shared.lock(), &group).ok_or_else(|| Error::NotFound {
                message: "the server could not find the requested resource".into(),
            })?;
            Ok(json_response(StatusCode::OK, body, &[]))
        }
        Route::ResourceList(group, version) => {
            let body =
                discovery::resource_list(&shared.lock(), &group, &version).ok_or_else(|| {
                    Error::NotFound {
                        message: "the server could not find the requested resource".into(),
                    }
                })?;
            Ok(json_response(StatusCode::OK, body, &[]))
        }
        Route::OpenApiV2 => Ok(json_response(
            StatusCode::OK,
            openapi::v2(&shared.lock()),
            &[],
        )),
        Route::OpenApiV3Root => Ok(json_response(
            StatusCode::OK,
            openapi::v3_root(&shared.lock()),
            &[],
        )),
        Route::OpenApiV3(path) => {
            let body = openapi::v3_group_version(&shared.lock(), &path).ok_or_else(|| {
                Error::NotFound {
                    message: "the server could not find the requested resource".into(),
                }
            })?;
            Ok(json_response(StatusCode::OK, body, &[]))
        }
    }
}

/// The aggregated discovery document (`as=APIGroupDiscoveryList`).
fn aggregated_discovery(shared: &Arc<Shared>, ctx: &Ctx, core: bool) -> Response {
    // The first discovery version the client lists that we serve.
    let accept = ctx.accept();
    let v2 = accept.find("v=v2;");
    let v2beta1 = accept.find("v=v2beta1;");
    let version = match (v2, v2beta1) {
        (Some(a), Some(b)) if b < a => "v2beta1",
        (None, Some(_)) => "v2beta1",
        _ => "v2",
    };
    let body = discovery::aggregated(&shared.lock(), core, version);
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    typed_response(StatusCode::OK, &body, &content_type, &[])
}

/// A resource request: authorised by RBAC (unless from the master credentials), counted, and
/// handed to the handlers.
async fn serve_resource(shared: &Arc<Shared>, ctx: &Ctx, path: &ResourcePath) -> Result<Response> {
    let info = resolve(shared, path)?;
    if !ctx.user.is_master() {
        let allowed = rbac::authorize(
            &shared.lock(),
            &ctx.user,
            &rbac::Attributes::for_request(&info, path, verb(&ctx.method, path, &ctx.query)),
        );
        if !allowed {
            return Err(rbac::forbidden(
                &ctx.user,
                &info,
                path,
                verb(&ctx.method, path, &ctx.query),
            ));
        }
    }
    let counter = match verb(&ctx.method, path, &ctx.query) {
        "list" => Some(&shared.counters.lists),
        "watch" => Some(&shared.counters.watches),
        "get" => None,
        _ => Some(&shared.counters.writes),
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    handlers::handle(shared, ctx, &info, path).await
}

fn resolve(shared: &Shared, path: &ResourcePath) -> Result<ResourceInfo> {
    let state = shared.lock();
    let info = state
        .resolve(&path.group, &path.version, &path.plural)
        .ok_or_else(|| Error::NotFound {
            message: "the server could not find the requested resource".into(),
        })?;
    if path.namespace.is_some() && !info.namespaced {
        return Err(Error::NotFound {
            message: "the server could not find the requested resource".into(),
        });
    }
    if let Some(sub) = &path.subresource {
        if !info.has_subresource(sub) {
            return Err(Error::NotFound {
                message: "the server could not find the requested resource".into(),
            });
        }
    }
    Ok(info)
}

/// `Warning: 299 - "…"` headers, as the real server sends for unknown fields and the like.
fn add_warnings(response: &mut Response, warnings: &[String]) {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "'"));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response
                .headers_mut()
                .append(axum::http::header::WARNING, value);
        }
    }
}

pub fn typed_response(
    code: StatusCode,
    body: &Value,
    content_type: &str,
    warnings: &[String],
) -> Response {
    let mut response = Response::builder()
        .status(code)
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .expect("static headers are valid");
    add_warnings(&mut response, warnings);
    response
}

pub fn json_response(code: StatusCode, body: Value, warnings: &[String]) -> Response {
    typed_response(code, &body, "application/json", warnings)
}

/// The spellings of true that Go's `strconv.ParseBool` accepts.
fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

#[cfg(test)]
mod flag_tests {
    use super::is_true;

    #[test]
    fn flags_accept_what_go_parse_bool_accepts() {
        for v in ["1", "t", "T", "true", "TRUE", "True"] {
            assert!(is_true(v), "{v}");
        }
        for v in ["0", "false", "False", "yes", "tRuE", ""] {
            assert!(!is_true(v), "{v}");
        }
    }
}
