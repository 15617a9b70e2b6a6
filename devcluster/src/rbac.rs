//! RBAC authorisation from the stored Role, ClusterRole, RoleBinding and ClusterRoleBinding objects,
//! for requests by non-admin users (service accounts) and for SubjectAccessReview.
//! Enforced: verbs, apiGroups, resources (`res`, `res/sub`, `*`, `*/sub`), resourceNames, and
//! subjects by User, Group and ServiceAccount, and ClusterRole aggregation (`aggregationRule`: the
//! rules of every ClusterRole its selectors match, transitively, computed when a request is
//! authorised rather than written back into the role by a controller). Not enforced:
//! nonResourceURLs (every authenticated user may read discovery and OpenAPI).

use crate::api::ResourcePath;
use crate::cluster::State;
use crate::error::Error;
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::tokens::User;
use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub verb: String,
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl Attributes {
    pub fn for_request(info: &ResourceInfo, path: &ResourcePath, verb: &str) -> Self {
        Attributes {
            verb: verb.into(),
            namespace: path.namespace.clone().unwrap_or_default(),
            group: info.group.clone(),
            resource: info.plural.clone(),
            subresource: path.subresource.clone().unwrap_or_default(),
            name: path.name.clone().unwrap_or_default(),
        }
    }
}

/// Reviews every authenticated user may create about itself.
const SELF_REVIEWS: &[&str] = &[
    "selfsubjectaccessreviews",
    "selfsubjectreviews",
    "selfsubjectrulesreviews",
];

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let full = if attributes.subresource.is_empty() {
        attributes.resource.clone()
    } else {
        format!("{}/{}", attributes.resource, attributes.subresource)
    };
    let verb_ok = verbs.iter().any(|v| *v == "*" || *v == attributes.verb);
    let group_ok = groups.iter().any(|g| *g == "*" || *g == attributes.group);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == full
            || (attributes.subresource.is_empty() && *r == attributes.resource)
            || (!attributes.subresource.is_empty() && *r == format!("*/{}", attributes.subresource))
    });
    let name_ok = names.is_empty()
        || (!attributes.name.is_empty() && names.contains(&attributes.name.as_str()));
    verb_ok && group_ok && resource_ok && name_ok
}

const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";

fn role_rules(state: &State, kind: &str, name: &str, namespace: &str) -> Vec<Value> {
    if kind == "ClusterRole" {
        let mut rules = Vec::new();
        cluster_role_rules(state, name, &mut Vec::new(), &mut rules);
        return rules;
    }
    state
        .store
        .get(
            "rbac.authorization.k8s.io/roles",
            &(namespace.to_string(), name.to_string()),
        )
        .and_then(|role| role["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// A ClusterRole's own rules plus, through its `aggregationRule`, those of every ClusterRole its
/// selectors match (each role visited once, so cycles end).
fn cluster_role_rules(
    state: &State,
    name: &str,
    visited: &mut Vec<String>,
    rules: &mut Vec<Value>,
) {
    if visited.iter().any(|v| v == name) {
        return;
    }
    visited.push(name.to_string());
    let Some(role) = state
        .store
        .get(CLUSTER_ROLES, &(String::new(), name.to_string()))
    else {
        return;
    };
    rules.extend(role["rules"].as_array().cloned().unwrap_or_default());
    let selectors: Vec<LabelSelector> = role["aggregationRule"]["clusterRoleSelectors"]
        .as_array()
        .map(|s| s.iter().map(LabelSelector::from_object).collect())
        .unwrap_or_default();
    if selectors.is_empty() {
        return;
    }
    for other in state.store.list(CLUSTER_ROLES, None) {
        if selectors.iter().any(|s| s.matches(&other)) {
            let other_name = other["metadata"]["name"].as_str().unwrap_or_default();
            cluster_role_rules(state, other_name, visited, rules);
        }
    }
}

fn binding_allows(
    state: &State,
    binding: &Value,
    user: &User,
    attributes: &Attributes,
    namespace: &str,
) -> bool {
    let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
    if !subjects.iter().any(|s| subject_matches(s, user, namespace)) {
        return false;
    }
    let role_ref = &binding["roleRef"];
    role_rules(
        state,
        role_ref["kind"].as_str().unwrap_or_default(),
        role_ref["name"].as_str().unwrap_or_default(),
        namespace,
    )
    .iter()
    .any(|rule| rule_allows(rule, attributes))
}

/// Whether `user` may do what `attributes` describe.
pub fn authorize(state: &State, user: &User, attributes: &Attributes) -> bool {
    if user.is_master() {
        return true;
    }
    if attributes.verb == "create"
        && attributes.group.starts_with("authorization.k8s.io")
        && SELF_REVIEWS.contains(&attributes.resource.as_str())
    {
        return true;
    }
    if attributes.verb == "create"
        && attributes.group == "authentication.k8s.io"
        && SELF_REVIEWS.contains(&attributes.resource.as_str())
    {
        return true;
    }
    let cluster_bindings = state
        .store
        .list("rbac.authorization.k8s.io/clusterrolebindings", None);
    if cluster_bindings
        .iter()
        .any(|b| binding_allows(state, b, user, attributes, ""))
    {
        return true;
    }
    if attributes.namespace.is_empty() {
        return false;
    }
    state
        .store
        .list(
            "rbac.authorization.k8s.io/rolebindings",
            Some(&attributes.namespace),
        )
        .iter()
        .any(|b| binding_allows(state, b, user, attributes, &attributes.namespace))
}

/// The real server's 403 wording.
pub fn forbidden(user: &User, info: &ResourceInfo, path: &ResourcePath, verb: &str) -> Error {
    let resource = match &path.subresource {
        Some(sub) => format!("{}/{sub}", info.plural),
        None => info.plural.clone(),
    };
    let subject = match &path.name {
        Some(name) => format!("{} \"{name}\"", info.qualified_resource()),
        None => info.qualified_resource(),
    };
    let place = match &path.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    Error::forbidden(format!(
        "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{place}",
        user.name, info.group
    ))
}
