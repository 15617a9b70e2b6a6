//! A flood of 1,000,000 trace events into the real sidecar keeps its resident memory under the
//! buffer's cap (plus the process's own baseline and allocator slack), with the loss counted.

mod common;

use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;

use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use common::*;

const EVENTS: u64 = 1_000_000;
const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Allocator and runtime slack allowed above baseline + cap.
const SLACK_BYTES: u64 = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_stay_under_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let mut command = sidecar_command(&socket);
    // The count bound is set above the flood so that the memory cap is the bound that acts.
    command
        .env("CAPSULE_TRACE_MAX_EVENTS", EVENTS.to_string())
        .env("CAPSULE_TRACE_MAX_BYTES", MAX_BYTES.to_string());
    let sidecar = start_sidecar(command, dir.path());
    let baseline = rss_bytes(sidecar.pid());

    let socket_for_writer = socket.clone();
    let writer = std::thread::spawn(move || {
        let mut stream = BufWriter::new(UnixStream::connect(&socket_for_writer).unwrap());
        for n in 0..EVENTS {
            let event =
                TraceEvent::new(TraceEventKind::OutputFlush, &format!("exec-{n}"), Some("s"))
                    .with_duration_ms(n)
                    .with_attribute("bytes", 1024);
            stream.write_all(&frame::encode(&event).unwrap()).unwrap();
        }
        stream.flush().unwrap();
    });
    let mut peak = baseline;
    while !writer.is_finished() {
        peak = peak.max(rss_bytes(sidecar.pid()));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    writer.join().unwrap();
    let text = wait_for_metric(
        &sidecar,
        "capsule_sidecar_trace_events_received_total",
        EVENTS as f64,
    )
    .await;
    peak = peak.max(rss_bytes(sidecar.pid()));

    let buffered = metric(&text, "capsule_sidecar_trace_buffer_events").unwrap();
    let bytes = metric(&text, "capsule_sidecar_trace_buffer_bytes").unwrap();
    let dropped = metric(&text, "capsule_sidecar_trace_events_dropped_total").unwrap();
    println!(
        "baseline RSS {baseline} B, peak RSS {peak} B, buffered {buffered}, buffer bytes {bytes}, dropped {dropped}"
    );
    assert!(bytes <= MAX_BYTES as f64, "accounted bytes over the cap");
    assert!(buffered > 0.0 && buffered < EVENTS as f64);
    assert_eq!(buffered + dropped, EVENTS as f64, "every loss is counted");
    assert!(
        peak <= baseline + MAX_BYTES + SLACK_BYTES,
        "peak RSS {peak} over baseline {baseline} + cap {MAX_BYTES} + slack {SLACK_BYTES}"
    );
    let mut sidecar = sidecar;
    assert!(sidecar.child.try_wait().unwrap().is_none());
    sidecar.stop();
}
