//! A container's environment, built as Kubernetes builds it: `envFrom` sources first, then `env` in
//! order, each value `$(VAR)`-expanded against what is defined before it; `valueFrom` reads the
//! downward API, Secrets and ConfigMaps.

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use super::expand::expand;
use super::fields::{field_value, resource_value};
use super::objects::PodObjects;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn expand(&self, text: &str) -> String {
        expand(text, |name| self.get(name).map(str::to_owned))
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut (String, String)> {
        self.0.iter_mut()
    }
}

pub struct PodAddresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

/// `base` comes first (what the kubelet itself sets) and may be overridden by the container.
pub async fn container_env(
    objects: &mut PodObjects,
    pod: &Pod,
    container: &Container,
    addresses: &PodAddresses<'_>,
    base: EnvList,
) -> Result<EnvList> {
    let mut env = base;
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (name, optional, data) = if let Some(reference) = &source.config_map_ref {
            let data = objects.config_map(&reference.name).await?.cloned();
            (
                reference.name.clone(),
                reference.optional.unwrap_or(false),
                data,
            )
        } else if let Some(reference) = &source.secret_ref {
            let data = objects.secret(&reference.name).await?.cloned();
            (
                reference.name.clone(),
                reference.optional.unwrap_or(false),
                data,
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    env.set(
                        &format!("{prefix}{key}"),
                        String::from_utf8_lossy(&value).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => {
                return Err(Error::Env {
                    name: format!("envFrom {name}"),
                    message: format!("{name} not found"),
                })
            }
        }
    }
    for variable in container.env.iter().flatten() {
        if let Some(value) = env_value(objects, pod, container, addresses, &env, variable).await? {
            env.set(&variable.name, value);
        }
    }
    Ok(env)
}

/// None: an optional reference to something missing, which leaves the variable unset.
async fn env_value(
    objects: &mut PodObjects,
    pod: &Pod,
    container: &Container,
    addresses: &PodAddresses<'_>,
    env: &EnvList,
    variable: &EnvVar,
) -> Result<Option<String>> {
    let fail = |message: String| Error::Env {
        name: variable.name.clone(),
        message,
    };
    let Some(source) = &variable.value_from else {
        return Ok(Some(
            env.expand(variable.value.as_deref().unwrap_or_default()),
        ));
    };
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path, addresses.pod_ip, addresses.host_ip)
            .map(Some)
            .ok_or_else(|| fail(format!("unsupported fieldPath {}", field.field_path)));
    }
    if let Some(resource) = &source.resource_field_ref {
        return resource_value(container, &resource.resource)
            .map(Some)
            .ok_or_else(|| fail(format!("unsupported resource {}", resource.resource)));
    }
    let (kind, name, key, optional, data) = if let Some(selector) = &source.secret_key_ref {
        let data = objects.secret(&selector.name).await?.cloned();
        (
            "secret",
            &selector.name,
            &selector.key,
            selector.optional.unwrap_or(false),
            data,
        )
    } else if let Some(selector) = &source.config_map_key_ref {
        let data = objects.config_map(&selector.name).await?.cloned();
        (
            "configmap",
            &selector.name,
            &selector.key,
            selector.optional.unwrap_or(false),
            data,
        )
    } else {
        return Err(fail("valueFrom names no source".into()));
    };
    match data.as_ref().and_then(|d| d.get(key)) {
        Some(value) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
        None if optional => Ok(None),
        None if data.is_none() => Err(fail(format!("{kind} \"{name}\" not found"))),
        None => Err(fail(format!("couldn't find key {key} in {kind} {name}"))),
    }
}
