//! The Secrets and ConfigMaps a pod refers to, fetched once per pod start.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
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
            let data = self.secrets.get_opt(name).await?.map(|secret| {
                let mut data: BTreeMap<String, Vec<u8>> = secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            });
            self.secret_data.insert(name.to_owned(), data);
        }
        Ok(self.secret_data[name].as_ref())
    }

    /// The ConfigMap's data and binaryData, None when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<&BTreeMap<String, Vec<u8>>>> {
        if !self.config_map_data.contains_key(name) {
            let data = self.config_maps.get_opt(name).await?.map(|map| {
                let mut data: BTreeMap<String, Vec<u8>> = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    map.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            });
            self.config_map_data.insert(name.to_owned(), data);
        }
        Ok(self.config_map_data[name].as_ref())
    }
}
