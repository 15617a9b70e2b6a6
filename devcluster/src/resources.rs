//! The table of resource kinds the server knows: the built-in kinds it stores and serves, and (at run
//! time) one entry per served version of each registered CustomResourceDefinition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the scale subresource reads and writes replicas, as JSON paths like `.spec.replicas`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Subresource names: `status`, `scale`, `log`, `token`, `finalize`.
    pub subresources: Vec<String>,
    pub verbs: Vec<String>,
    pub scale: Option<ScalePaths>,
    /// The CRD version's `openAPIV3Schema`, when this is a custom resource.
    pub schema: Option<Value>,
    /// The CRD version's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    pub custom: bool,
    /// The version objects are stored in (the CRD's storage version); all versions share the store.
    pub storage_version: String,
}

pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `name.group`, or `name` alone for the core group.
    fn group_qualified(&self, name: &str) -> String {
        if self.group.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{}", self.group)
        }
    }

    /// The key all versions of this resource share in the store (both Event APIs share one).
    pub fn storage_key(&self) -> String {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return "/events".into();
        }
        format!("{}/{}", self.group, self.plural)
    }

    /// `pods`, `deployments.apps`: the name the real server uses in messages.
    pub fn qualified_resource(&self) -> String {
        self.group_qualified(&self.plural)
    }

    pub fn qualified_kind(&self) -> String {
        self.group_qualified(&self.kind)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }

    pub fn is_create_only(&self) -> bool {
        self.verbs == ["create"]
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    subresources: &'static [&'static str],
    create_only: bool,
    categories: &'static [&'static str],
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    subresources: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        short_names,
        namespaced,
        subresources,
        create_only: false,
        categories: &[],
    }
}

const fn review(
    group: &'static str,
    kind_name: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Builtin {
    Builtin {
        group,
        version: "v1",
        kind: kind_name,
        plural,
        short_names: &[],
        namespaced,
        subresources: &[],
        create_only: true,
        categories: &[],
    }
}

const BUILTINS: &[Builtin] = &[
    kind(
        "",
        "v1",
        "Namespace",
        "namespaces",
        &["ns"],
        false,
        &["status", "finalize"],
    ),
    Builtin {
        categories: &["all"],
        ..kind(
            "",
            "v1",
            "Pod",
            "pods",
            &["po"],
            true,
            &["status", "log", "binding"],
        )
    },
    kind("", "v1", "Secret", "secrets", &[], true, &[]),
    kind("", "v1", "ConfigMap", "configmaps", &["cm"], true, &[]),
    Builtin {
        categories: &["all"],
        ..kind("", "v1", "Service", "services", &["svc"], true, &["status"])
    },
    kind(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        &["sa"],
        true,
        &["token"],
    ),
    kind("", "v1", "Event", "events", &["ev"], true, &[]),
    kind("", "v1", "Endpoints", "endpoints", &["ep"], true, &[]),
    kind("", "v1", "Node", "nodes", &["no"], false, &["status"]),
    kind("events.k8s.io", "v1", "Event", "events", &["ev"], true, &[]),
    kind(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        &[],
        true,
        &[],
    ),
    Builtin {
        categories: &["all"],
        ..kind(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            &["deploy"],
            true,
            &["status", "scale"],
        )
    },
    Builtin {
        categories: &["all"],
        ..kind(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            &["rs"],
            true,
            &["status", "scale"],
        )
    },
    kind(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        &["pdb"],
        true,
        &["status"],
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        &["netpol"],
        true,
        &[],
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        &[],
        true,
        &[],
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        &[],
        false,
        &[],
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        &[],
        true,
        &[],
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        &[],
        false,
        &[],
    ),
    kind(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &["crd", "crds"],
        false,
        &["status"],
    ),
    review(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
        false,
    ),
    review(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
    ),
    review(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
    review(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
    ),
];

/// The built-in kinds, in discovery order.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    BUILTINS
        .iter()
        .map(|b| {
            let scale = b.subresources.contains(&"scale").then(|| ScalePaths {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".status.selector".into()),
            });
            ResourceInfo {
                group: b.group.into(),
                version: b.version.into(),
                kind: b.kind.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                namespaced: b.namespaced,
                subresources: b.subresources.iter().map(|s| s.to_string()).collect(),
                verbs: if b.create_only {
                    vec!["create".into()]
                } else {
                    ALL_VERBS.iter().map(|s| s.to_string()).collect()
                },
                scale,
                schema: None,
                printer_columns: Vec::new(),
                custom: false,
                storage_version: b.version.into(),
            }
        })
        .collect()
}

/// One entry per served version of a CRD object (`apiextensions.k8s.io/v1`).
pub fn resources_from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .or(versions.first())
        .and_then(|v| v["name"].as_str())
        .unwrap_or("v1")
        .to_string();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| {
            let mut subresources = Vec::new();
            if v["subresources"].get("status").is_some() {
                subresources.push("status".to_string());
            }
            let scale = v["subresources"].get("scale").map(|s| ScalePaths {
                spec_replicas: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector: s["labelSelectorPath"].as_str().map(str::to_string),
            });
            if scale.is_some() {
                subresources.push("scale".to_string());
            }
            ResourceInfo {
                group: group.clone(),
                version: v["name"].as_str().unwrap_or_default().to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                namespaced,
                subresources,
                verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
                scale,
                schema: v["schema"].get("openAPIV3Schema").cloned(),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                custom: true,
                storage_version: storage_version.clone(),
            }
        })
        .collect()
}
