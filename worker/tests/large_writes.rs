//! One write of any size reaches the client whole, in chunks of at most 64 KiB, under every
//! backpressure policy (the worker's frame bound is never reached by output).

mod common;

use capsule_protocol::execute::{EventBody, ExecuteRequest, OutputStream};
use common::Worker;

/// The documented bound of one output chunk, in UTF-8 bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// What one execution delivered: bytes per stream, the largest chunk, and its final event.
struct Delivered {
    stdout: usize,
    stderr: usize,
    largest_chunk: usize,
    foreign_chars: usize,
    final_body: EventBody,
}

/// Runs `code` and checks every chunk on the fly (a 100 MB run is never held in memory whole).
async fn deliver(worker: &Worker, code: String, expected_char: char) -> Delivered {
    let mut stream = worker
        .stream(&ExecuteRequest {
            code,
            ..Default::default()
        })
        .await;
    let mut delivered = Delivered {
        stdout: 0,
        stderr: 0,
        largest_chunk: 0,
        foreign_chars: 0,
        final_body: EventBody::Accepted { queue_position: 0 },
    };
    let collect = async {
        while let Some(event) = stream.next().await {
            match event.body {
                EventBody::Output { stream, text } => {
                    delivered.largest_chunk = delivered.largest_chunk.max(text.len());
                    delivered.foreign_chars += text.chars().filter(|c| *c != expected_char).count();
                    match stream {
                        OutputStream::Stdout => delivered.stdout += text.len(),
                        OutputStream::Stderr => delivered.stderr += text.len(),
                    }
                }
                body if body.is_final() => delivered.final_body = body,
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), collect)
        .await
        .expect("a large write is delivered in time");
    delivered
}

/// Python that writes `size` bytes of 'y' in one call to the given stream, as text or bytes.
fn one_write(size: usize, stream: &str, bytes: bool) -> String {
    if bytes {
        format!("import sys\nsys.{stream}.buffer.write(b'y' * {size})")
    } else {
        format!("import sys\nsys.{stream}.write('y' * {size})")
    }
}

#[tokio::test]
async fn single_writes_of_every_size_arrive_whole_in_bounded_chunks() {
    let worker = Worker::start(&[]).await;
    let sizes = [
        CHUNK_BYTES - 1,
        CHUNK_BYTES,
        CHUNK_BYTES + 1,
        1_000_000,
        17_000_000,
        100_000_000,
    ];
    for size in sizes {
        for stream in ["stdout", "stderr"] {
            for bytes in [false, true] {
                let what = format!("{size} bytes to {stream}, bytes={bytes}");
                let got = deliver(&worker, one_write(size, stream, bytes), 'y').await;
                assert!(
                    matches!(got.final_body, EventBody::Result { .. }),
                    "{what}: {:?}",
                    got.final_body
                );
                let (mine, other) = match stream {
                    "stdout" => (got.stdout, got.stderr),
                    _ => (got.stderr, got.stdout),
                };
                assert_eq!(mine, size, "{what}: every byte arrives");
                assert_eq!(other, 0, "{what}: nothing on the other stream");
                assert_eq!(got.foreign_chars, 0, "{what}: content intact");
                assert!(
                    got.largest_chunk <= CHUNK_BYTES,
                    "{what}: largest chunk {} bytes",
                    got.largest_chunk
                );
            }
        }
    }
    let stats = worker.stats().await;
    assert_eq!(stats.executor.outputs_dropped, 0, "{:?}", stats.executor);
    assert_eq!(stats.executor.outputs_sent, stats.executor.outputs_enqueued);
}

#[tokio::test]
async fn chunks_never_split_a_multibyte_character() {
    let worker = Worker::start(&[]).await;
    // '€' is three bytes: 65536 is not a multiple of three, so a byte cut would split one.
    for count in [21_845, 21_846, 400_000] {
        let got = deliver(
            &worker,
            format!("import sys\nsys.stdout.write('€' * {count})"),
            '€',
        )
        .await;
        assert!(matches!(got.final_body, EventBody::Result { .. }));
        assert_eq!(got.stdout, count * 3);
        assert_eq!(got.foreign_chars, 0, "no U+FFFD from a split character");
        assert!(got.largest_chunk <= CHUNK_BYTES);
    }
    // Four-byte characters through the bytes path, written after an odd prefix.
    let got = deliver(
        &worker,
        "import sys\nsys.stdout.buffer.write('😀'.encode() * 100_000)".into(),
        '😀',
    )
    .await;
    assert_eq!(got.stdout, 400_000);
    assert_eq!(got.foreign_chars, 0);
    assert!(got.largest_chunk <= CHUNK_BYTES);
}

#[tokio::test]
async fn chunks_stay_bounded_and_losses_are_counted_under_every_policy() {
    for policy in ["DropNew", "DropOldest", "Error"] {
        let worker = Worker::start(&[
            ("CAPSULE_BACKPRESSURE", policy),
            ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "4"),
        ])
        .await;
        for stream in ["stdout", "stderr"] {
            let size = 17_000_000;
            let got = deliver(&worker, one_write(size, stream, false), 'y').await;
            assert!(
                got.largest_chunk <= CHUNK_BYTES,
                "{policy}: chunk {}",
                got.largest_chunk
            );
            let stats = worker.stats().await;
            let delivered = got.stdout + got.stderr;
            match (&got.final_body, policy) {
                (EventBody::Error { ename, .. }, "Error") => {
                    assert_eq!(ename, "OutputQueueFull", "{policy}")
                }
                (EventBody::Result { .. }, _) => assert!(
                    delivered == size || stats.executor.outputs_dropped > 0,
                    "{policy}: {delivered} of {size} bytes arrived and nothing was counted dropped"
                ),
                (other, _) => panic!("{policy}: unexpected final event {other:?}"),
            }
        }
    }
}
