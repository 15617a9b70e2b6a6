//! How the operator reaches a worker pod: its admin endpoint and the credential it presents there.

use k8s_openapi::api::core::v1::Pod;

use crate::context::Context;

/// The credential the operator presents to the worker `pod` of `pool`.
pub(super) fn worker_token(ctx: &Context, ns: &str, pool: &str, pod: &Pod) -> Option<String> {
    let key = ctx.directory.get()?.pool_key(ns, pool)?;
    Some(crate::relay::directory::credential_of(&key, pod))
}

/// The worker's admin URL, once the pod has an IP.
pub(super) fn endpoint(pod: &Pod, port: i32) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(format!("http://{ip}:{port}"))
}
