//! TokenReview, SubjectAccessReview (and the self / local forms), SelfSubjectReview: create-only
//! kinds answered from the token table and RBAC, never stored.

use crate::api::{json_response, Ctx, Shared};
use crate::cluster::State;
use crate::error::{Error, Result};
use crate::rbac::{self, Attributes};
use crate::resources::ResourceInfo;
use crate::tokens::User;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

fn user_info(user: &User) -> Value {
    json!({"username": user.name, "uid": user.uid, "groups": user.groups})
}

/// A TokenReview's status: who the token belongs to, if it is valid for the audiences asked.
fn token_review(state: &State, review: &Value) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = crate::json::strings(&review["spec"]["audiences"]);
    match state.tokens.authenticate(token) {
        Some(issued) => {
            // A token for named audiences is only good for those audiences.
            let audiences: Vec<String> = if issued.audiences.is_empty() {
                wanted.clone()
            } else {
                issued.audiences.clone()
            };
            let audience_ok = wanted.is_empty() || wanted.iter().any(|w| audiences.contains(w));
            if audience_ok {
                json!({"authenticated": true, "user": user_info(&issued.user), "audiences": if wanted.is_empty() { audiences } else { wanted }})
            } else {
                json!({"authenticated": false, "error": "token audiences are invalid"})
            }
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    }
}

/// A (Self/Local)SubjectAccessReview's status: whether RBAC allows the resource attributes.
fn access_review(
    state: &State,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
    review: &Value,
) -> Value {
    let spec = &review["spec"];
    let user = match info.kind.as_str() {
        "SelfSubjectAccessReview" => ctx.user.clone(),
        _ => User {
            name: spec["user"].as_str().unwrap_or_default().into(),
            uid: spec["uid"].as_str().unwrap_or_default().into(),
            groups: crate::json::strings(&spec["groups"]),
        },
    };
    let attrs = &spec["resourceAttributes"];
    if attrs.is_null() {
        json!({"allowed": false, "reason": "only resourceAttributes are evaluated by the devcluster"})
    } else {
        let mut review_namespace = attrs["namespace"].as_str().unwrap_or_default().to_string();
        if info.kind == "LocalSubjectAccessReview" {
            review_namespace = namespace.to_string();
        }
        let attributes = Attributes {
            verb: attrs["verb"].as_str().unwrap_or_default().into(),
            namespace: review_namespace,
            group: attrs["group"].as_str().unwrap_or_default().into(),
            resource: attrs["resource"].as_str().unwrap_or_default().into(),
            subresource: attrs["subresource"].as_str().unwrap_or_default().into(),
            name: attrs["name"].as_str().unwrap_or_default().into(),
        };
        if rbac::authorize(state, &user, &attributes) {
            json!({"allowed": true, "reason": "allowed by RBAC"})
        } else {
            json!({"allowed": false})
        }
    }
}

pub fn create(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: &ResourceInfo,
    namespace: &str,
) -> Result<Response> {
    let mut review = ctx.json_body()?;
    if !review.is_object() {
        return Err(Error::bad_request("the review must be an object"));
    }
    review["apiVersion"] = json!(info.api_version());
    review["kind"] = json!(info.kind);
    let state = shared.lock();
    let status = match info.kind.as_str() {
        "TokenReview" => token_review(&state, &review),
        "SelfSubjectReview" => json!({"userInfo": user_info(&ctx.user)}),
        _ => access_review(&state, ctx, info, namespace, &review),
    };
    review["status"] = status;
    Ok(json_response(StatusCode::CREATED, review, &[]))
}
