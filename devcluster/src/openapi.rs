//! OpenAPI v3 (`/openapi/v3`, one document per group-version) and v2 (`/openapi/v2`, JSON only)
//! built from the built-in types (k8s-openapi's schemas) and from the registered CRD schemas. The
//! PATCH operations declare `fieldValidation`, which tells kubectl to validate on the server
//! (`--validate=strict`), and components carry `x-kubernetes-group-version-kind` for `kubectl explain`.

use crate::cluster::State;
use crate::discovery::KUBERNETES_VERSION;
use crate::resources::ResourceInfo;
use k8s_openapi::api;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Per group-version: component schemas, and kind → component name.
type GroupVersionComponents =
    HashMap<(String, String), (Map<String, Value>, HashMap<String, String>)>;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Adds the schema of a built-in kind to the generator; returns its component name.
fn builtin_schema(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    macro_rules! types {
        ($($g:literal, $k:literal => $t:ty;)*) => {
            match (group, kind) {
                $(($g, $k) => { generator.subschema_for::<$t>(); Some(<$t as schemars::JsonSchema>::schema_name().into_owned()) })*
                _ => None,
            }
        };
    }
    types! {
        "", "Namespace" => api::core::v1::Namespace;
        "", "Pod" => api::core::v1::Pod;
        "", "Secret" => api::core::v1::Secret;
        "", "ConfigMap" => api::core::v1::ConfigMap;
        "", "Service" => api::core::v1::Service;
        "", "ServiceAccount" => api::core::v1::ServiceAccount;
        "", "Event" => api::core::v1::Event;
        "", "Endpoints" => api::core::v1::Endpoints;
        "", "Node" => api::core::v1::Node;
        "events.k8s.io", "Event" => api::events::v1::Event;
        "coordination.k8s.io", "Lease" => api::coordination::v1::Lease;
        "apps", "Deployment" => api::apps::v1::Deployment;
        "apps", "ReplicaSet" => api::apps::v1::ReplicaSet;
        "policy", "PodDisruptionBudget" => api::policy::v1::PodDisruptionBudget;
        "networking.k8s.io", "NetworkPolicy" => api::networking::v1::NetworkPolicy;
        "rbac.authorization.k8s.io", "Role" => api::rbac::v1::Role;
        "rbac.authorization.k8s.io", "ClusterRole" => api::rbac::v1::ClusterRole;
        "rbac.authorization.k8s.io", "RoleBinding" => api::rbac::v1::RoleBinding;
        "rbac.authorization.k8s.io", "ClusterRoleBinding" => api::rbac::v1::ClusterRoleBinding;
        "apiextensions.k8s.io", "CustomResourceDefinition" => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        "authentication.k8s.io", "TokenReview" => api::authentication::v1::TokenReview;
        "authentication.k8s.io", "SelfSubjectReview" => api::authentication::v1::SelfSubjectReview;
        "authorization.k8s.io", "SubjectAccessReview" => api::authorization::v1::SubjectAccessReview;
        "authorization.k8s.io", "SelfSubjectAccessReview" => api::authorization::v1::SelfSubjectAccessReview;
        "authorization.k8s.io", "LocalSubjectAccessReview" => api::authorization::v1::LocalSubjectAccessReview;
    }
}

fn gvk(info: &ResourceInfo) -> Value {
    json!({"group": info.group, "version": info.version, "kind": info.kind})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `capsule.dev` + `v1alpha1` + `CapsulePool` → `dev.capsule.v1alpha1.CapsulePool`, as the real server names CRD components.
fn crd_component_name(info: &ResourceInfo) -> String {
    let reversed: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), info.version, info.kind)
}

/// Components of the built-in kinds (and everything they reference), generated once.
fn builtin_components() -> &'static GroupVersionComponents {
    static CACHE: OnceLock<GroupVersionComponents> = OnceLock::new();
    CACHE.get_or_init(|| {
        let mut by_gv = GroupVersionComponents::new();
        for info in crate::resources::builtin_resources() {
            let key = (info.group.clone(), info.version.clone());
            let mut generator = SchemaSettings::openapi3().into_generator();
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
            let Some(name) = builtin_schema(&mut generator, &info.group, &info.kind) else {
                continue;
            };
            let definitions = generator.take_definitions(true);
            let entry = by_gv.entry(key).or_default();
            for (k, v) in definitions {
                entry.0.insert(k, v);
            }
            entry.1.insert(info.kind.clone(), name);
        }
        by_gv
    })
}

fn operation(info: &ResourceInfo, action: &str, component: &str, patch: bool) -> Value {
    let mut parameters = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if patch || action == "put" || action == "post" {
        parameters.push(json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.", "schema": {"type": "string", "uniqueItems": true}}));
    }
    if patch {
        parameters.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    let schema = json!({"$ref": format!("#/components/schemas/{component}")});
    json!({
        "operationId": format!("{action}{}", info.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(info),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
    })
}

fn paths_for(info: &ResourceInfo, component: &str) -> Map<String, Value> {
    let base = format!("/{}", gv_path(&info.group, &info.version));
    let collection = if info.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{base}/{}", info.plural)
    };
    let mut paths = Map::new();
    let mut collection_ops = json!({"post": operation(info, "post", component, false)});
    if !info.is_create_only() {
        collection_ops["get"] = operation(info, "list", component, false);
        collection_ops["delete"] = operation(info, "deletecollection", component, false);
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(info, "get", component, false),
                "put": operation(info, "put", component, false),
                "patch": operation(info, "patch", component, true),
                "delete": operation(info, "delete", component, false),
            }),
        );
        if info.has_subresource("status") {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": operation(info, "get", component, false), "put": operation(info, "put", component, false), "patch": operation(info, "patch", component, true)}),
            );
        }
    }
    paths.insert(collection, collection_ops);
    paths
}

fn crd_component(info: &ResourceInfo) -> Value {
    let mut schema = info
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    schema["x-kubernetes-group-version-kind"] = json!([gvk(info)]);
    if !schema["properties"].is_object() {
        schema["properties"] = json!({});
    }
    let properties = &mut schema["properties"];
    properties["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    properties["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    properties["metadata"] = json!({"description": "Standard object's metadata.", "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]});
    schema
}

/// The OpenAPI v3 document of one group-version (`api/v1`, `apis/apps/v1`).
pub fn v3_group_version(state: &State, path: &str) -> Option<Value> {
    let resources: Vec<&ResourceInfo> = state
        .resources
        .iter()
        .filter(|r| gv_path(&r.group, &r.version) == path)
        .collect();
    let first = resources.first()?;
    let mut components = Map::new();
    let mut paths = Map::new();
    let builtins = builtin_components();
    if let Some((definitions, _)) = builtins.get(&(first.group.clone(), first.version.clone())) {
        components.extend(definitions.clone());
    }
    if let Some((definitions, _)) = builtins.get(&(String::new(), "v1".to_string())) {
        if let Some(meta) = definitions.get(OBJECT_META) {
            components.insert(OBJECT_META.into(), meta.clone());
        }
    }
    for info in resources {
        let component = if info.custom {
            let name = crd_component_name(info);
            components.insert(name.clone(), crd_component(info));
            name
        } else {
            let Some(name) = builtins
                .get(&(info.group.clone(), info.version.clone()))
                .and_then(|(_, names)| names.get(&info.kind))
                .cloned()
            else {
                continue;
            };
            if let Some(schema) = components.get_mut(&name) {
                schema["x-kubernetes-group-version-kind"] = json!([gvk(info)]);
            }
            name
        };
        paths.extend(paths_for(info, &component));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }))
}

fn gv_hash(state: &State, path: &str) -> String {
    let resources: Vec<&ResourceInfo> = state
        .resources
        .iter()
        .filter(|r| gv_path(&r.group, &r.version) == path)
        .collect();
    let text = serde_json::to_vec(&resources).unwrap_or_default();
    hex::encode(Sha256::digest(text)).to_uppercase()
}

pub fn v3_root(state: &State) -> Value {
    let mut paths = Map::new();
    for r in &state.resources {
        let path = gv_path(&r.group, &r.version);
        if !paths.contains_key(&path) {
            let url = format!("/openapi/v3/{path}?hash={}", gv_hash(state, &path));
            paths.insert(path, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// Swagger 2.0 with the same schemas (refs pointing at `#/definitions/`).
pub fn v2(state: &State) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for r in &state.resources {
        let path = gv_path(&r.group, &r.version);
        if seen.contains(&path) {
            continue;
        }
        seen.push(path.clone());
        if let Some(doc) = v3_group_version(state, &path) {
            if let Some(schemas) = doc["components"]["schemas"].as_object() {
                definitions.extend(schemas.clone());
            }
            if let Some(p) = doc["paths"].as_object() {
                paths.extend(p.clone());
            }
        }
    }
    let text = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
    .to_string()
    .replace("#/components/schemas/", "#/definitions/");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
