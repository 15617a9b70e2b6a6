//! Checkpoints that restore (#18) on the real worker and interpreter over HTTP: round trips of
//! what sessions hold, names that cannot be saved, a restore into a fresh interpreter, the errors
//! for corrupt, foreign and oversized files, keep-N, a second worker restoring what the first
//! wrote (the migration path), and the automatic checkpoint policy.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use capsule_protocol::admin::WorkerClient;
use capsule_protocol::auth::checkpoint_key;
use capsule_protocol::checkpoint::{CheckpointCreated, CheckpointList, CheckpointRestored};
use capsule_protocol::execute::ErrorBody;
use capsule_protocol::heartbeat::SessionBinding;
use common::{result_repr, sha256_hex, Worker, SESSION_TOKEN, WORKER_TOKEN};

fn binding(uid: &str, pool_key: &[u8]) -> SessionBinding {
    SessionBinding {
        session: "session-a".into(),
        namespace: "tests".into(),
        token_sha256: sha256_hex(SESSION_TOKEN),
        session_uid: Some(uid.into()),
        checkpoint_key: Some(checkpoint_key(pool_key, "tests", "session-a", uid)),
    }
}

async fn bind(worker: &Worker, binding: &SessionBinding) {
    let response = worker
        .client
        .put(worker.url("/v1/session"))
        .bearer_auth(WORKER_TOKEN)
        .json(binding)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn start(dir: &Path, extra: &[(&str, &str)]) -> Worker {
    let dir = dir.to_str().unwrap().to_owned();
    let mut envs = vec![("CAPSULE_CHECKPOINT_DIR", dir.as_str())];
    envs.extend_from_slice(extra);
    Worker::start(&envs).await
}

async fn create(worker: &Worker) -> reqwest::Response {
    worker.post("/v1/checkpoints").send().await.unwrap()
}

async fn created(worker: &Worker) -> CheckpointCreated {
    let response = create(worker).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn listed(worker: &Worker) -> CheckpointList {
    let response = worker
        .client
        .get(worker.url("/v1/checkpoints"))
        .bearer_auth(SESSION_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn restore(worker: &Worker, id: &str) -> reqwest::Response {
    worker
        .post(&format!("/v1/checkpoints/{id}/restore"))
        .send()
        .await
        .unwrap()
}

async fn error(response: reqwest::Response, status: u16) -> ErrorBody {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

async fn eval(worker: &Worker, code: &str) -> String {
    result_repr(&worker.run(code).await).unwrap_or_default()
}

/// Every sealed data file under the store root.
fn data_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "ckpt") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

const SESSION_STATE: &str = r#"
import json, os.path as osp, threading, socket, builtins, time
def square(x):
    return x * x
def uses_later():
    return later_name
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm2(self):
        return square(self.x) + square(self.y)
p = Point(3, 4)
def make_counter(start):
    count = [start]
    def step():
        count[0] += 1
        return count[0]
    return step
counter = make_counter(10)
counter()
double = lambda v: 2 * v
big = bytes(range(256)) * (50 * 1024 * 1024 // 256)
data = {"k": [1, 2, 3]}
lock = threading.Lock()
gen = (i for i in range(3))
sock = socket.socket()
stop = threading.Event()
threading.Thread(target=stop.wait, name="from-before", daemon=True).start()
builtins.abs = lambda _: 'patched'
"#;

#[tokio::test]
async fn round_trip_into_a_fresh_interpreter_lists_what_could_not_be_saved() {
    let store = tempfile::tempdir().unwrap();
    let worker = start(store.path(), &[]).await;
    assert_eq!(
        eval(&worker, "import cloudpickle; 'cloudpickle'").await,
        "'cloudpickle'",
        "the test interpreter needs cloudpickle (pip install cloudpickle, or Debian's python3-cloudpickle)"
    );
    worker.run(SESSION_STATE).await;
    assert_eq!(eval(&worker, "abs(-2)").await, "'patched'");
    let checkpoint = created(&worker).await;
    for name in [
        "square", "Point", "p", "counter", "double", "big", "data", "json", "osp",
    ] {
        assert!(
            checkpoint.names.iter().any(|n| n == name),
            "{name} saved: {checkpoint:?}"
        );
    }
    let skipped: Vec<&str> = checkpoint.skipped.iter().map(|s| s.name.as_str()).collect();
    for name in ["lock", "gen", "sock"] {
        assert!(skipped.contains(&name), "{name} skipped: {skipped:?}");
    }
    assert_eq!(checkpoint.skipped_total, checkpoint.skipped.len() as u64);
    assert!(checkpoint.raw_bytes > 50 * 1024 * 1024, "{checkpoint:?}");
    assert!(
        checkpoint.size_bytes < checkpoint.raw_bytes / 10,
        "compressed: {checkpoint:?}"
    );

    // Changed after the checkpoint: the restore brings back the saved state only.
    worker.run("data = 'changed'\nbig = None").await;
    let restored: CheckpointRestored = restore(&worker, "latest").await.json().await.unwrap();
    assert_eq!(restored.id, checkpoint.id);
    let checks = [
        ("square(7)", "49"),
        ("p.norm2()", "25"),
        ("isinstance(p, Point)", "True"),
        ("counter()", "12"),
        ("double(21)", "42"),
        ("type(big).__name__, len(big)", "('bytes', 52428800)"),
        ("big[:3] == bytes(range(3))", "True"),
        ("data", "{'k': [1, 2, 3]}"),
        ("json.dumps([1])", "'[1]'"),
        ("osp.join('a', 'b')", "'a/b'"),
        (
            "'lock' in globals() or 'gen' in globals() or 'sock' in globals()",
            "False",
        ),
        // Nothing of the old interpreter: its thread and its patched builtin are gone.
        (
            "[t.name for t in threading.enumerate() if t.name == 'from-before']",
            "[]",
        ),
        ("abs(-2)", "2"),
        // A restored function sees the namespace, names defined after the restore included.
        ("later_name = 5\nuses_later()", "5"),
    ];
    for (code, expected) in checks {
        assert_eq!(eval(&worker, code).await, expected, "{code}");
    }
    let stats = worker.stats().await;
    assert_eq!(
        (stats.checkpoints_created, stats.checkpoints_restored),
        (1, 1)
    );
    assert_eq!(stats.last_checkpoint.unwrap().id, checkpoint.id);
}

#[tokio::test]
async fn corrupt_truncated_foreign_and_oversized_checkpoints_give_clear_errors() {
    let store = tempfile::tempdir().unwrap();
    let max = 1024 * 1024;
    let worker = start(
        store.path(),
        &[("CAPSULE_CHECKPOINT_MAX_BYTES", &max.to_string())],
    )
    .await;
    bind(&worker, &binding("uid-1", b"pool")).await;
    worker.run("x = 1").await;
    let good = created(&worker).await;
    let file = data_files(store.path()).pop().unwrap();
    let original = std::fs::read(&file).unwrap();

    let not_found = error(restore(&worker, "0000000000000-nothere").await, 404).await;
    assert_eq!(not_found.code, "checkpointNotFound");

    std::fs::write(&file, b"PK\x03\x04 not a checkpoint at all").unwrap();
    let corrupt = error(restore(&worker, &good.id).await, 422).await;
    assert_eq!(corrupt.code, "checkpointCorrupt");
    assert!(corrupt.message.contains("bad magic"), "{}", corrupt.message);

    std::fs::write(&file, &original[..original.len() - 10]).unwrap();
    let truncated = error(restore(&worker, &good.id).await, 422).await;
    assert!(
        truncated.message.contains("failed authentication"),
        "{}",
        truncated.message
    );

    // Sealed for another session (another uid, so another key), planted under this one's id.
    bind(&worker, &binding("uid-2", b"pool")).await;
    let foreign = created(&worker).await;
    let foreign_file = data_files(store.path())
        .into_iter()
        .find(|f| f.to_string_lossy().contains("uid-2"))
        .unwrap();
    bind(&worker, &binding("uid-1", b"pool")).await;
    std::fs::copy(&foreign_file, &file).unwrap();
    let swapped = error(restore(&worker, &good.id).await, 422).await;
    assert!(
        swapped.message.contains("failed authentication"),
        "{}",
        swapped.message
    );
    assert_ne!(foreign.id, good.id);

    // The namespace survived every refused restore (they fail before the swap).
    assert_eq!(eval(&worker, "x").await, "1");

    // Random bytes do not compress: just over the bound once sealed.
    worker
        .run(&format!("import os\nblob = os.urandom({max})"))
        .await;
    let large = error(create(&worker).await, 413).await;
    assert_eq!(large.code, "checkpointTooLarge");
    assert!(
        large.message.contains(&max.to_string())
            && large.message.contains("spec.checkpoints.maxBytes"),
        "{}",
        large.message
    );
    let stats = worker.stats().await;
    assert_eq!(stats.checkpoint_failures, 5, "{stats:?}");

    let disabled = Worker::start(&[]).await;
    assert_eq!(
        error(create(&disabled).await, 503).await.code,
        "checkpointsDisabled"
    );
}

#[tokio::test]
async fn keeps_the_newest_n_and_refuses_while_code_runs() {
    let store = tempfile::tempdir().unwrap();
    let worker = start(store.path(), &[("CAPSULE_CHECKPOINT_KEEP", "2")]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        worker.run(&format!("n = {i}")).await;
        ids.push(created(&worker).await.id);
    }
    let list = listed(&worker).await;
    let listed: Vec<&str> = list.checkpoints.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(
        data_files(store.path()).len(),
        2,
        "the oldest file is deleted"
    );
    assert_eq!(
        error(restore(&worker, &ids[0]).await, 404).await.code,
        "checkpointNotFound"
    );
    restore(&worker, &ids[1]).await.error_for_status().unwrap();
    assert_eq!(eval(&worker, "n").await, "1");

    let mut running = worker
        .stream(&capsule_protocol::execute::ExecuteRequest {
            code: "import time\ntime.sleep(3)".into(),
            ..Default::default()
        })
        .await;
    running.expect_next().await;
    assert_eq!(
        error(create(&worker).await, 409).await.code,
        "executionRunning"
    );
    running.collect().await;
}

#[tokio::test]
async fn a_second_worker_given_the_same_key_restores_what_the_first_wrote() {
    let store = tempfile::tempdir().unwrap();
    let session = binding("uid-migrating", b"the-pool-key");
    let first = start(store.path(), &[]).await;
    bind(&first, &session).await;
    first
        .run("def greet(who):\n    return 'hello ' + who\nstate = {'step': 7}")
        .await;
    let checkpoint = created(&first).await;
    drop(first);

    let second = start(store.path(), &[]).await;
    bind(&second, &session).await;
    // The operator's call, with the worker credential.
    let operator = WorkerClient::new(reqwest::Client::new(), second.base.clone(), WORKER_TOKEN);
    let restored = operator.restore_checkpoint("latest").await.unwrap();
    assert_eq!(restored.id, checkpoint.id);
    assert_eq!(
        eval(&second, "greet('b'), state['step']").await,
        "('hello b', 7)"
    );

    // Another pool key (so another checkpoint key) cannot open it.
    bind(&second, &binding("uid-migrating", b"another-pool")).await;
    let refused = operator
        .restore_checkpoint(&checkpoint.id)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(422));
}

async fn created_count_reaches(worker: &Worker, count: u64) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while worker.stats().await.checkpoints_created < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} checkpoints in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn automatic_checkpoints_after_a_slow_execution_and_when_idle() {
    let store = tempfile::tempdir().unwrap();
    let worker = start(
        store.path(),
        &[
            ("CAPSULE_CHECKPOINT_AFTER_MS", "500"),
            ("CAPSULE_CHECKPOINT_IDLE_SECONDS", "2"),
        ],
    )
    .await;
    worker.run("import time\ntime.sleep(0.6)\nslow = 1").await;
    // Taken right after the final event went out, so it is awaited, not raced.
    created_count_reaches(&worker, 1).await;
    worker.run("fast = 2").await;
    assert_eq!(
        worker.stats().await.checkpoints_created,
        1,
        "not after a fast one"
    );
    created_count_reaches(&worker, 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        worker.stats().await.checkpoints_created,
        2,
        "nothing changed since"
    );
    worker.run("slow = None\nfast = None").await;
    restore(&worker, "latest").await.error_for_status().unwrap();
    assert_eq!(eval(&worker, "slow, fast").await, "(1, 2)");
}

#[tokio::test]
async fn without_cloudpickle_what_the_session_defined_is_listed_and_the_rest_restores() {
    let store = tempfile::tempdir().unwrap();
    let worker = start(store.path(), &[]).await;
    // `import cloudpickle` now raises ImportError in this interpreter: the plain-pickle path.
    worker
        .run("import sys\nsys.modules['cloudpickle'] = None\ndef f():\n    return 1\nclass C:\n    pass\nc = C()\nx = [1, {'a': 2}]\nimport fractions\nh = fractions.Fraction(1, 3)")
        .await;
    let checkpoint = created(&worker).await;
    let mut skipped: Vec<&str> = checkpoint.skipped.iter().map(|s| s.name.as_str()).collect();
    skipped.sort();
    assert_eq!(skipped, ["C", "c", "f"], "{checkpoint:?}");
    assert!(
        checkpoint
            .skipped
            .iter()
            .all(|s| s.reason.contains("needs cloudpickle")),
        "{checkpoint:?}"
    );
    restore(&worker, "latest").await.error_for_status().unwrap();
    assert_eq!(
        eval(&worker, "x, h, 'f' in globals()").await,
        "([1, {'a': 2}], Fraction(1, 3), False)"
    );
}

#[tokio::test]
async fn checkpoints_are_traced_and_logged_with_metadata_only() {
    use capsule_protocol::frame;
    use capsule_protocol::trace::{TraceEvent, TraceEventKind};
    let store = tempfile::tempdir().unwrap();
    let socket = store.path().join("trace.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let log = store.path().join("worker.log");
    let dir = store.path().join("checkpoints");
    let worker = Worker::start_logging_to(
        &log,
        &[
            ("CAPSULE_CHECKPOINT_DIR", dir.to_str().unwrap()),
            ("CAPSULE_TRACE_SOCKET", socket.to_str().unwrap()),
            ("RUST_LOG", "capsule_worker=info"),
        ],
    )
    .await;
    worker.run("secret = 'VALUE_MARKER_TEXT' * 3").await;
    let checkpoint = created(&worker).await;
    restore(&worker, "latest").await.error_for_status().unwrap();
    error(restore(&worker, "0000000000000-gone").await, 404).await;
    let (mut stream, _) = tokio::time::timeout(common::WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut events: Vec<TraceEvent> = Vec::new();
    while !events
        .iter()
        .any(|e| e.kind == TraceEventKind::CheckpointFailed)
    {
        let event = tokio::time::timeout(common::WAIT, frame::read_frame_async(&mut stream));
        events.push(event.await.unwrap().unwrap());
    }
    let find = |kind| events.iter().find(|e| e.kind == kind).unwrap();
    let created_event = find(TraceEventKind::CheckpointCreated);
    assert_eq!(created_event.execution_id, "session:session-a");
    assert_eq!(created_event.attributes["checkpointId"], checkpoint.id);
    assert_eq!(
        created_event.attributes["sizeBytes"],
        checkpoint.size_bytes.to_string()
    );
    assert_eq!(created_event.attributes["names"], "1");
    assert!(created_event.duration_ms.is_some());
    assert_eq!(
        find(TraceEventKind::CheckpointRestored).attributes["names"],
        "1"
    );
    assert_eq!(
        find(TraceEventKind::CheckpointFailed).attributes["code"],
        "checkpointNotFound"
    );
    drop(worker);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("checkpoint created"), "{logged}");
    for text in [serde_json::to_string(&events).unwrap(), logged] {
        assert!(!text.contains("VALUE_MARKER"), "no values: {text}");
    }
}

#[tokio::test]
async fn a_namespace_of_more_names_than_listed_says_how_many_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let worker = start(dir.path(), &[]).await;
    bind(&worker, &binding("uid-many", b"pool-key")).await;
    let defined = eval(
        &worker,
        "for i in range(1001): globals()[f'n{i:04}'] = i\n1001",
    )
    .await;
    assert_eq!(defined, "1001");
    let others = "len([k for k in globals() if not k.startswith(('__', 'n'))])";
    let others: u64 = eval(&worker, others).await.parse().unwrap();
    let created = created(&worker).await;
    let total = created.names_total;
    assert_eq!((created.names.len(), total), (1000, 1001 + others));

    let list = listed(&worker).await;
    let summary = &list.checkpoints[0];
    assert_eq!((summary.names.len(), summary.names_total), (1000, total));

    let restored = restore(&worker, &created.id).await;
    assert_eq!(restored.status(), 200);
    let restored: CheckpointRestored = restored.json().await.unwrap();
    assert_eq!((restored.names.len(), restored.names_total), (1000, total));
    assert_eq!(
        eval(
            &worker,
            "sum(1 for k in globals() if k.startswith('n') and len(k) == 5)"
        )
        .await,
        "1001"
    );
}
