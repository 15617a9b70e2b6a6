//! API discovery: `/version`, `/api`, `/apis`, per group and group-version resource lists, and the
//! aggregated form (`apidiscovery.k8s.io` v2 / v2beta1) kubectl asks for first.

use crate::cluster::State;
use crate::resources::ResourceInfo;
use serde_json::{json, Value};

pub const KUBERNETES_VERSION: &str = "v1.34.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": format!("{KUBERNETES_VERSION}-capsule-devcluster"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none (capsule-devcluster, Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// Groups (except core) with their versions, in table order.
fn group_versions(state: &State) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in state.resources.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version.clone());
                }
            }
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    for (group, versions) in &mut groups {
        // The storage version is the preferred one.
        if let Some(storage) = state
            .resources
            .iter()
            .find(|r| &r.group == group)
            .map(|r| r.storage_version.clone())
        {
            if let Some(i) = versions.iter().position(|v| *v == storage) {
                let preferred = versions.remove(i);
                versions.insert(0, preferred);
            }
        }
    }
    groups
}

fn api_group(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": entries, "preferredVersion": entries.first().cloned().unwrap_or(Value::Null)})
}

pub fn groups(state: &State) -> Value {
    let groups: Vec<Value> = group_versions(state)
        .iter()
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(state: &State, group: &str) -> Option<Value> {
    group_versions(state)
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(g, v)| {
            let mut body = api_group(&g, &v);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            body
        })
}

/// `(name, kind group, kind version, kind, verbs)` of each subresource.
fn subresource_shape(
    info: &ResourceInfo,
    sub: &str,
) -> (String, String, String, Vec<&'static str>) {
    match sub {
        "scale" => (
            "autoscaling".into(),
            "v1".into(),
            "Scale".into(),
            vec!["get", "patch", "update"],
        ),
        "log" => (String::new(), "v1".into(), "Pod".into(), vec!["get"]),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
            vec!["create"],
        ),
        "binding" => (String::new(), "v1".into(), "Binding".into(), vec!["create"]),
        "finalize" => (
            String::new(),
            "v1".into(),
            info.kind.clone(),
            vec!["update"],
        ),
        _ => (
            info.group.clone(),
            info.version.clone(),
            info.kind.clone(),
            vec!["get", "patch", "update"],
        ),
    }
}

pub fn resource_list(state: &State, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<&ResourceInfo> = state
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in resources {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        add_names(&mut entry, r);
        entries.push(entry);
        for sub in &r.subresources {
            let (g, v, kind, verbs) = subresource_shape(r, sub);
            let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if g != r.group {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            entries.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}),
    )
}

/// The resource's short names and categories, where it has any (discovery leaves empty ones out).
fn add_names(entry: &mut Value, r: &ResourceInfo) {
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    add_names(&mut entry, r);
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (g, v, kind, verbs) = subresource_shape(r, sub);
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
        })
        .collect();
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

/// `APIGroupDiscoveryList` for `/api` (core) or `/apis` (all named groups).
pub fn aggregated(state: &State, core: bool, discovery_version: &str) -> Value {
    let group_list: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        group_versions(state)
    };
    let items: Vec<Value> = group_list
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = state
                        .resources
                        .iter()
                        .filter(|r| &r.group == group && &r.version == version)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
            if !group.is_empty() {
                item["metadata"]["name"] = json!(group);
            }
            item
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{discovery_version}"),
        "metadata": {},
        "items": items,
    })
}
