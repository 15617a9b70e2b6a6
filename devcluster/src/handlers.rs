//! The resource verbs: get, list, create, update, patch, delete, deletecollection, and dispatch to
//! watch and the subresources.

use crate::api::{json_response, Ctx, ResourcePath, Shared};
use crate::cluster::{DeleteOptions, Deleted, FieldValidation, Propagation, WriteOptions};
use crate::error::{Error, Result};
use crate::managed_fields::Scope;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::{reviews, subresources, table, watch};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

mod patches;

pub use patches::patch_object;

pub async fn handle(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    path: &ResourcePath,
) -> Result<Response> {
    let namespace = path.namespace.clone().unwrap_or_default();
    if info.is_create_only() {
        if ctx.method != Method::POST {
            return Err(method_not_allowed(&ctx.method));
        }
        return reviews::create(shared, ctx, info, &namespace);
    }
    match (&ctx.method, &path.name, path.subresource.as_deref()) {
        (&Method::GET, None, None) if ctx.flag("watch") => {
            watch::watch(shared, ctx, info, &namespace, None).await
        }
        (&Method::GET, None, None) => list(shared, ctx, info, path),
        (&Method::GET, Some(name), None | Some("status")) => {
            let stored = shared.lock().get(info, &namespace, name)?;
            let object = present(info, &stored);
            respond(ctx, info, StatusCode::OK, object, &[])
        }
        (_, Some(name), Some("scale")) => subresources::scale(shared, ctx, info, &namespace, name),
        (&Method::GET, Some(name), Some("log")) => {
            subresources::log(shared, ctx, &namespace, name).await
        }
        (&Method::POST, Some(name), Some("binding")) => {
            subresources::bind(shared, ctx, info, &namespace, name)
        }
        (&Method::POST, Some(name), Some("token")) => {
            subresources::token(shared, ctx, &namespace, name)
        }
        (&Method::POST, None, None) => create(shared, ctx, info, &namespace),
        (&Method::PUT, Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
            put_one(shared, ctx, info, &namespace, name, sub)
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            patch_one(shared, ctx, info, &namespace, name, sub)
        }
        (&Method::DELETE, Some(name), None) => delete_one(shared, ctx, info, &namespace, name),
        (&Method::DELETE, None, None) => delete_collection(shared, ctx, info, &namespace),
        _ => Err(method_not_allowed(&ctx.method)),
    }
}

/// PUT of the object or of its status / finalize subresource.
fn put_one(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response> {
    let scope = scope_for(info, sub);
    let options = write_options(ctx);
    let mut warnings = Vec::new();
    let object = ctx.json_body()?;
    let written = shared.lock().update(
        info,
        namespace,
        name,
        object,
        scope,
        &options,
        &mut warnings,
    )?;
    respond(
        ctx,
        info,
        StatusCode::OK,
        present(info, &written),
        &warnings,
    )
}

/// PATCH of the object or of its status; 201 when a server-side apply created it.
fn patch_one(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response> {
    let scope = scope_for(info, sub);
    let mut warnings = Vec::new();
    let (written, created) = patch_object(
        &mut shared.lock(),
        ctx,
        info,
        namespace,
        name,
        scope,
        &mut warnings,
    )?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    respond(ctx, info, code, present(info, &written), &warnings)
}

/// DELETE of one object: 200 with the object (a Status for all but pods) when it went at once,
/// 202 with the object when finalizers or the kubelet have yet to act.
fn delete_one(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<Response> {
    let options = delete_options(ctx)?;
    let deleted = shared.lock().delete(info, namespace, name, &options)?;
    shared.gc_wake.notify_one();
    Ok(match deleted {
        Deleted::Now(object) if info.kind == "Pod" && info.group.is_empty() => {
            json_response(StatusCode::OK, present(info, &object), &[])
        }
        Deleted::Now(object) => json_response(StatusCode::OK, success_status(info, &object), &[]),
        Deleted::Pending(object) => {
            json_response(StatusCode::ACCEPTED, present(info, &object), &[])
        }
    })
}

fn method_not_allowed(method: &Method) -> Error {
    Error::MethodNotSupported {
        message: format!(
            "the server does not allow this method on the requested resource ({method})"
        ),
    }
}

fn scope_for(info: &ResourceInfo, subresource: Option<&str>) -> Scope {
    match subresource {
        Some("status") => Scope::Status,
        _ => Scope::Main {
            status_is_separate: info.has_subresource("status"),
        },
    }
}

pub fn write_options(ctx: &Ctx) -> WriteOptions {
    WriteOptions {
        manager: ctx.manager(),
        dry_run: ctx.param("dryRun").is_some(),
        validation: FieldValidation::parse(ctx.param("fieldValidation")),
    }
}

/// The object as served at the requested version (versions share storage; no conversion).
pub fn present(info: &ResourceInfo, object: &Value) -> Value {
    let mut out = crate::events::from_storage(info, object);
    out["apiVersion"] = json!(info.api_version());
    out
}

fn success_status(info: &ResourceInfo, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object["metadata"]["name"],
            "group": info.group,
            "kind": info.plural,
            "uid": object["metadata"]["uid"],
        }
    })
}

/// Answers with the object, or with it as a one-row Table when the client asked for one.
pub fn respond(
    ctx: &Ctx,
    info: &ResourceInfo,
    code: StatusCode,
    object: Value,
    warnings: &[String],
) -> Result<Response> {
    if ctx.wants_table() {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let body = table::table(info, &[Arc::new(object)], &rv, ctx.param("includeObject"));
        return Ok(json_response(code, body, warnings));
    }
    Ok(json_response(code, object, warnings))
}

pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selectors {
    pub fn from_ctx(ctx: &Ctx) -> Result<Self> {
        Ok(Selectors {
            labels: ctx
                .param("labelSelector")
                .map(LabelSelector::parse)
                .transpose()?,
            fields: ctx
                .param("fieldSelector")
                .map(FieldSelector::parse)
                .transpose()?,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(object))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    after: (String, String),
}

fn list(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    path: &ResourcePath,
) -> Result<Response> {
    let selectors = Selectors::from_ctx(ctx)?;
    let limit: Option<usize> = ctx
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let after = ctx
        .param("continue")
        .map(|token| {
            base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ContinueToken>(&bytes).ok())
                .ok_or_else(|| Error::bad_request("continue key is not valid"))
        })
        .transpose()?;
    let state = shared.lock();
    let rv = after
        .as_ref()
        .map(|a| a.rv)
        .unwrap_or(state.store.resource_version());
    let mut items: Vec<Arc<Value>> = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for object in state
        .store
        .list(&info.storage_key(), path.namespace.as_deref())
    {
        let key = crate::store::object_key(&object);
        if after.as_ref().is_some_and(|a| key <= a.after) || !selectors.matches(&object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            if next.is_none() {
                let last = crate::store::object_key(items.last().expect("limit > 0"));
                next = Some(ContinueToken { rv, after: last });
            }
            continue;
        }
        items.push(object);
    }
    drop(state);
    if ctx.wants_table() {
        let body = table::table(info, &items, &rv.to_string(), ctx.param("includeObject"));
        return Ok(json_response(StatusCode::OK, body, &[]));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] =
            json!(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&next)?));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": metadata,
        "items": items.iter().map(|o| present(info, o)).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, body, &[]))
}

fn create(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
) -> Result<Response> {
    let object = ctx.json_body()?;
    let options = write_options(ctx);
    let mut warnings = Vec::new();
    let created = shared
        .lock()
        .create(info, namespace, object, &options, &mut warnings)?;
    respond(
        ctx,
        info,
        StatusCode::CREATED,
        present(info, &created),
        &warnings,
    )
}

fn delete_options(ctx: &Ctx) -> Result<DeleteOptions> {
    let body = ctx.json_body()?;
    let text = |field: &str| {
        body[field]
            .as_str()
            .map(str::to_string)
            .or_else(|| ctx.param(field).map(str::to_string))
    };
    let propagation = match text("propagationPolicy").as_deref() {
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some("Background") | None => {
            if body["orphanDependents"].as_bool() == Some(true) || ctx.flag("orphanDependents") {
                Propagation::Orphan
            } else {
                Propagation::Background
            }
        }
        Some(other) => {
            return Err(Error::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            )))
        }
    };
    let grace = body["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| ctx.param("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: grace,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run: ctx.param("dryRun").is_some() || body["dryRun"].is_array(),
    })
}

fn delete_collection(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
) -> Result<Response> {
    let selectors = Selectors::from_ctx(ctx)?;
    let options = delete_options(ctx)?;
    let mut state = shared.lock();
    let namespace_filter = info
        .namespaced
        .then_some(namespace)
        .filter(|n| !n.is_empty());
    let targets: Vec<Arc<Value>> = state
        .store
        .list(&info.storage_key(), namespace_filter)
        .into_iter()
        .filter(|o| selectors.matches(o))
        .collect();
    let mut items = Vec::new();
    for object in targets {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match state.delete(info, &ns, &name, &options)? {
            Deleted::Now(o) | Deleted::Pending(o) => items.push(present(info, &o)),
        }
    }
    let rv = state.store.resource_version();
    drop(state);
    shared.gc_wake.notify_one();
    Ok(json_response(
        StatusCode::OK,
        json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
        &[],
    ))
}
