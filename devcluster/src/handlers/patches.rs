//! PATCH in all its forms: JSON, merge and strategic merge patches of the live object, and
//! server-side apply (which may create the object).

use super::{present, write_options};
use crate::api::Ctx;
use crate::cluster::State;
use crate::error::{Error, Result};
use crate::managed_fields::{self, Scope};
use crate::patch::{self, PatchKind};
use crate::resources::ResourceInfo;
use serde_json::{json, Value};
use std::sync::Arc;

/// The field manager of a server-side apply, which must be named; the body must be an object
/// naming the object on the URL.
fn apply_manager<'a>(ctx: &'a Ctx, body: &Value, name: &str) -> Result<&'a str> {
    let Some(manager) = ctx.param("fieldManager") else {
        return Err(Error::Invalid {
            message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            group: "meta.k8s.io".into(),
            kind: "PatchOptions".into(),
            name: String::new(),
            causes: vec![json!({"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"})],
        });
    };
    if !body.is_object() {
        return Err(Error::bad_request(
            "the apply configuration must be an object",
        ));
    }
    let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
    if body_name != name {
        return Err(Error::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(manager)
}

/// What an apply that creates the object starts from: its type and name.
fn apply_base(info: &ResourceInfo, namespace: &str, name: &str) -> Value {
    let mut base =
        json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": {"name": name}});
    if info.namespaced {
        base["metadata"]["namespace"] = json!(namespace);
    }
    base
}

/// The live object with a merge, JSON or strategic merge patch applied.
fn patch_live(info: &ResourceInfo, live: &Value, body: &Value, kind: PatchKind) -> Result<Value> {
    Ok(match kind {
        PatchKind::Merge => patch::apply_merge_patch(live, body),
        PatchKind::Json => patch::apply_json_patch(live, body)?,
        PatchKind::Strategic if info.custom => {
            return Err(Error::UnsupportedMediaType {
                message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            })
        }
        PatchKind::Strategic => patch::apply_strategic_merge_patch(live, body),
        PatchKind::Apply => unreachable!("handled above"),
    })
}

/// Applies any patch type; returns the written object and whether apply created it.
pub fn patch_object(
    state: &mut State,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    scope: Scope,
    warnings: &mut Vec<String>,
) -> Result<(Value, bool)> {
    let kind = PatchKind::from_content_type(ctx.content_type())?;
    let body = ctx.json_body()?;
    let options = write_options(ctx);
    if kind == PatchKind::Apply {
        let manager = apply_manager(ctx, &body, name)?;
        let now = crate::cluster::now_rfc3339();
        let force = ctx.flag("force");
        let api_version = info.api_version();
        let apply = |onto: &Value| {
            managed_fields::apply(onto, &body, manager, force, scope, &api_version, &now)
        };
        return match state.get(info, namespace, name) {
            Ok(live) => {
                let applied = apply(&present(info, &live))?;
                let written =
                    state.update(info, namespace, name, applied, scope, &options, warnings)?;
                Ok((written, false))
            }
            Err(Error::NotFound { .. }) if scope != Scope::Status => {
                let base = apply_base(info, namespace, name);
                let mut applied = apply(&base)?;
                if let (
                    Some(status),
                    Scope::Main {
                        status_is_separate: false,
                    },
                ) = (body.get("status"), scope)
                {
                    applied["status"] = status.clone();
                }
                let created = state.create(info, namespace, applied, &options, warnings)?;
                Ok((created, true))
            }
            Err(e) => Err(e),
        };
    }
    let stored = state.get(info, namespace, name)?;
    let live = Arc::new(present(info, &stored));
    let patched = patch_live(info, &live, &body, kind)?;
    let written = state.update(info, namespace, name, patched, scope, &options, warnings)?;
    Ok((written, false))
}
