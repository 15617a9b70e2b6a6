//! The create path: naming (name or generateName), the namespace check, server-set metadata,
//! per-kind defaults, and what creating a Namespace or a CRD sets off.

use super::{invalid, new_uid, now_rfc3339, State, WriteOptions};
use crate::error::{Error, Result};
use crate::managed_fields::{self, Scope};
use crate::resources::ResourceInfo;
use crate::schema;
use crate::store::{EventType, ObjectKey};
use serde_json::{json, Map, Value};

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

/// Puts the URL's namespace into the metadata (or drops it for cluster-scoped kinds); a body
/// naming another namespace is refused.
fn settle_namespace(
    info: &ResourceInfo,
    namespace: &str,
    meta: &mut Map<String, Value>,
) -> Result<()> {
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
    Ok(())
}

/// The name the object gets: its own, or `generateName` plus a random suffix; it must be a
/// DNS subdomain.
fn settle_name(info: &ResourceInfo, meta: &mut Map<String, Value>) -> Result<String> {
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
    Ok(name)
}

/// Drops what only the server may set; the client's values are ignored, not refused.
fn strip_server_owned(meta: &mut Map<String, Value>) {
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
}

/// Records the creating manager (unless the body brings managedFields) and sets uid,
/// creationTimestamp and generation 1.
fn stamp_new(info: &ResourceInfo, object: &mut Value, options: &WriteOptions) {
    let now = now_rfc3339();
    if object["metadata"].get("managedFields").is_none() {
        managed_fields::record_update(
            None,
            object,
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
}

impl State {
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
        settle_namespace(info, namespace, meta)?;
        let name = settle_name(info, meta)?;
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
        strip_server_owned(meta);
        self.prepare_for_create(info, &mut object);
        schema::validate_for_write(info, &mut object, None, options.validation, warnings)?;
        Self::check_crd(info, &object)?;
        stamp_new(info, &mut object, options);
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
}
