//! The Node object this kubelet registers, and its heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

use crate::error::Result;
use crate::pod::fields::machine_memory_bytes;
use crate::pod::worker::HOST_IP;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);
/// Pod capacity advertised; the loopback address pool is far larger.
const MAX_PODS: &str = "1000";

fn node_status(started: Timestamp) -> NodeStatus {
    let now = Time(Timestamp::now());
    let mut capacity = BTreeMap::new();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    capacity.insert("cpu".to_owned(), Quantity(cpus.to_string()));
    capacity.insert(
        "memory".to_owned(),
        Quantity(machine_memory_bytes().to_string()),
    );
    capacity.insert("pods".to_owned(), Quantity(MAX_PODS.into()));
    let condition = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(Time(started)),
    };
    NodeStatus {
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "devcluster process kubelet is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: HOST_IP.into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: "localhost".into(),
            },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: std::env::consts::OS.into(),
            os_image: "devcluster".into(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            container_runtime_version: "devcluster-process://0.1".into(),
            kubelet_version: "v1.34.0-devcluster".into(),
            kube_proxy_version: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            boot_id: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node if it is missing and posts a Ready status.
pub async fn register(client: &kube::Client, name: &str, started: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".to_owned(), name.to_owned());
        labels.insert(
            "kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        );
        labels.insert(
            "node.kubernetes.io/instance-type".to_owned(),
            "devcluster".to_owned(),
        );
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    heartbeat(&nodes, name, started).await
}

pub async fn heartbeat(nodes: &Api<Node>, name: &str, started: Timestamp) -> Result<()> {
    let patch = serde_json::json!({ "status": node_status(started) });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Posts the node status every [`HEARTBEAT_PERIOD`] until cancelled.
pub async fn heartbeat_loop(client: kube::Client, name: String, started: Timestamp) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(HEARTBEAT_PERIOD).await;
        if let Err(error) = heartbeat(&nodes, &name, started).await {
            tracing::warn!(%error, "node heartbeat failed");
        }
    }
}
