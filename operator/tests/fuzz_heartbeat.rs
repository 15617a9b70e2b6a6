//! Fuzzing of the heartbeat parser, the one parser in the operator that reads bytes from another
//! process. proptest is the engine (it runs on the stable toolchain CI has); the committed corpus in
//! `operator/fuzz/corpus/heartbeat/` is replayed first: `ok-*` files must parse, `bad-*` files must
//! be refused. Cases per property: `PROPTEST_CASES` (default 512); a longer run is
//! `PROPTEST_CASES=200000 cargo test -p capsule-operator --test fuzz_heartbeat --release`.

use std::path::PathBuf;

use capsule_operator::relay::validate::{parse_heartbeat, MAX_NAME_BYTES};
use proptest::prelude::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/heartbeat");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    }
}

#[test]
fn the_corpus_replays_with_the_expected_outcomes() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing files");
    for (name, bytes) in corpus {
        let result = parse_heartbeat(&bytes);
        if name.starts_with("ok-") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
        } else {
            let err = result.expect_err(&name);
            assert!(err.0.len() < 400, "{name}: message unbounded");
        }
    }
}

/// Mutations of a valid body: byte flips, insertions, truncations.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, bytes)| bytes).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, kind) in edits {
                let at = if bytes.is_empty() {
                    0
                } else {
                    at % bytes.len()
                };
                match kind {
                    0 if !bytes.is_empty() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_heartbeat(&bytes);
    }

    #[test]
    fn mutated_heartbeats_never_panic_and_accepted_ones_are_in_bounds(bytes in mutated()) {
        match parse_heartbeat(&bytes) {
            Ok(hb) => {
                prop_assert!(!hb.pod.is_empty() && hb.pod.len() <= MAX_NAME_BYTES);
                prop_assert!(!hb.pool.is_empty() && hb.pool.len() <= MAX_NAME_BYTES);
                prop_assert!(hb.cpu_percent.is_finite() && hb.cpu_percent >= 0.0);
            }
            Err(e) => prop_assert!(e.0.len() < 400),
        }
    }

    #[test]
    fn names_are_accepted_exactly_within_their_bounds(pod in ".{0,300}", pool in "[a-z0-9-]{0,300}") {
        let mut body: serde_json::Value =
            serde_json::from_slice(&std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/heartbeat/ok-idle.json"),
            ).unwrap()).unwrap();
        body["pod"] = serde_json::json!(pod);
        body["pool"] = serde_json::json!(pool);
        let ok = !pod.is_empty() && pod.len() <= MAX_NAME_BYTES && !pool.is_empty() && pool.len() <= MAX_NAME_BYTES;
        let result = parse_heartbeat(body.to_string().as_bytes());
        prop_assert_eq!(result.is_ok(), ok, "{:?}", result.err());
    }
}
