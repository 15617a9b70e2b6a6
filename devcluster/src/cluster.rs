//! The cluster state and the object lifecycle rules of the real API server: create, update (with
//! the status/spec split, generation and 409 conflicts), delete (finalizers, deletionTimestamp,
//! propagation policy), and CRD registration that serves the new resource at once.

use crate::error::{Error, Result};
use crate::managed_fields::{self, Scope};
use crate::resources::{builtin_resources, resources_from_crd, ResourceInfo};
use crate::schema;
use crate::store::{EventType, ObjectKey, Store};
use crate::tokens::Tokens;
use serde_json::{json, Value};
use std::sync::Arc;

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
/// Pods bound to a node are deleted gracefully by default, like the real server does.
const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

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

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
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

fn conflict_modified(info: &ResourceInfo, name: &str) -> Error {
    Error::conflict(format!(
        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
        info.qualified_resource(),
        name
    ))
}

/// The parts of an object that count as its spec for `generation`: all but metadata and status.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
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

    pub fn create(
        &mut self,
        info: &ResourceInfo,
        namespace: &str,
        mut object: Value,
        options: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        Self::check_type(info, &mut object)?;
        let mut object = crate::events::to_storage(info, object);
        let meta = object["metadata"].as_object_mut().expect("checked above");
        if info.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(Error::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(invalid(
                        info,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "FieldValueRequired".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ))
                }
            },
        };
        if !is_dns_subdomain(&name) {
            return Err(invalid(info, &name, vec![(
                "metadata.name".into(),
                "FieldValueInvalid".into(),
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            )]));
        }
        meta.insert("name".into(), json!(name));
        if info.namespaced {
            self.namespace_must_accept_writes(namespace)?;
        }
        let key: ObjectKey = (
            if info.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        let storage_key = info.storage_key();
        if self.store.get(&storage_key, &key).is_some() {
            return Err(Error::AlreadyExists {
                message: format!("{} \"{}\" already exists", info.qualified_resource(), name),
            });
        }
        for server_owned in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(server_owned);
        }
        self.prepare_for_create(info, &mut object);
        schema::validate_for_write(info, &mut object, None, options.validation, warnings)?;
        Self::check_crd(info, &object)?;
        let now = now_rfc3339();
        if object["metadata"].get("managedFields").is_none() {
            managed_fields::record_update(
                None,
                &mut object,
                &options.manager,
                Scope::Main {
                    status_is_separate: false,
                },
                &info.api_version(),
                &now,
            );
        }
        let meta = object["metadata"].as_object_mut().expect("checked above");
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now));
        meta.insert("generation".into(), json!(1));
        if options.dry_run {
            return Ok(object);
        }
        let rv = self.store.next_resource_version();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let stored = self.store.put(&storage_key, object, EventType::Added, rv);
        if info.group.is_empty() && info.kind == "Namespace" {
            self.create_default_service_account(&name);
        }
        if info.kind == "CustomResourceDefinition" {
            self.establish_crd(&name)?;
            return Ok((*self.get(info, "", &name)?).clone());
        }
        Ok((*stored).clone())
    }

    fn prepare_for_create(&self, info: &ResourceInfo, object: &mut Value) {
        if info.has_subresource("status") && info.custom {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        match (info.group.as_str(), info.kind.as_str()) {
            ("", "Pod") => {
                if object["status"]["phase"].is_null() {
                    object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
                if object["spec"]["serviceAccountName"].is_null() && object["spec"].is_object() {
                    object["spec"]["serviceAccountName"] = json!("default");
                }
            }
            ("", "Namespace") => {
                object["status"] = json!({"phase": "Active"});
                object["spec"] = json!({"finalizers": ["kubernetes"]});
                let name = object["metadata"]["name"].clone();
                let labels = &mut object["metadata"]["labels"];
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels["kubernetes.io/metadata.name"] = name;
            }
            ("", "Service") if object["spec"]["type"].is_null() && object["spec"].is_object() => {
                object["spec"]["type"] = json!("ClusterIP");
            }
            ("apps", "Deployment" | "ReplicaSet")
                if object["spec"]["replicas"].is_null() && object["spec"].is_object() =>
            {
                object["spec"]["replicas"] = json!(1);
            }
            _ => {}
        }
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

    /// What the service-account controller does for every new namespace.
    fn create_default_service_account(&mut self, namespace: &str) {
        let Some(info) = self.resolve("", "v1", "serviceaccounts") else {
            return;
        };
        let options = WriteOptions {
            manager: "kube-controller-manager".into(),
            ..WriteOptions::default()
        };
        let account = json!({"metadata": {"name": "default"}});
        if let Err(error) = self.create(&info, namespace, account, &options, &mut Vec::new()) {
            tracing::debug!(%error, "default service account not created");
        }
    }

    /// Marks a new CRD Established and starts serving its resource.
    fn establish_crd(&mut self, name: &str) -> Result<()> {
        let info = self.crd_info();
        let crd = self.get(&info, "", name)?;
        let mut crd = (*crd).clone();
        let now = now_rfc3339();
        crd["status"] = json!({
            "acceptedNames": crd["spec"]["names"].clone(),
            "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
        let rv = self.store.next_resource_version();
        crd["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store
            .put(&info.storage_key(), crd, EventType::Modified, rv);
        self.refresh_custom_resources();
        Ok(())
    }

    /// PUT of the object (`scope` main) or of its status subresource.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        mut object: Value,
        scope: Scope,
        options: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        Self::check_type(info, &mut object)?;
        let mut object = crate::events::to_storage(info, object);
        let old = self.get(info, namespace, name)?;
        let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let requested_rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !requested_rv.is_empty()
            && requested_rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(conflict_modified(info, name));
        }
        let requested_uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        if !requested_uid.is_empty()
            && requested_uid != old["metadata"]["uid"].as_str().unwrap_or_default()
        {
            return Err(Error::conflict(format!(
                "Precondition failed: UID in precondition: {requested_uid}, UID in object meta: {}",
                old["metadata"]["uid"].as_str().unwrap_or_default()
            )));
        }
        let mut new = match scope {
            Scope::Status => {
                let mut merged = (*old).clone();
                merged["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                if merged["status"].is_null() {
                    merged.as_object_mut().expect("object").remove("status");
                }
                if let Some(fields) = object["metadata"].get("managedFields") {
                    merged["metadata"]["managedFields"] = fields.clone();
                }
                merged
            }
            Scope::Main { status_is_separate } => {
                if status_is_separate {
                    match old.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => {
                            object.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                object
            }
        };
        self.finish_update(info, &old, &mut new, scope, options, warnings)
    }

    /// Shared tail of every write to an existing object: server-owned fields, validation,
    /// generation, managedFields, no-op detection, and removal once the last finalizer is gone.
    pub fn finish_update(
        &mut self,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
        scope: Scope,
        options: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = old["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        {
            let old_meta = &old["metadata"];
            let meta = new["metadata"]
                .as_object_mut()
                .ok_or_else(|| Error::bad_request("metadata must be an object"))?;
            for server_owned in [
                "uid",
                "creationTimestamp",
                "name",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(server_owned) {
                    Some(v) => {
                        meta.insert(server_owned.into(), v.clone());
                    }
                    None => {
                        meta.remove(server_owned);
                    }
                }
            }
            meta.insert(
                "resourceVersion".into(),
                old_meta["resourceVersion"].clone(),
            );
        }
        new["apiVersion"] = json!(crate::events::stored_api_version(info));
        new["kind"] = json!(info.kind);
        if old["metadata"].get("deletionTimestamp").is_some() {
            let old_finalizers: Vec<&Value> = old["metadata"]["finalizers"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let added = new["metadata"]["finalizers"]
                .as_array()
                .map(|a| a.iter().any(|f| !old_finalizers.contains(&f)))
                .unwrap_or(false);
            if added {
                return Err(invalid(
                    info,
                    &name,
                    vec![(
                        "metadata.finalizers".into(),
                        "FieldValueForbidden".into(),
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    )],
                ));
            }
        }
        schema::validate_for_write(info, new, Some(old), options.validation, warnings)?;
        Self::check_crd(info, new)?;
        if scope != Scope::Status && spec_part(old) != spec_part(new) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        let now = now_rfc3339();
        if new["metadata"].get("managedFields") == old["metadata"].get("managedFields") {
            managed_fields::record_update(
                Some(old),
                new,
                &options.manager,
                scope,
                &info.api_version(),
                &now,
            );
        }
        if *new == *old {
            return Ok(new.clone());
        }
        if options.dry_run {
            return Ok(new.clone());
        }
        let storage_key = info.storage_key();
        let finalizers_empty = new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        let rv = self.store.next_resource_version();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        if new["metadata"].get("deletionTimestamp").is_some()
            && finalizers_empty
            && !self.awaits_kubelet(info, new)
        {
            let key = crate::store::object_key(new);
            self.store.remove(&storage_key, &key, new.clone(), rv);
            self.after_removal(info, new);
            return Ok(new.clone());
        }
        let stored = self
            .store
            .put(&storage_key, new.clone(), EventType::Modified, rv);
        if info.kind == "CustomResourceDefinition" && info.group == "apiextensions.k8s.io" {
            self.refresh_custom_resources();
        }
        Ok((*stored).clone())
    }

    /// A pod on a node stays (terminating) until its kubelet confirms with a zero-grace delete.
    fn awaits_kubelet(&self, info: &ResourceInfo, object: &Value) -> bool {
        info.group.is_empty()
            && info.kind == "Pod"
            && object["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && object["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                > 0
            && !matches!(
                object["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
    }

    pub fn delete(
        &mut self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted> {
        let old = self.get(info, namespace, name)?;
        if let Some(uid) = &options.precondition_uid {
            if old["metadata"]["uid"].as_str() != Some(uid.as_str()) {
                return Err(Error::conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                )));
            }
        }
        if let Some(rv) = &options.precondition_resource_version {
            if old["metadata"]["resourceVersion"].as_str() != Some(rv.as_str()) {
                return Err(Error::conflict(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
                )));
            }
        }
        let mut new = (*old).clone();
        let mut finalizers: Vec<Value> = new["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let extra = match options.propagation {
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
            Propagation::Background => None,
        };
        let already_deleting = new["metadata"].get("deletionTimestamp").is_some();
        if let Some(extra) = extra {
            if !already_deleting && !finalizers.iter().any(|f| f == extra) {
                finalizers.push(json!(extra));
            }
        }
        let is_pod = info.group.is_empty() && info.kind == "Pod";
        let grace = if is_pod {
            let spec_grace = new["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(DEFAULT_POD_GRACE_SECONDS);
            options.grace_period_seconds.unwrap_or(spec_grace).max(0)
        } else {
            0
        };
        let on_node = is_pod
            && new["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && !matches!(
                new["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        let graceful = on_node && grace > 0;
        let is_namespace = info.group.is_empty() && info.kind == "Namespace";
        if finalizers.is_empty() && !graceful && !is_namespace {
            if options.dry_run {
                return Ok(Deleted::Now(new));
            }
            let rv = self.store.next_resource_version();
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = crate::store::object_key(&new);
            self.store
                .remove(&info.storage_key(), &key, new.clone(), rv);
            self.after_removal(info, &new);
            return Ok(Deleted::Now(new));
        }
        if already_deleting {
            let shorter_grace = graceful
                && new["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .is_some_and(|g| grace < g);
            if !shorter_grace {
                return Ok(Deleted::Pending(new));
            }
        }
        if options.dry_run {
            return Ok(Deleted::Pending(new));
        }
        let deletion_time = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs(if graceful { grace } else { 0 });
        new["metadata"]["deletionTimestamp"] =
            json!(deletion_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if !finalizers.is_empty() {
            new["metadata"]["finalizers"] = Value::Array(finalizers);
        }
        if is_namespace {
            new["status"]["phase"] = json!("Terminating");
        }
        let generation = new["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        new["metadata"]["generation"] = json!(generation);
        let rv = self.store.next_resource_version();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.store
            .put(&info.storage_key(), new.clone(), EventType::Modified, rv);
        if info.kind == "CustomResourceDefinition" && info.group == "apiextensions.k8s.io" {
            self.refresh_custom_resources();
        }
        Ok(Deleted::Pending(new))
    }

    /// Clean-up the real server does when certain objects go: a CRD takes its objects with it.
    fn after_removal(&mut self, info: &ResourceInfo, removed: &Value) {
        if info.kind == "CustomResourceDefinition" && info.group == "apiextensions.k8s.io" {
            let group = removed["spec"]["group"].as_str().unwrap_or_default();
            let plural = removed["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default();
            let storage_key = format!("{group}/{plural}");
            for object in self.store.list(&storage_key, None) {
                let rv = self.store.next_resource_version();
                let mut gone = (*object).clone();
                gone["metadata"]["resourceVersion"] = json!(rv.to_string());
                let key = crate::store::object_key(&gone);
                self.store.remove(&storage_key, &key, gone, rv);
            }
            self.refresh_custom_resources();
        }
    }

    /// Removes an object whose deletion is complete (used by the garbage collector and namespaces).
    pub fn remove_now(&mut self, info: &ResourceInfo, object: &Value) {
        let rv = self.store.next_resource_version();
        let mut gone = object.clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = crate::store::object_key(&gone);
        self.store
            .remove(&info.storage_key(), &key, gone.clone(), rv);
        self.after_removal(info, &gone);
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
