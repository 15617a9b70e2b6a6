//! Property-based fuzzing (proptest, stable toolchain) of every parser in the worker that reads
//! bytes from another process: the frame reader (interpreter and sidecar streams), the driver's
//! frames, trace events, the execute API's JSON bodies and the operator's heartbeat replies.
//!
//! Each target feeds arbitrary bytes and mutated valid inputs and asserts: no panic, a bounded
//! result, and the documented error. `PROPTEST_CASES` sets the cases per target (proptest's
//! default, 256, keeps the whole file to a few seconds); e.g. `PROPTEST_CASES=100000` for a long
//! run. The committed corpus (`fuzz/corpus/<target>/`) is replayed by `corpus_replays`; a file
//! named `valid-*` must be accepted and any other name must be refused without a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capsule_protocol::execute::{
    ExecuteRequest, InputReply, NamespaceCounts, NamespaceEntry, PromiseReject, PromiseResolve,
    Transaction, MAX_METADATA_ENTRIES, MAX_NAMESPACE_ENTRIES, MAX_NAMESPACE_NAME_BYTES,
    MAX_NAMESPACE_TYPE_BYTES,
};
use capsule_protocol::frame::{self, FrameError, FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use capsule_protocol::heartbeat::{HeartbeatReply, SessionBinding};
use capsule_protocol::trace::{
    truncate, TraceEvent, TraceEventKind, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES, MAX_ID_BYTES,
};
use capsule_worker::api::{bounded_listing, decode_body, decode_execute_request, ApiError};
use capsule_worker::interpreter::{decode_driver_frame, CheckpointFrame, DriverEvent};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

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
// Input generation shared by the targets.

/// One edit applied to a valid input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
    DuplicateTail { from: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|from| Mutation::DuplicateTail { from }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        let pos = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
        match mutation {
            Mutation::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Mutation::SetByte { at, byte } if len > 0 => bytes[at % len] = *byte,
            Mutation::Insert { at, bytes: extra } => {
                let at = pos(*at);
                bytes.splice(at..at, extra.iter().copied());
            }
            Mutation::Remove { at, len: n } if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Truncate { at } => bytes.truncate(pos(*at)),
            Mutation::DuplicateTail { from } => {
                let tail = bytes[pos(*from).min(len)..].to_vec();
                bytes.extend(tail);
            }
            _ => {}
        }
    }
    bytes
}

/// Mutated versions of `valid` inputs, plus plain arbitrary bytes.
fn mutated_or_arbitrary(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        3 => (prop::sample::select(valid), prop::collection::vec(mutation(), 0..6))
            .prop_map(|(bytes, mutations)| mutate(bytes, &mutations)),
    ]
}

/// JSON with values of every type, including deep nesting and odd keys, for body fuzzing.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("code".to_owned()),
                    Just("metadata".to_owned()),
                    Just("timeoutMs".to_owned()),
                    Just("inputId".to_owned()),
                    Just("value".to_owned()),
                    Just("reason".to_owned()),
                    Just("session".to_owned()),
                    Just("instructions".to_owned()),
                    ".{0,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Target `frames`: the length-prefixed frame reader (sync and async must agree).

#[derive(Debug, PartialEq)]
enum FrameOutcome {
    Body(usize),
    Oversized(usize),
    Malformed,
    Closed,
    Io,
}

fn outcome(result: Result<Vec<u8>, FrameError>) -> FrameOutcome {
    match result {
        Ok(body) => FrameOutcome::Body(body.len()),
        Err(FrameError::Oversized { size, max }) => {
            assert_eq!(max, MAX_FRAME_BYTES);
            assert!(size > MAX_FRAME_BYTES, "oversized only above the bound");
            FrameOutcome::Oversized(size)
        }
        Err(FrameError::Malformed(_)) => FrameOutcome::Malformed,
        Err(FrameError::Closed) => FrameOutcome::Closed,
        Err(FrameError::Io(_)) => FrameOutcome::Io,
    }
}

/// Reads frames until the stream ends; checks bounds and termination on the way.
fn read_all_sync(stream: &[u8]) -> Vec<FrameOutcome> {
    let mut reader = stream;
    let mut outcomes = Vec::new();
    // Every successful read consumes at least the 4-byte header.
    for _ in 0..=stream.len() / FRAME_HEADER_BYTES + 1 {
        let result = outcome(frame::read_frame_bytes(&mut reader));
        if let FrameOutcome::Body(len) = result {
            assert!(len <= MAX_FRAME_BYTES);
        }
        let done = matches!(result, FrameOutcome::Closed | FrameOutcome::Io);
        outcomes.push(result);
        if done {
            return outcomes;
        }
    }
    panic!(
        "the reader did not reach the end of a {} byte stream",
        stream.len()
    );
}

fn read_all_async(stream: &[u8]) -> Vec<FrameOutcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = stream;
        let mut outcomes = Vec::new();
        for _ in 0..=stream.len() / FRAME_HEADER_BYTES + 1 {
            let result = outcome(frame::read_frame_bytes_async(&mut reader).await);
            let done = matches!(result, FrameOutcome::Closed | FrameOutcome::Io);
            outcomes.push(result);
            if done {
                return outcomes;
            }
        }
        panic!("the async reader did not reach the end");
    })
}

fn check_frames(stream: &[u8]) {
    let sync = read_all_sync(stream);
    assert_eq!(
        sync,
        read_all_async(stream),
        "sync and async readers disagree"
    );
    // Whatever the bytes, decoding a body as JSON is an error or a value, never a panic.
    let mut reader = stream;
    while let Ok(body) = frame::read_frame_bytes(&mut reader) {
        let _ = frame::decode::<serde_json::Value>(&body);
    }
}

fn valid_frame_streams() -> Vec<Vec<u8>> {
    let mut one = frame::encode(&serde_json::json!({"type": "ping", "n": 1})).unwrap();
    let two = frame::encode(&"text").unwrap();
    let mut oversized_header = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    oversized_header.extend(b"   ");
    let empty = 0u32.to_be_bytes().to_vec();
    let mut both = one.clone();
    both.extend(&two);
    one.extend(&empty);
    vec![one, two, oversized_header, empty, both]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frames(stream in mutated_or_arbitrary(valid_frame_streams())) {
        check_frames(&stream);
    }

    /// Any sequence of values written as frames reads back identically, whatever the split.
    #[test]
    fn frames_round_trip(values in prop::collection::vec(json_value(), 0..6)) {
        let mut stream = Vec::new();
        for value in &values {
            frame::write_frame(&mut stream, value).unwrap();
        }
        // Bytes, not values: serde_json's float parsing may differ from the printed form by an ulp.
        let mut reader = stream.as_slice();
        for value in &values {
            let body = frame::read_frame_bytes(&mut reader).unwrap();
            prop_assert_eq!(body, serde_json::to_vec(value).unwrap());
        }
        prop_assert!(matches!(frame::read_frame_bytes(&mut reader), Err(FrameError::Closed)));
    }
}

#[test]
fn a_header_alone_does_not_reserve_the_maximum_frame() {
    // A peer that announces 16 MiB and sends nothing must not make the reader hold 16 MiB.
    let header = (MAX_FRAME_BYTES as u32).to_be_bytes();
    assert!(matches!(
        frame::read_frame_bytes(&mut &header[..]),
        Err(FrameError::Io(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Target `driver_frames`: frames from the Python driver (output chunks and messages).

/// The driver's escaping of output text (worker/driver.py): byte replaces only.
fn driver_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('\r', "\\r")
}

fn output_frame(stream: &str, text: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"output","stream":"{stream}","text":"{}"}}"#,
        driver_escape(text)
    )
    .into_bytes()
}

fn check_driver_frame(body: &[u8]) -> bool {
    match decode_driver_frame(body) {
        Ok(DriverEvent::Output { text, .. }) => {
            // Clients get this text as is: it must always be one valid JSON string.
            let decoded: Result<String, _> = serde_json::from_str(text.get());
            assert!(
                decoded.is_ok(),
                "output text passed on is not a JSON string"
            );
            assert!(text.get().len() <= body.len() * 6 + 2, "repair is bounded");
            true
        }
        Ok(DriverEvent::Message(_)) => true,
        Ok(DriverEvent::Exited) => panic!("a frame body never means exit"),
        Ok(DriverEvent::FrameLost { .. }) => panic!("decoding reports a bad body as an error"),
        Err(error) => {
            assert!(
                matches!(error, FrameError::Malformed(_)),
                "bad driver bytes are Malformed"
            );
            assert!(error.is_recoverable());
            false
        }
    }
}

fn valid_driver_frames() -> Vec<Vec<u8>> {
    [
        r#"{"type":"ready","pythonVersion":"3.13.1"}"#,
        r#"{"type":"inputRequest","id":"e1","inputId":"i1","prompt":"name? "}"#,
        r#"{"type":"promiseCreate","id":"e1","promiseId":"p1","timeoutMs":1000}"#,
        r#"{"type":"result","id":"e1","repr":"2","mode":"plain","namespaceSize":3}"#,
        r#"{"type":"error","id":"e1","ename":"ValueError","evalue":"x","traceback":["a"],"mode":"plain","interrupted":false,"namespaceSize":1}"#,
        r#"{"type":"protected","ok":true}"#,
        r#"{"type":"checkpoint","requestId":7,"names":1,"functions":0,"classes":0,"modules":1,"estimatedBytes":10,"unpicklable":0}"#,
        r#"{"type":"driverError","message":"boom"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        output_frame("stdout", "hello \"world\"\n"),
        output_frame("stderr", "tab\tand\\slash"),
    ])
    .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn driver_frames(body in mutated_or_arbitrary(valid_driver_frames())) {
        check_driver_frame(&body);
    }

    /// Any text the driver sends (including control characters and invalid UTF-8 bytes) reaches
    /// clients as a valid JSON string equal to the text, repaired where it was not UTF-8.
    #[test]
    fn driver_output_text_survives(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        let mut body = br#"{"type":"output","stream":"stdout","text":""#.to_vec();
        body.extend(
            raw.iter()
                .flat_map(|&b| match b {
                    b'\\' => b"\\\\".to_vec(),
                    b'"' => b"\\\"".to_vec(),
                    b'\n' => b"\\n".to_vec(),
                    b'\t' => b"\\t".to_vec(),
                    b'\r' => b"\\r".to_vec(),
                    other => vec![other],
                }),
        );
        body.extend(b"\"}");
        match decode_driver_frame(&body) {
            Ok(DriverEvent::Output { text, .. }) => {
                let decoded: String = serde_json::from_str(text.get()).unwrap();
                prop_assert_eq!(decoded, lossy);
            }
            other => prop_assert!(false, "not an output chunk: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// A namespace listing from the driver is bounded by the worker whatever the driver sent.
    #[test]
    fn namespace_listings_are_bounded(
        entries in prop::collection::vec((".{0,200}", ".{0,100}", any::<u64>()), 0..1200),
        names in any::<u64>(),
    ) {
        let frame = CheckpointFrame {
            counts: NamespaceCounts {
                names,
                ..Default::default()
            },
            entries: entries
                .iter()
                .map(|(name, type_name, size)| NamespaceEntry {
                    name: name.clone(),
                    type_name: type_name.clone(),
                    size_bytes: *size,
                })
                .collect(),
            truncated: false,
        };
        let listing = bounded_listing(frame);
        prop_assert!(listing.entries.len() <= MAX_NAMESPACE_ENTRIES);
        prop_assert_eq!(listing.truncated, entries.len() > MAX_NAMESPACE_ENTRIES || (listing.entries.len() as u64) < names);
        for (entry, (name, type_name, _)) in listing.entries.iter().zip(&entries) {
            prop_assert!(entry.name.len() <= MAX_NAMESPACE_NAME_BYTES && name.starts_with(&entry.name));
            prop_assert!(entry.type_name.len() <= MAX_NAMESPACE_TYPE_BYTES && type_name.starts_with(&entry.type_name));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target `trace_events`: the worker → sidecar event contract and its source-side bounds.

fn check_trace_event(body: &[u8]) -> bool {
    match frame::decode::<TraceEvent>(body) {
        Ok(event) => {
            // What decodes re-encodes to something that decodes to the same event.
            let again: TraceEvent =
                serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
            assert_eq!(again, event);
            true
        }
        Err(error) => {
            assert!(matches!(error, FrameError::Malformed(_)));
            false
        }
    }
}

fn valid_trace_events() -> Vec<Vec<u8>> {
    let event = TraceEvent::new(TraceEventKind::Submit, "e1", Some("s1"))
        .with_duration_ms(3)
        .with_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .with_attribute("codeBytes", 12)
        .with_attribute("meta.user", "alice");
    vec![
        serde_json::to_vec(&event).unwrap(),
        serde_json::to_vec(&TraceEvent::new(TraceEventKind::Result, "e1", None)).unwrap(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn trace_events(body in mutated_or_arbitrary(valid_trace_events())) {
        check_trace_event(&body);
    }

    /// Whatever the caller passes, an event built by the worker stays within its bounds.
    #[test]
    fn trace_events_are_bounded_at_the_source(
        execution in ".{0,300}",
        session in proptest::option::of(".{0,300}"),
        traceparent in proptest::option::of(".{0,300}"),
        attributes in prop::collection::vec((".{0,100}", ".{0,400}"), 0..20),
    ) {
        let mut event = TraceEvent::new(TraceEventKind::Submit, &execution, session.as_deref())
            .with_traceparent(traceparent.as_deref());
        for (key, value) in &attributes {
            event = event.with_attribute(key, value);
        }
        prop_assert!(event.execution_id.len() <= MAX_ID_BYTES);
        prop_assert!(event.session.as_ref().is_none_or(|s| s.len() <= MAX_ID_BYTES));
        prop_assert!(event.traceparent.as_ref().is_none_or(|s| s.len() <= MAX_ID_BYTES));
        prop_assert!(event.attributes.len() <= MAX_ATTRIBUTES);
        for (key, value) in &event.attributes {
            prop_assert!(key.len() <= MAX_ATTRIBUTE_KEY_BYTES);
            prop_assert!(value.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        }
        // Text is at most 3 x 128 + 8 x (64 + 256) bytes; JSON escapes each byte in 6 at worst.
        let encoded = frame::encode(&event).unwrap();
        prop_assert!(encoded.len() < 20 * 1024, "{} bytes", encoded.len());
    }

    #[test]
    fn truncate_keeps_a_prefix_on_a_char_boundary(text in ".{0,64}", max in 0usize..80) {
        let cut = truncate(&text, max);
        prop_assert!(cut.len() <= max);
        prop_assert!(text.starts_with(&cut));
    }
}

// ---------------------------------------------------------------------------------------------
// Target `execute_requests`: `POST /v1/executions` bodies.

fn check_execute_request(body: &[u8]) -> bool {
    match decode_execute_request(body) {
        Ok(request) => {
            assert!(request.metadata.len() <= MAX_METADATA_ENTRIES);
            true
        }
        Err(error) => {
            assert_api_error(&error, &["malformedBody", "tooMuchMetadata"]);
            false
        }
    }
}

fn assert_api_error(error: &ApiError, codes: &[&str]) {
    assert_eq!(error.status().as_u16(), 400);
    assert!(
        codes.contains(&error.body().code.as_str()),
        "unexpected code {}",
        error.body().code
    );
    assert!(
        error.body().message.len() < 4096,
        "error messages are bounded"
    );
}

fn valid_execute_requests() -> Vec<Vec<u8>> {
    let metadata: BTreeMap<String, String> = (0..MAX_METADATA_ENTRIES)
        .map(|n| (format!("k{n}"), "v".to_owned()))
        .collect();
    vec![
        br#"{"code":"1 + 1"}"#.to_vec(),
        serde_json::to_vec(&ExecuteRequest {
            code: "print('x')".into(),
            timeout_ms: Some(1000),
            metadata,
            transaction: Some(Transaction::RollbackOnError),
        })
        .unwrap(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn execute_requests(body in mutated_or_arbitrary(valid_execute_requests())) {
        check_execute_request(&body);
    }

    #[test]
    fn execute_requests_from_json(value in json_value()) {
        check_execute_request(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn execute_metadata_bound_is_enforced(entries in 0usize..64) {
        let metadata: BTreeMap<String, String> =
            (0..entries).map(|n| (format!("k{n}"), String::new())).collect();
        let body = serde_json::to_vec(&serde_json::json!({"code": "", "metadata": metadata})).unwrap();
        match decode_execute_request(&body) {
            Ok(_) => prop_assert!(entries <= MAX_METADATA_ENTRIES),
            Err(error) => {
                prop_assert!(entries > MAX_METADATA_ENTRIES);
                prop_assert_eq!(error.body().code.as_str(), "tooMuchMetadata");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target `session_bodies`: input replies, promise resolve / reject, session bindings.

fn check_session_body(body: &[u8]) -> bool {
    let results = [
        decode_body::<InputReply>(body).map(|_| ()),
        decode_body::<PromiseResolve>(body).map(|_| ()),
        decode_body::<PromiseReject>(body).map(|_| ()),
        decode_body::<SessionBinding>(body).map(|_| ()),
    ];
    let mut any = false;
    for result in results {
        match result {
            Ok(()) => any = true,
            Err(error) => assert_api_error(&error, &["malformedBody"]),
        }
    }
    any
}

fn valid_session_bodies() -> Vec<Vec<u8>> {
    [
        r#"{"inputId":"i1","value":"yes"}"#,
        r#"{"value":{"a":[1,2,{"b":null}]}}"#,
        r#"{"reason":"gave up"}"#,
        r#"{"session":"s1","namespace":"ns","tokenSha256":"ab"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_bodies(body in mutated_or_arbitrary(valid_session_bodies())) {
        check_session_body(&body);
    }

    #[test]
    fn session_bodies_from_json(value in json_value()) {
        check_session_body(&serde_json::to_vec(&value).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Target `heartbeat_replies`: the operator's answer to a heartbeat.

fn check_heartbeat_reply(body: &[u8]) -> bool {
    serde_json::from_slice::<HeartbeatReply>(body).is_ok()
}

fn valid_heartbeat_replies() -> Vec<Vec<u8>> {
    [
        r#"{}"#,
        r#"{"instructions":["reset","drain"],"session":null}"#, // an earlier operator's reply
        r#"{"session":{"session":"s1","namespace":"ns","tokenSha256":"ab"}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn heartbeat_replies(body in mutated_or_arbitrary(valid_heartbeat_replies())) {
        check_heartbeat_reply(&body);
    }

    #[test]
    fn heartbeat_replies_from_json(value in json_value()) {
        check_heartbeat_reply(&serde_json::to_vec(&value).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus replay: the committed seeds (valid, truncated, oversized, malformed, regressions).

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `check` on every seed of `target`; `check` says whether the input was accepted.
fn replay(target: &str, check: fn(&[u8]) -> bool) -> usize {
    let dir = corpus_dir(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let accepted = check(&bytes);
        assert_eq!(
            accepted,
            name.starts_with("valid-"),
            "{target}/{name}: accepted = {accepted}"
        );
        seeds += 1;
    }
    assert!(seeds >= 3, "{target}: the corpus holds only {seeds} seeds");
    seeds
}

#[test]
fn corpus_replays() {
    /// Accepted: every frame whole and valid JSON, then a clean end.
    fn frames_accept(stream: &[u8]) -> bool {
        check_frames(stream);
        let mut reader = stream;
        loop {
            match frame::read_frame::<_, serde_json::Value>(&mut reader) {
                Ok(_) => continue,
                Err(FrameError::Closed) => return true,
                Err(_) => return false,
            }
        }
    }
    replay("frames", frames_accept);
    replay("driver_frames", check_driver_frame);
    replay("trace_events", check_trace_event);
    replay("execute_requests", check_execute_request);
    replay("session_bodies", check_session_body);
    replay("heartbeat_replies", check_heartbeat_reply);
}
