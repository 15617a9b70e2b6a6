//! Talking to the processes under test: metric scrapes, trace events written to the sidecar's
//! socket, binding a worker to a session, and one execute round trip.

use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};

use crate::procs::Proc;

pub async fn metric(http: &reqwest::Client, proc: &Proc, name: &str) -> f64 {
    let text = http
        .get(format!("http://{}/metrics", proc.addr))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

pub fn write_events(socket: &Path, count: u64) {
    let mut stream = BufWriter::new(UnixStream::connect(socket).expect("connect"));
    for n in 0..count {
        let event = TraceEvent::new(
            TraceEventKind::OutputFlush,
            &format!("exec-{}", n / 8),
            Some("bench"),
        )
        .with_duration_ms(n)
        .with_attribute("bytes", 1024);
        stream.write_all(&frame::encode(&event).unwrap()).unwrap();
    }
    stream.flush().unwrap();
}

pub async fn wait_received(http: &reqwest::Client, proc: &Proc, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(http, proc, "capsule_sidecar_trace_events_received_total").await < count as f64 {
        assert!(Instant::now() < deadline, "events never all received");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn bind(http: &reqwest::Client, worker: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("http://{}/readyz", worker.addr))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "worker never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = http
        .put(format!("http://{}/v1/session", worker.addr))
        .bearer_auth("bench-token")
        .json(&serde_json::json!({
            "session": "bench", "namespace": "bench",
            "tokenSha256": capsule_protocol::auth::token_sha256_hex("session-token"),
        }))
        .send()
        .await
        .expect("bind")
        .status();
    assert_eq!(status, 204);
}

pub async fn round_trip(http: &reqwest::Client, worker: &Proc) -> Duration {
    let started = Instant::now();
    let body = http
        .post(format!("http://{}/v1/executions", worker.addr))
        .bearer_auth("session-token")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&serde_json::json!({ "code": "1 + 1" }))
        .send()
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert!(body.contains("\"result\""));
    started.elapsed()
}

pub fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1000.0
}
