//! Transport diagnostics on the real worker: with `capsule_worker::frames` at debug level, every
//! frame between worker and interpreter is logged with its direction, type and size, and nothing
//! of its content.

mod common;

use common::{result_repr, Worker};

#[tokio::test]
async fn each_frame_is_logged_with_direction_type_and_size_never_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let worker = Worker::start_logging_to(
        &log,
        &[(
            "RUST_LOG",
            "capsule_worker=warn,capsule_worker::frames=debug",
        )],
    )
    .await;
    let secret = "s3cr3t-payload-never-logged";
    let events = worker
        .run(&format!("print({secret:?})\n'{secret}'[::-1] + '{secret}'"))
        .await;
    assert!(result_repr(&events).unwrap().contains(secret));
    drop(worker);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(secret),
        "content leaked into the log:\n{text}"
    );
    let frames: Vec<&str> = text.lines().filter(|l| l.contains("frame")).collect();
    let has = |direction: &str, kind: &str| {
        let fields = format!("frame direction=\"{direction}\" kind=\"{kind}\" bytes=");
        frames.iter().any(|l| l.contains(&fields))
    };
    for (direction, kind) in [
        ("to_interpreter", "execute"),
        ("to_interpreter", "enter"),
        ("from_interpreter", "protected"),
        ("from_interpreter", "ready"),
        ("from_interpreter", "output"),
        ("from_interpreter", "result"),
    ] {
        assert!(
            has(direction, kind),
            "no {direction} {kind} frame in:\n{text}"
        );
    }
}
