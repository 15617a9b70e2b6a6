//! Property-based fuzzing (proptest, stable toolchain) of every parser in the sidecar that reads
//! bytes from another process: the trace socket's frame stream (through the real receiver loop
//! into a real buffer and counters), the worker's API replies the views decode, and the
//! `traceparent` the exporter parses.
//!
//! Each target asserts no panic, a bounded result and the right counter. `PROPTEST_CASES` sets the
//! cases per target (default 256: the file runs in a few seconds); `PROPTEST_CASES=100000` for a
//! long run. The committed corpus (`fuzz/corpus/<target>/`) is replayed by `corpus_replays`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_protocol::execute::{Checkpoint, NamespaceListing, WorkerStats};
use capsule_protocol::frame::FRAME_HEADER_BYTES;
use capsule_protocol::trace::{is_valid_traceparent, TraceEvent, TraceEventKind};
use capsule_sidecar::buffer::{Bounds, StoredEvent, TraceBuffer, MAX_ATTRIBUTES, MAX_FIELD_BYTES};
use capsule_sidecar::export::parse_traceparent;
use capsule_sidecar::metrics::{FrameRejection, Metrics, RejectionLabels};
use capsule_sidecar::receiver::{read_events, Ingest, MAX_TRACE_FRAME_BYTES};
use capsule_sidecar::redaction::{Redaction, Redactor};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const KEY: &[u8] = b"pool-secret-token";
const MAX_EVENTS: usize = 64;
const MAX_BYTES: usize = 64 * 1024;

/// Proptest's defaults (`PROPTEST_CASES`, ...) with failures saved where they are committed:
/// `proptest-regressions/fuzz.txt` of this crate, replayed first on every run.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Target `trace_stream`: bytes on the trace socket → receiver → buffer and counters.

/// What the receiver must count for a stream, computed independently of it.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    accepted: u64,
    malformed: u64,
    oversized: u64,
}

fn expected(stream: &[u8]) -> Expected {
    let mut counts = Expected::default();
    let mut rest = stream;
    while rest.len() >= FRAME_HEADER_BYTES {
        let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        rest = &rest[4..];
        if size > MAX_TRACE_FRAME_BYTES {
            counts.oversized += 1;
            if rest.len() < size {
                break;
            }
            rest = &rest[size..];
            continue;
        }
        if rest.len() < size {
            break;
        }
        match serde_json::from_slice::<TraceEvent>(&rest[..size]) {
            Ok(_) => counts.accepted += 1,
            Err(_) => counts.malformed += 1,
        }
        rest = &rest[size..];
    }
    counts
}

fn ingest(mode: Redaction) -> Ingest {
    Ingest {
        buffer: Mutex::new(TraceBuffer::new(Bounds {
            max_events: MAX_EVENTS,
            max_age: Duration::from_secs(3600),
            max_bytes: MAX_BYTES,
        })),
        redactor: Redactor::new(mode, KEY),
        metrics: Arc::new(Metrics::default()),
        spans: None,
    }
}

fn rejected(ingest: &Ingest, reason: FrameRejection) -> u64 {
    ingest
        .metrics
        .frames_rejected
        .get_or_create(&RejectionLabels { reason })
        .get()
}

/// Feeds `stream` to the receiver loop and checks its counters and the buffer's bounds.
fn check_trace_stream(stream: &[u8], mode: Redaction) -> Expected {
    let ingest = ingest(mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(read_events(stream, &ingest));
    let counts = expected(stream);
    assert_eq!(ingest.metrics.events_received.get(), counts.accepted);
    assert_eq!(
        rejected(&ingest, FrameRejection::Malformed),
        counts.malformed
    );
    assert_eq!(
        rejected(&ingest, FrameRejection::Oversized),
        counts.oversized
    );
    let buffer = ingest.buffer.lock().unwrap();
    assert!(buffer.len() <= MAX_EVENTS);
    assert!(buffer.bytes() <= MAX_BYTES);
    assert_eq!(
        buffer.len() as u64 + ingest.metrics.events_dropped.get(),
        counts.accepted,
        "every accepted event is buffered or counted as dropped"
    );
    counts
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9-]{0,16}",
        1 => prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
}

fn trace_event() -> impl Strategy<Value = TraceEvent> {
    (
        prop::sample::select(vec![
            TraceEventKind::Submit,
            TraceEventKind::OutputFlush,
            TraceEventKind::PromiseCreated,
            TraceEventKind::Result,
            TraceEventKind::Error,
        ]),
        text(600),
        proptest::option::of(text(600)),
        text(64),
        proptest::option::of(any::<u64>()),
        proptest::option::of(text(200)),
        prop::collection::btree_map(
            prop_oneof!["meta\\.[a-z]{0,8}", text(300)],
            text(600),
            0..16,
        ),
    )
        .prop_map(
            |(kind, execution_id, session, timestamp, duration_ms, traceparent, attributes)| {
                TraceEvent {
                    kind,
                    execution_id,
                    session,
                    timestamp,
                    duration_ms,
                    traceparent,
                    attributes,
                }
            },
        )
}

/// One frame of a stream: an event, bytes that are not one, or a header past the bound.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let with_header = |body: Vec<u8>| {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend(body);
        bytes
    };
    prop_oneof![
        4 => trace_event().prop_map(move |e| with_header(serde_json::to_vec(&e).unwrap())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(with_header),
        1 => (trace_event(), any::<usize>()).prop_map(move |(e, cut)| {
            let mut json = serde_json::to_vec(&e).unwrap();
            json.truncate(cut % (json.len() + 1));
            with_header(json)
        }),
        1 => (1usize..256).prop_map(|extra| {
            let size = MAX_TRACE_FRAME_BYTES + extra;
            let mut bytes = (size as u32).to_be_bytes().to_vec();
            bytes.resize(FRAME_HEADER_BYTES + size, b'x');
            bytes
        }),
        1 => any::<u32>().prop_map(|size| size.to_be_bytes().to_vec()),
    ]
}

fn redaction() -> impl Strategy<Value = Redaction> {
    prop::sample::select(vec![Redaction::None, Redaction::Hash, Redaction::Drop])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn trace_stream(
        frames in prop::collection::vec(frame(), 0..24),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        mode in redaction(),
    ) {
        let mut stream: Vec<u8> = frames.concat();
        for (at, byte) in flips {
            if !stream.is_empty() {
                let at = at % stream.len();
                stream[at] = byte;
            }
        }
        check_trace_stream(&stream, mode);
    }

    #[test]
    fn trace_stream_of_arbitrary_bytes(
        stream in prop::collection::vec(any::<u8>(), 0..1024),
        mode in redaction(),
    ) {
        check_trace_stream(&stream, mode);
    }

    /// Whatever a (misbehaving) writer sends, a stored event is redacted and bounded.
    #[test]
    fn stored_events_are_bounded_and_redacted(event in trace_event(), mode in redaction()) {
        let raw_session = event.session.clone();
        let stored = StoredEvent::from_wire(event, &Redactor::new(mode, KEY));
        prop_assert!(stored.execution_id.len() <= MAX_FIELD_BYTES);
        prop_assert!(stored.timestamp.len() <= MAX_FIELD_BYTES);
        prop_assert!(stored.traceparent.as_ref().is_none_or(|t| t.len() <= MAX_FIELD_BYTES));
        prop_assert!(stored.attributes.len() <= MAX_ATTRIBUTES);
        for (key, value) in &stored.attributes {
            prop_assert!(key.len() <= MAX_FIELD_BYTES && value.len() <= MAX_FIELD_BYTES);
        }
        prop_assert!(stored.accounted_bytes() < 8 * 1024);
        match mode {
            Redaction::None => {}
            Redaction::Hash => {
                prop_assert!(stored.execution_id.starts_with("hmac:"));
                prop_assert!(stored.session.as_ref().is_none_or(|s| s.starts_with("hmac:")));
                prop_assert!(stored
                    .attributes
                    .iter()
                    .filter(|(k, _)| k.starts_with("meta."))
                    .all(|(_, v)| v.starts_with("hmac:")));
            }
            Redaction::Drop => {
                prop_assert!(stored.session.is_none(), "session {raw_session:?} kept");
                prop_assert!(stored.attributes.iter().all(|(k, _)| !k.starts_with("meta.")));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target `worker_replies`: the worker's `/v1/stats`, `/v1/checkpoint` and `/v1/namespace` bodies.

fn check_worker_reply(body: &[u8]) -> bool {
    let stats = serde_json::from_slice::<WorkerStats>(body).is_ok();
    let checkpoint = serde_json::from_slice::<Checkpoint>(body).is_ok();
    let listing = serde_json::from_slice::<NamespaceListing>(body).is_ok();
    stats || checkpoint || listing
}

fn valid_worker_replies() -> Vec<Vec<u8>> {
    [
        "valid-namespace-listing",
        "valid-checkpoint",
        "valid-namespace-listing-empty",
    ]
    .iter()
    .map(|name| std::fs::read(corpus_dir("worker_replies").join(name)).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn worker_replies(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            (prop::sample::select(valid_worker_replies()),
             prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
             any::<usize>())
                .prop_map(|(mut bytes, edits, cut)| {
                    for (at, byte) in edits {
                        let at = at % bytes.len();
                        bytes[at] = byte;
                    }
                    if cut % 3 == 0 {
                        bytes.truncate(cut % (bytes.len() + 1));
                    }
                    bytes
                }),
        ]
    ) {
        check_worker_reply(&body);
    }
}

// ---------------------------------------------------------------------------------------------
// Target `traceparent`: the header value the exporter turns into a remote parent.

fn check_traceparent(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let text = text.trim_end_matches('\n');
    let parsed = parse_traceparent(text);
    assert_eq!(parsed.is_some(), is_valid_traceparent(text));
    if let Some((trace_id, span_id, _)) = parsed {
        let mut parts = text.split('-').skip(1);
        assert_eq!(
            format!("{trace_id}"),
            parts.next().unwrap().to_ascii_lowercase()
        );
        assert_eq!(
            format!("{span_id}"),
            parts.next().unwrap().to_ascii_lowercase()
        );
    }
    parsed.is_some()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn traceparent_arbitrary(text in ".{0,80}") {
        check_traceparent(text.as_bytes());
    }

    #[test]
    fn traceparent_well_formed(
        version in "[0-9a-f]{2}",
        trace in "[0-9a-fA-F]{32}",
        span in "[0-9a-fA-F]{16}",
        flags in "[0-9a-f]{2}",
    ) {
        let text = format!("{version}-{trace}-{span}-{flags}");
        let nonzero = trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0');
        prop_assert_eq!(check_traceparent(text.as_bytes()), nonzero);
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus replay.

fn corpus_dir(target: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, check: &dyn Fn(&[u8]) -> bool) {
    let dir = corpus_dir(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let accepted = check(&std::fs::read(&path).unwrap());
        assert_eq!(
            accepted,
            name.starts_with("valid-"),
            "{target}/{name}: accepted = {accepted}"
        );
        seeds += 1;
    }
    assert!(seeds >= 3, "{target}: only {seeds} seeds");
}

#[test]
fn corpus_replays() {
    // A stream is accepted when every frame in it is a valid event and nothing is left over.
    replay("trace_stream", &|stream| {
        let mut accepted = true;
        for mode in [Redaction::None, Redaction::Hash, Redaction::Drop] {
            let counts = check_trace_stream(stream, mode);
            accepted = counts.malformed == 0 && counts.oversized == 0;
        }
        accepted
    });
    replay("worker_replies", &check_worker_reply);
    replay("traceparent", &check_traceparent);
}
