//! Introspection rate limits on the real `capsule-sidecar`: a client flooding from one loopback
//! address gets 429 with `Retry-After`, counted per scope, while a client on another loopback
//! address, health, metrics and trace ingest keep answering; the overall bound covers every client.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;

use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use common::*;

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_gets_429_and_nobody_else_slows_down() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let mut command = sidecar_command(&socket);
    command
        .env("CAPSULE_INTROSPECTION_VIEWS", "Traces")
        .env("CAPSULE_INTROSPECTION_CLIENT_RATE", "1")
        .env("CAPSULE_INTROSPECTION_CLIENT_BURST", "5")
        .env("CAPSULE_INTROSPECTION_GLOBAL_RATE", "100000")
        .env("CAPSULE_INTROSPECTION_GLOBAL_BURST", "100000");
    let sidecar = start_sidecar(command, dir.path());
    let view = sidecar.url("/v1/introspection/traces");

    // The flood: 4 concurrent loops from 127.0.0.1, 60 requests each.
    let flooder = client_from("127.0.0.1");
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let flooder = flooder.clone();
            let view = view.clone();
            tokio::spawn(async move {
                let mut refused = 0u32;
                for _ in 0..60 {
                    let response = flooder.get(&view).send().await.unwrap();
                    if response.status() == 429 {
                        refused += 1;
                        let retry: u64 = response.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!((1..=2).contains(&retry), "Retry-After {retry}");
                        let body: serde_json::Value = response.json().await.unwrap();
                        assert_eq!(body["code"], "rateLimited");
                        assert!(
                            body["message"]
                                .as_str()
                                .unwrap()
                                .contains("CAPSULE_INTROSPECTION_CLIENT_RATE"),
                            "{body}"
                        );
                    } else {
                        assert_eq!(response.status(), 401, "under the limit: the gate answers");
                    }
                }
                refused
            })
        })
        .collect();

    // Meanwhile, everyone else is served as usual.
    let neighbour = client_from("127.0.0.2");
    for _ in 0..3 {
        assert_eq!(
            status(&neighbour, &view).await,
            401,
            "another client is not limited"
        );
        assert_eq!(status(&flooder, &sidecar.url("/healthz")).await, 200);
        assert_eq!(status(&flooder, &sidecar.url("/metrics")).await, 200);
    }
    let mut writer = UnixStream::connect(&socket).unwrap();
    writer
        .write_all(
            &frame::encode(&TraceEvent::new(TraceEventKind::Submit, "e1", Some("s"))).unwrap(),
        )
        .unwrap();
    wait_for_metric(&sidecar, "capsule_sidecar_trace_events_received_total", 1.0).await;

    let mut refused = 0;
    for task in flood {
        refused += task.await.unwrap();
    }
    // 240 requests at 1/s with a burst of 5: far more were refused than passed, whatever the pace.
    assert!(refused >= 120, "only {refused} of 240 refused");
    let text = scrape(&sidecar).await;
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_introspection_rate_limited_total{scope="client"}"#
        ),
        Some(f64::from(refused)),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_introspection_requests_total{decision="unauthenticated"}"#
        ),
        Some(f64::from(240 - refused + 3)),
        "refused requests never reached the gate"
    );
}

#[tokio::test]
async fn the_overall_bound_refuses_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = sidecar_command(&dir.path().join("trace.sock"));
    command
        .env("CAPSULE_INTROSPECTION_CLIENT_RATE", "10000")
        .env("CAPSULE_INTROSPECTION_CLIENT_BURST", "10000")
        .env("CAPSULE_INTROSPECTION_GLOBAL_RATE", "1")
        .env("CAPSULE_INTROSPECTION_GLOBAL_BURST", "3");
    let sidecar = start_sidecar(command, dir.path());
    let view = sidecar.url("/v1/introspection/traces");
    let mut statuses = Vec::new();
    for n in 0..30 {
        let client = client_from(&format!("127.0.0.{}", 2 + n % 4));
        let response = client.get(&view).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("CAPSULE_INTROSPECTION_GLOBAL_RATE"),
                "{body}"
            );
        }
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // 30 requests against a burst of 3 refilling at 1/s: fewer than 10 refusals would take the
    // 30 requests over 17 s.
    assert!(refused >= 10, "{statuses:?}");
    let text = scrape(&sidecar).await;
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_introspection_rate_limited_total{scope="global"}"#
        ),
        Some(refused as f64)
    );
}
