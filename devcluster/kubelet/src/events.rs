//! core/v1 Events about pods and workloads, as `kubectl describe` shows them. Posting is best effort:
//! a failure is logged and forgotten.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: &'static str,
    host: String,
}

pub fn reference_to<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: object.meta().name.clone(),
        namespace: object.meta().namespace.clone(),
        uid: object.meta().uid.clone(),
        resource_version: object.meta().resource_version.clone(),
        field_path: None,
    }
}

impl EventRecorder {
    pub fn new(client: kube::Client, component: &'static str, host: &str) -> Self {
        EventRecorder {
            client,
            component,
            host: host.to_owned(),
        }
    }

    pub async fn record(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:016x}",
                    regarding.name.clone().unwrap_or_default(),
                    rand::random::<u64>()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: Some(self.host.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.into()),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.host.clone()),
            count: Some(1),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, reason, object = regarding.name.as_deref().unwrap_or_default(), "event not recorded");
        }
    }
}

pub fn name_of<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}
