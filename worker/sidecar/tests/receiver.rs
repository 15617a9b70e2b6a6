//! Frame receiver robustness against the real `capsule-sidecar` process: malformed, oversized and
//! cut-short frames are counted and skipped, the process never crashes, and `/metrics`,
//! `/healthz` and the buffer keep working.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use common::*;

fn valid(execution: &str) -> Vec<u8> {
    frame::encode(&TraceEvent::new(
        TraceEventKind::Submit,
        execution,
        Some("s"),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/trace.sock");
    // A stale socket file from an earlier run is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    std::fs::write(&socket, b"stale").unwrap();
    let sidecar = start_sidecar(sidecar_command(&socket), dir.path());

    let health = reqwest::get(sidecar.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.write_all(&valid("e1")).unwrap();
    // Not JSON.
    stream.write_all(&5u32.to_be_bytes()).unwrap();
    stream.write_all(b"{nope").unwrap();
    // JSON, but not a trace event.
    let wrong = br#"{"kind":"noSuchKind"}"#;
    stream
        .write_all(&(wrong.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(wrong).unwrap();
    // Larger than the sidecar's frame bound: skipped without desynchronising the stream.
    let big = capsule_sidecar::receiver::MAX_TRACE_FRAME_BYTES + 1;
    stream.write_all(&(big as u32).to_be_bytes()).unwrap();
    stream.write_all(&vec![b'x'; big]).unwrap();
    stream.write_all(&valid("e2")).unwrap();
    stream.flush().unwrap();

    let text = wait_for_metric(&sidecar, "capsule_sidecar_trace_events_received_total", 2.0).await;
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_trace_frames_rejected_total{reason="malformed"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_trace_frames_rejected_total{reason="oversized"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "capsule_sidecar_trace_buffer_events"),
        Some(2.0)
    );

    // A frame cut short ends that connection only; a new writer is served.
    stream.write_all(&100u32.to_be_bytes()).unwrap();
    stream.write_all(b"{\"kind\"").unwrap();
    drop(stream);
    let mut second = UnixStream::connect(&socket).unwrap();
    second.write_all(&valid("e3")).unwrap();
    // A header announcing 4 GiB is skipped as oversized, never allocated.
    second.write_all(&u32::MAX.to_be_bytes()).unwrap();
    second.write_all(b"short").unwrap();
    drop(second);
    let text = wait_for_metric(&sidecar, "capsule_sidecar_trace_events_received_total", 3.0).await;
    assert_eq!(
        metric(
            &text,
            r#"capsule_sidecar_trace_frames_rejected_total{reason="oversized"}"#
        ),
        Some(2.0),
        "{text}"
    );

    let mut sidecar = sidecar;
    assert!(
        sidecar.child.try_wait().unwrap().is_none(),
        "the sidecar is still running"
    );
    let health = reqwest::get(sidecar.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let logs = sidecar.stderr();
    assert!(!logs.contains("nope"), "frame contents are never logged");
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_introspection_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let sidecar = start_sidecar(sidecar_command(&socket), dir.path());
    let text = scrape(&sidecar).await;
    for name in [
        "capsule_sidecar_trace_events_received_total",
        "capsule_sidecar_trace_events_dropped_total",
        "capsule_sidecar_spans_exported_total",
        "capsule_sidecar_span_export_failures_total",
        "capsule_sidecar_spans_dropped_total",
        "capsule_sidecar_trace_buffer_events",
        "capsule_sidecar_trace_buffer_bytes",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert!(metric(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "capsule_build_info{{version=\"{}\",revision=",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let promtool = tool("bin/promtool", "promtool");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(text.as_bytes());
    assert!(check.0.success(), "promtool: {}", check.1);
    check.1.clear();

    // No token and no credentials: 401, with an audit record.
    let response = reqwest::get(sidecar.url("/v1/introspection/counters"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(sidecar.stderr().contains(r#""decision":"unauthenticated""#));
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String);
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String) {
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    }
}
