//! Many small writes gathered into chunks arrive exactly, in order and in bounded chunks, under
//! every backpressure policy when the queue has room: text with escapes at every offset crosses
//! frame reads, the JSON check's blocks and the HTTP batches unchanged, and stderr keeps its place
//! between stdout lines.

mod common;

use capsule_protocol::execute::{EventBody, ExecuteRequest, OutputStream};
use common::Worker;

/// The documented bound of one output chunk, in UTF-8 bytes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Lines of varying length holding every character the driver escapes, and a stderr marker every
/// 5000 lines.
const CODE: &str = r#"
import sys
for n in range(40000):
    print(n, 'q"uote', "back\\slash", "tab\there", "cr\r", "é✓" * (n % 7), "x" * (n % 97))
    if n % 5000 == 4999:
        sys.stderr.write("marker %d\n" % n)
"#;

/// What CODE prints, with each stderr marker as `<err:...>` where it belongs.
fn expected() -> String {
    let mut text = String::new();
    for n in 0..40000 {
        text.push_str(&format!(
            "{n} q\"uote back\\slash tab\there cr\r {} {}\n",
            "é✓".repeat(n % 7),
            "x".repeat(n % 97)
        ));
        if n % 5000 == 4999 {
            text.push_str(&format!("<err:marker {n}\n>"));
        }
    }
    text
}

#[tokio::test]
async fn gathered_writes_arrive_exactly_and_in_order_under_every_policy() {
    let expected = expected();
    for policy in ["Block", "DropNew", "DropOldest", "Error"] {
        let worker = Worker::start(&[
            ("CAPSULE_BACKPRESSURE", policy),
            ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "4096"),
        ])
        .await;
        let request = ExecuteRequest {
            code: CODE.into(),
            ..Default::default()
        };
        let mut stream = worker.stream(&request).await;
        let mut received = String::new();
        let mut largest_chunk = 0;
        let mut final_body = None;
        while let Some(event) = stream.next().await {
            match event.body {
                EventBody::Output { stream, text } => {
                    largest_chunk = largest_chunk.max(text.len());
                    match stream {
                        OutputStream::Stdout => received.push_str(&text),
                        OutputStream::Stderr => received.push_str(&format!("<err:{text}>")),
                    }
                }
                body if body.is_final() => final_body = Some(body),
                _ => {}
            }
        }
        assert!(
            matches!(final_body, Some(EventBody::Result { .. })),
            "{policy}: {final_body:?}"
        );
        assert!(
            largest_chunk <= CHUNK_BYTES,
            "{policy}: chunk {largest_chunk}"
        );
        assert_eq!(worker.stats().await.executor.outputs_dropped, 0, "{policy}");
        assert!(received == expected, "{policy}: the output differs");
    }
}
