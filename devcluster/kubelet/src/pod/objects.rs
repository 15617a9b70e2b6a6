//! The Secrets and ConfigMaps a pod refers to, fetched once per pod start.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::Api;

use crate::error::Result;

pub struct PodObjects {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_data: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    config_map_data: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl PodObjects {
    pub fn new(client: &kube::Client, namespace: &str) -> Self {
        PodObjects {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            secret_data: HashMap::new(),
            config_map_data: HashMap::new(),
        }
    }

    /// The Secret's data, None when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.secret_data.contains_key(name) {
            let data = (self.secrets.get_opt(name).await?)
                .map(|secret| merged_data(secret.string_data, secret.data));
            self.secret_data.insert(name.to_owned(), data);
        }
        Ok(self.secret_data[name].as_ref())
    }

    /// The ConfigMap's data and binaryData, None when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.config_map_data.contains_key(name) {
            let data = (self.config_maps.get_opt(name).await?)
                .map(|map| merged_data(map.data, map.binary_data));
            self.config_map_data.insert(name.to_owned(), data);
        }
        Ok(self.config_map_data[name].as_ref())
    }
}

/// An object's text and binary keys as one map of bytes; a key in both keeps its binary value.
fn merged_data(
    text: Option<BTreeMap<String, String>>,
    binary: Option<BTreeMap<String, ByteString>>,
) -> BTreeMap<String, Vec<u8>> {
    let text = text.unwrap_or_default().into_iter();
    let binary = binary.unwrap_or_default().into_iter();
    text.map(|(k, v)| (k, v.into_bytes()))
        .chain(binary.map(|(k, v)| (k, v.0)))
        .collect()
}
