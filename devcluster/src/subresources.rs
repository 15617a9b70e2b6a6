//! Subresources beyond status: `scale` (autoscaling/v1 Scale), `pods/log` (served from the
//! kubelet's log files) and `serviceaccounts/token` (the TokenRequest API).

use crate::api::{json_response, Ctx, Shared};
use crate::error::{Error, Result};
use crate::handlers::write_options;
use crate::managed_fields::Scope;
use crate::patch::{self, PatchKind};
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

fn path_tokens(path: &str) -> Vec<&str> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect()
}

fn read_path<'a>(object: &'a Value, path: &str) -> &'a Value {
    path_tokens(path).into_iter().fold(object, |v, t| &v[t])
}

fn write_path(object: &mut Value, path: &str, value: Value) {
    let tokens = path_tokens(path);
    let mut current = object;
    for (i, token) in tokens.iter().enumerate() {
        if i + 1 == tokens.len() {
            current[*token] = value;
            return;
        }
        if !current[*token].is_object() {
            current[*token] = json!({});
        }
        current = &mut current[*token];
    }
}

fn scale_of(info: &ResourceInfo, object: &Value) -> Value {
    let paths = info.scale.as_ref().expect("scale subresource has paths");
    let mut selector = paths
        .label_selector
        .as_ref()
        .map(|p| read_path(object, p).clone())
        .unwrap_or(Value::Null);
    if selector.is_null() && !info.custom {
        // Built-in workloads report their spec selector.
        selector = json!(LabelSelector::from_object(&object["spec"]["selector"]).to_text());
    }
    let meta = &object["metadata"];
    let mut status =
        json!({"replicas": read_path(object, &paths.status_replicas).as_i64().unwrap_or(0)});
    if let Some(s) = selector.as_str() {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": read_path(object, &paths.spec_replicas).as_i64().unwrap_or(0)},
        "status": status,
    })
}

pub fn scale(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<Response> {
    let mut state = shared.lock();
    let object = state.get(info, namespace, name)?;
    let current = scale_of(info, &object);
    let desired = match ctx.method {
        Method::GET => return Ok(json_response(StatusCode::OK, current, &[])),
        Method::PUT => ctx.json_body()?,
        Method::PATCH => {
            let body = ctx.json_body()?;
            match PatchKind::from_content_type(ctx.content_type())? {
                PatchKind::Json => patch::apply_json_patch(&current, &body)?,
                PatchKind::Strategic => patch::apply_strategic_merge_patch(&current, &body),
                PatchKind::Merge | PatchKind::Apply => patch::apply_merge_patch(&current, &body),
            }
        }
        _ => {
            return Err(Error::MethodNotSupported {
                message: "the server does not allow this method on the requested resource".into(),
            })
        }
    };
    let requested_rv = desired["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !requested_rv.is_empty()
        && requested_rv
            != object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
    {
        return Err(Error::conflict(format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            info.qualified_resource()
        )));
    }
    let replicas = desired["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| Error::bad_request("spec.replicas must be an integer"))?;
    let mut updated = (*object).clone();
    let paths = info.scale.as_ref().expect("scale subresource has paths");
    write_path(&mut updated, &paths.spec_replicas, json!(replicas));
    let mut warnings = Vec::new();
    let scope = Scope::Main {
        status_is_separate: info.has_subresource("status"),
    };
    let written = state.update(
        info,
        namespace,
        name,
        updated,
        scope,
        &write_options(ctx),
        &mut warnings,
    )?;
    Ok(json_response(
        StatusCode::OK,
        scale_of(info, &written),
        &warnings,
    ))
}

/// Largest log answer without `follow` or `tailLines`/`limitBytes`: the tail of the file is served.
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The container whose log is asked for: the named one (main or init), or the only one.
fn log_container(ctx: &Ctx, pod: &Value, name: &str) -> Result<String> {
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(match ctx.param("container") {
        Some(c) => {
            let known = containers.iter().any(|k| k == c)
                || pod["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|k| k["name"] == c));
            if !known {
                return Err(Error::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(Error::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    })
}

/// Where the answer starts in the log: `tailLines` from the end, else at most `MAX_LOG_BYTES`.
fn log_start(content: &[u8], tail_lines: Option<usize>) -> usize {
    match tail_lines {
        Some(n) => {
            let mut seen = 0;
            let mut start = 0;
            let trimmed = content.strip_suffix(b"\n").unwrap_or(content);
            for (i, b) in trimmed.iter().enumerate().rev() {
                if *b == b'\n' {
                    seen += 1;
                    if seen == n {
                        start = i + 1;
                        break;
                    }
                }
            }
            if n == 0 {
                content.len()
            } else {
                start
            }
        }
        None => content.len().saturating_sub(MAX_LOG_BYTES as usize),
    }
}

pub async fn log(shared: &Arc<Shared>, ctx: &Ctx, namespace: &str, name: &str) -> Result<Response> {
    let info = shared
        .lock()
        .resolve("", "v1", "pods")
        .expect("pods are built in");
    let pod = shared.lock().get(&info, namespace, name)?;
    let container = log_container(ctx, &pod, name)?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let file = shared
        .state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
        .join(format!("{container}.log"));
    let content = tokio::fs::read(&file).await.unwrap_or_default();
    let tail_lines: Option<usize> = ctx.param("tailLines").and_then(|t| t.parse().ok());
    let limit_bytes: Option<u64> = ctx.param("limitBytes").and_then(|t| t.parse().ok());
    let start = log_start(&content, tail_lines);
    let mut body = content[start..].to_vec();
    if let Some(limit) = limit_bytes {
        body.truncate(limit as usize);
    }
    if !ctx.flag("follow") {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(axum::http::header::CONTENT_TYPE, "text/plain")
            .body(Body::from(body))
            .expect("static headers are valid"));
    }
    let follower = LogFollower {
        shared: shared.clone(),
        info,
        file,
        offset: content.len() as u64,
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
    };
    Ok(follower.stream(body))
}

/// A followed log: the file polled from `offset` on while the pod (with this uid) exists.
struct LogFollower {
    shared: Arc<Shared>,
    info: ResourceInfo,
    file: std::path::PathBuf,
    offset: u64,
    namespace: String,
    name: String,
    uid: String,
}

impl LogFollower {
    /// Streams `first`, then what is appended to the log, until the client or the pod goes.
    fn stream(mut self, first: Vec<u8>) -> Response {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            if sender.send(Bytes::from(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = sender.closed() => return,
                    _ = self.shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                }
                if !self.send_new_lines(&sender).await || !self.pod_still_there() {
                    return;
                }
            }
        });
        let stream = futures::stream::poll_fn(move |cx| {
            receiver
                .poll_recv(cx)
                .map(|o| o.map(Ok::<_, std::convert::Infallible>))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(axum::http::header::CONTENT_TYPE, "text/plain")
            .body(Body::from_stream(stream))
            .expect("static headers are valid")
    }

    /// Sends what was appended since the last poll; false once the client is gone.
    async fn send_new_lines(&mut self, sender: &tokio::sync::mpsc::Sender<Bytes>) -> bool {
        if let Ok(mut f) = tokio::fs::File::open(&self.file).await {
            if f.seek(std::io::SeekFrom::Start(self.offset)).await.is_ok() {
                let mut chunk = Vec::new();
                if f.read_to_end(&mut chunk).await.is_ok() && !chunk.is_empty() {
                    self.offset += chunk.len() as u64;
                    if sender.send(Bytes::from(chunk)).await.is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The stream ends once the pod is gone (or replaced by one with another uid).
    fn pod_still_there(&self) -> bool {
        self.shared
            .lock()
            .get(&self.info, &self.namespace, &self.name)
            .map(|p| p["metadata"]["uid"].as_str() == Some(self.uid.as_str()))
            .unwrap_or(false)
    }
}

/// Default and bounds of `expirationSeconds`, as on the real server (10 min .. 2^32 s, default 1 h).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;

pub fn token(shared: &Arc<Shared>, ctx: &Ctx, namespace: &str, name: &str) -> Result<Response> {
    let body = ctx.json_body()?;
    let mut state = shared.lock();
    let info = state
        .resolve("", "v1", "serviceaccounts")
        .expect("built in");
    let sa = state.get(&info, namespace, name)?;
    let expiration = body["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    if expiration < MIN_TOKEN_SECONDS {
        return Err(crate::cluster::invalid(
            &ResourceInfo {
                kind: "TokenRequest".into(),
                group: "authentication.k8s.io".into(),
                ..info.clone()
            },
            name,
            vec![(
                "spec.expirationSeconds".into(),
                "FieldValueInvalid".into(),
                format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
            )],
        ));
    }
    let audiences: Vec<String> = crate::json::strings(&body["spec"]["audiences"]);
    let bound = body["spec"]["boundObjectRef"].as_object().map(|b| {
        let field = |key| {
            b.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        (field("kind"), field("name"), field("uid"))
    });
    let sa_uid = sa["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (token, expires_at) = state.tokens.issue_for_service_account(
        namespace,
        name,
        &sa_uid,
        expiration,
        audiences.clone(),
        bound,
    );
    let expiration_timestamp = jiff::Timestamp::from_second(expires_at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": body["spec"]["boundObjectRef"]},
        "status": {"token": token, "expirationTimestamp": expiration_timestamp},
    });
    Ok(json_response(StatusCode::CREATED, response, &[]))
}

/// `pods/binding`: what a scheduler posts to put a pod on a node (sets `spec.nodeName` once).
pub fn bind(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<Response> {
    let binding = ctx.json_body()?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(crate::cluster::invalid(
            &ResourceInfo {
                kind: "Binding".into(),
                ..info.clone()
            },
            name,
            vec![(
                "target.name".into(),
                "FieldValueRequired".into(),
                "Required value".into(),
            )],
        ));
    }
    let mut state = shared.lock();
    let pod = state.get(info, namespace, name)?;
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(Error::conflict(format!(
            "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
        )));
    }
    let mut bound = (*pod).clone();
    bound["spec"]["nodeName"] = json!(node);
    let scope = Scope::Main {
        status_is_separate: true,
    };
    state.update(
        info,
        namespace,
        name,
        bound,
        scope,
        &write_options(ctx),
        &mut Vec::new(),
    )?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}
