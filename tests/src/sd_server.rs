//! An HTTP service-discovery endpoint for Prometheus's `http_sd_configs`, reading pods and Services
//! from the devcluster through its API on every refresh: `/pod` and `/endpoints` answer the target
//! groups of [`crate::k8s_sd`].

use std::path::Path;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::Value;

use crate::k8s_sd;

/// A page this large holds every object of the tests' clusters; a longer list is refused rather
/// than cut short.
const LIST_LIMIT: u32 = 1000;

/// The running server; it stops when dropped.
pub struct SdServer {
    pub port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SdServer {
    /// `http://127.0.0.1:<port>/<role>`, for an `http_sd_configs` entry.
    pub fn url(&self, role: &str) -> String {
        format!("http://127.0.0.1:{}/{role}", self.port)
    }
}

impl Drop for SdServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn list<K>(client: &Client) -> Result<Vec<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let page = Api::<K>::all(client.clone())
        .list(&ListParams::default().limit(LIST_LIMIT))
        .await
        .map_err(|e| e.to_string())?;
    if page
        .metadata
        .continue_
        .as_deref()
        .is_some_and(|c| !c.is_empty())
    {
        return Err(format!(
            "more than {LIST_LIMIT} objects: the discovery lists one page"
        ));
    }
    Ok(page.items)
}

type Answer = Result<Json<Vec<Value>>, (StatusCode, String)>;

fn failed(e: String) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e)
}

async fn pods(State(client): State<Client>) -> Answer {
    let pods = list::<Pod>(&client).await.map_err(failed)?;
    Ok(Json(k8s_sd::pod_targets(&pods)))
}

async fn endpoints(State(client): State<Client>) -> Answer {
    let services = list::<Service>(&client).await.map_err(failed)?;
    let pods = list::<Pod>(&client).await.map_err(failed)?;
    Ok(Json(k8s_sd::endpoints_targets(&services, &pods)))
}

/// Starts the server on a free loopback port, acting as the kubeconfig's user.
pub fn start_sd_server(kubeconfig: &Path) -> SdServer {
    let kubeconfig = kubeconfig.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = Router::new()
                .route("/pod", get(pods))
                .route("/endpoints", get(endpoints))
                .with_state(crate::kube_client(&kubeconfig).await);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready_tx
                .send(listener.local_addr().unwrap().port())
                .unwrap();
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
        });
    });
    let port = ready_rx.recv().expect("the discovery server starts");
    SdServer {
        port,
        shutdown: Some(shutdown),
        thread: Some(thread),
    }
}
