//! The cluster state and the object lifecycle rules of the real API server: create, update (with
//! the status/spec split, generation and 409 conflicts), delete (finalizers, deletionTimestamp,
//! propagation policy), and CRD registration that serves the new resource at once.

use crate::error::{Error, Result};
use crate::resources::{builtin_resources, resources_from_crd, ResourceInfo};
use crate::schema;
use crate::store::{EventType, Store};
use crate::tokens::Tokens;
use serde_json::{json, Value};
use std::sync::Arc;

mod create;
mod delete;
mod update;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// What a write request asks besides its body.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub manager: String,
    pub dry_run: bool,
    pub validation: FieldValidation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Clone, Debug)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            propagation: Propagation::Background,
            grace_period_seconds: None,
            precondition_uid: None,
            precondition_resource_version: None,
            dry_run: false,
        }
    }
}

/// What a delete did: removed at once, or marked and left for finalizers / the kubelet.
pub enum Deleted {
    Now(Value),
    Pending(Value),
}

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

pub struct State {
    pub store: Store,
    pub resources: Vec<ResourceInfo>,
    pub tokens: Tokens,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode(bytes);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<(String, String, String)>) -> Error {
    let details: Vec<String> = causes
        .iter()
        .map(|(field, _, message)| format!("{field}: {message}"))
        .collect();
    let joined = if details.len() == 1 {
        details[0].clone()
    } else {
        format!("[{}]", details.join(", "))
    };
    Error::Invalid {
        message: format!("{} \"{}\" is invalid: {}", info.qualified_kind(), name, joined),
        group: info.group.clone(),
        kind: info.kind.clone(),
        name: name.to_string(),
        causes: causes
            .into_iter()
            .map(|(field, reason, message)| json!({"reason": reason, "message": message, "field": field}))
            .collect(),
    }
}

impl State {
    pub fn new(history_capacity: usize, tokens: Tokens) -> Self {
        State {
            store: Store::new(history_capacity),
            resources: builtin_resources(),
            tokens,
        }
    }

    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    fn crd_info(&self) -> ResourceInfo {
        self.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .expect("the CRD kind is built in")
    }

    /// Rebuilds the custom entries of the resource table from the stored, established CRDs.
    pub fn refresh_custom_resources(&mut self) {
        let crd_key = self.crd_info().storage_key();
        let mut resources = builtin_resources();
        for crd in self.store.list(&crd_key, None) {
            if crd["metadata"].get("deletionTimestamp").is_some() {
                continue;
            }
            resources.extend(resources_from_crd(&crd));
        }
        self.resources = resources;
    }

    pub fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Result<Arc<Value>> {
        self.store
            .get(
                &info.storage_key(),
                &(namespace.to_string(), name.to_string()),
            )
            .ok_or_else(|| Error::not_found(&info.qualified_resource(), name))
    }

    fn namespace_must_accept_writes(&self, namespace: &str) -> Result<()> {
        let ns = self
            .store
            .get("/namespaces", &(String::new(), namespace.to_string()))
            .ok_or_else(|| Error::not_found("namespaces", namespace))?;
        if ns["metadata"].get("deletionTimestamp").is_some() {
            return Err(Error::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Sets apiVersion/kind to what the URL names and checks the body agrees.
    fn check_type(info: &ResourceInfo, object: &mut Value) -> Result<()> {
        if !object.is_object() {
            return Err(Error::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        let kind = object["kind"].as_str().unwrap_or_default();
        if !kind.is_empty() && kind != info.kind {
            return Err(Error::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}) or kind {kind} does not match {}",
                object["apiVersion"].as_str().unwrap_or_default(),
                info.api_version(),
                info.kind
            )));
        }
        object["apiVersion"] = json!(info.api_version());
        object["kind"] = json!(info.kind);
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        Ok(())
    }

    fn check_crd(info: &ResourceInfo, object: &Value) -> Result<()> {
        if info.kind != "CustomResourceDefinition" || info.group != "apiextensions.k8s.io" {
            return Ok(());
        }
        let causes = schema::validate_crd(object);
        if causes.is_empty() {
            return Ok(());
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        Err(invalid(info, name, causes))
    }
    /// Writes a changed object back as-is (server-internal writes: GC, namespace finalization).
    pub fn put_internal(&mut self, info: &ResourceInfo, mut object: Value) -> Value {
        let rv = self.store.next_resource_version();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        (*self
            .store
            .put(&info.storage_key(), object, EventType::Modified, rv))
        .clone()
    }

    pub fn info_for_storage_key(&self, storage_key: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.storage_key() == storage_key && r.version == r.storage_version)
            .or_else(|| {
                self.resources
                    .iter()
                    .find(|r| r.storage_key() == storage_key)
            })
            .cloned()
    }
}
