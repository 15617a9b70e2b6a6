//! The update path shared by PUT, PATCH, apply and the server's own writes: preconditions,
//! the status/spec split, server-owned metadata, generation, managedFields, and the removal of
//! an object whose last finalizer goes while it is being deleted.

use super::{invalid, now_rfc3339, State, WriteOptions};
use crate::error::{Error, Result};
use crate::managed_fields::{self, Scope};
use crate::resources::ResourceInfo;
use crate::schema;
use crate::store::EventType;
use serde_json::{json, Value};

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

/// Carries the server-owned metadata of the stored object over to the new one, whatever the
/// client sent.
fn keep_server_owned(old: &Value, new: &mut Value) -> Result<()> {
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
    Ok(())
}

/// An object being deleted may lose finalizers but not gain them.
fn refuse_new_finalizers(info: &ResourceInfo, name: &str, old: &Value, new: &Value) -> Result<()> {
    if old["metadata"].get("deletionTimestamp").is_none() {
        return Ok(());
    }
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
            name,
            vec![(
                "metadata.finalizers".into(),
                "FieldValueForbidden".into(),
                "Forbidden: no new finalizers can be added if the object is being deleted".into(),
            )],
        ));
    }
    Ok(())
}

/// Checks the body's resourceVersion and uid, when it names them, against the stored object.
fn check_update_preconditions(
    info: &ResourceInfo,
    name: &str,
    old: &Value,
    object: &Value,
) -> Result<()> {
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
    Ok(())
}

/// The object a PUT makes: a status write takes only the status (and managedFields) from the
/// body; a main write keeps the stored status when status is its own subresource.
fn merge_for_scope(old: &Value, mut object: Value, scope: Scope) -> Value {
    match scope {
        Scope::Status => {
            let mut merged = old.clone();
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
    }
}

impl State {
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
        let object = crate::events::to_storage(info, object);
        let old = self.get(info, namespace, name)?;
        let body_name = object["metadata"]["name"].as_str().unwrap_or_default();
        if !body_name.is_empty() && body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        check_update_preconditions(info, name, &old, &object)?;
        let mut new = merge_for_scope(&old, object, scope);
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
        keep_server_owned(old, new)?;
        new["apiVersion"] = json!(crate::events::stored_api_version(info));
        new["kind"] = json!(info.kind);
        refuse_new_finalizers(info, &name, old, new)?;
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
        self.store_update(info, new)
    }

    /// Stores a changed object, or removes it when its deletion has nothing left to wait for.
    fn store_update(&mut self, info: &ResourceInfo, new: &mut Value) -> Result<Value> {
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
}
