//! The measured `capsule-worker` of `capsule-worker-bench`: started as the real binary, bound to a
//! session, and driven over HTTP on loopback the way a client that forwards output would.

use std::process::Stdio;
use std::time::{Duration, Instant};

use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent, WorkerStats};
use capsule_protocol::heartbeat::SessionBinding;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{fail, Args};

const WORKER_TOKEN: &str = "bench-pool-token";
pub(crate) const SESSION_TOKEN: &str = "bench-session-token";

pub(crate) struct WorkerProcess {
    _child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

pub(crate) async fn start_worker(args: &Args) -> WorkerProcess {
    start_worker_with(args, &[]).await
}

/// The measured `capsule-worker` binary: `--worker-bin`, or the one next to this bench.
pub(crate) fn worker_bin(args: &Args) -> std::path::PathBuf {
    args.worker_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("capsule-worker")
    })
}

pub(crate) async fn start_worker_with(args: &Args, env: &[(&str, &str)]) -> WorkerProcess {
    let bin = worker_bin(args);
    let mut child = tokio::process::Command::new(&bin)
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", WORKER_TOKEN)
        .env("CAPSULE_PYTHON", &args.python)
        .env("CAPSULE_WORKER_THREADS", args.worker_threads.to_string())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot start {}: {e} (build it: cargo build --release -p capsule-worker)",
                bin.display()
            ))
        });
    let pid = child.id().unwrap_or_default();
    let base = format!("http://{}", listen_address(&mut child).await);
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    wait_ready(&client, &base).await;
    bind_session(&client, &base).await;
    WorkerProcess {
        _child: child,
        pid,
        base,
        client,
    }
}

/// The address the worker printed on start; its later stdout is drained so it never blocks.
async fn listen_address(child: &mut tokio::process::Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten())
        .unwrap_or_else(|| fail("capsule-worker did not start"));
    let addr = line
        .trim_start_matches("capsule-worker listening on ")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if Instant::now() > deadline {
            fail("capsule-worker never became ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bind_session(client: &reqwest::Client, base: &str) {
    let bound = client
        .put(format!("{base}/v1/session"))
        .bearer_auth(WORKER_TOKEN)
        .json(&SessionBinding {
            session: "bench".into(),
            namespace: "bench".into(),
            token_sha256: capsule_protocol::auth::token_sha256_hex(SESSION_TOKEN),
            session_uid: None,
            checkpoint_key: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 204, "session binding");
}

/// An event line read without copying its text: the client validates the JSON (serde checks the
/// string) and counts the decoded bytes, like a client that forwards output without keeping it.
#[derive(serde::Deserialize)]
struct LinePeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    text: Option<&'a serde_json::value::RawValue>,
}

/// Index of the first `byte` in `haystack`. Blocks are skipped with `contains`, which std runs as a
/// memchr: the client must not cost more per byte than the worker it measures.
fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut offset = 0;
    for block in haystack.chunks(256) {
        if block.contains(&byte) {
            return block.iter().position(|b| *b == byte).map(|i| offset + i);
        }
        offset += block.len();
    }
    None
}

/// Decoded UTF-8 length of a JSON string literal (`raw` includes the quotes).
fn unescaped_len(raw: &str) -> usize {
    let bytes = &raw.as_bytes()[1..raw.len() - 1];
    let mut length = bytes.len();
    let mut index = 0;
    while let Some(found) = find_byte(&bytes[index..], b'\\') {
        let at = index + found;
        if bytes[at + 1] == b'u' {
            let hex = &raw[at + 3..at + 7];
            let code = u32::from_str_radix(hex, 16).unwrap_or(0xFFFD);
            // A surrogate pair (two escapes) encodes one 4-byte character.
            let decoded = match code {
                0xD800..=0xDBFF => 4,
                0xDC00..=0xDFFF => 0,
                0..=0x7F => 1,
                0x80..=0x7FF => 2,
                _ => 3,
            };
            length = length - 6 + decoded;
            index = at + 6;
        } else {
            length -= 1;
            index = at + 2;
        }
    }
    length
}

/// Runs code and returns (output bytes, final event).
pub(crate) async fn execute(worker: &WorkerProcess, code: &str) -> (usize, EventBody) {
    let request = ExecuteRequest {
        code: code.into(),
        ..Default::default()
    };
    execute_request(worker, &request).await
}

/// [`execute`] with a whole request.
pub(crate) async fn execute_request(
    worker: &WorkerProcess,
    request: &ExecuteRequest,
) -> (usize, EventBody) {
    let mut response = worker
        .client
        .post(format!("{}/v1/executions", worker.base))
        .bearer_auth(SESSION_TOKEN)
        .json(request)
        .send()
        .await
        .unwrap();
    let mut buffer: Vec<u8> = Vec::new();
    let mut output = 0usize;
    let mut last = None;
    // Bytes of `buffer` already searched for a newline (a long line arrives over many chunks).
    let mut searched = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = find_byte(&buffer[searched..], b'\n') {
            let pos = searched + pos - start;
            searched = start + pos + 1;
            let line = &buffer[start..start + pos];
            let peek: LinePeek<'_> = serde_json::from_slice(line).unwrap();
            match (peek.kind, peek.text) {
                ("output", Some(text)) => output += unescaped_len(text.get()),
                _ => {
                    let event: ExecutionEvent = serde_json::from_slice(line).unwrap();
                    if event.body.is_final() {
                        last = Some(event.body);
                    }
                }
            }
            start += pos + 1;
        }
        buffer.drain(..start);
        searched = buffer.len();
    }
    (
        output,
        last.unwrap_or_else(|| fail("stream ended without a final event")),
    )
}

/// `GET /healthz`, the cheapest call through the same HTTP stack.
pub(crate) async fn health(worker: &WorkerProcess) {
    let response = worker
        .client
        .get(format!("{}/healthz", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

/// CPU time in µs of `pid` and of every process below it (the fork server and the interpreters),
/// summed over their threads from `/proc/*/task/*/schedstat` (nanoseconds, unlike the ticks of
/// `/proc/*/stat`).
pub(crate) fn cpu_micros(pid: u32) -> (f64, f64) {
    let below: f64 = descendants(pid).into_iter().map(process_cpu_micros).sum();
    (process_cpu_micros(pid), below)
}

/// CPU time in µs of this bench process (its client's share of the machine).
pub(crate) fn own_cpu_micros() -> f64 {
    process_cpu_micros(std::process::id())
}

fn process_cpu_micros(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1000.0
}

fn descendants(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let children: Vec<u32> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let below = children.iter().flat_map(|&child| descendants(child));
    children.iter().copied().chain(below).collect()
}

pub(crate) async fn stats(worker: &WorkerProcess) -> WorkerStats {
    worker
        .client
        .get(format!("{}/v1/stats", worker.base))
        .bearer_auth(SESSION_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescaped_length_matches_the_decoded_text() {
        let long = format!("{}\n{}\"é\\", "x".repeat(255), "y".repeat(300));
        for text in ["plain", "a\nb\t\"q\" \\ é ✓ 😀", "", "\u{1}", &long] {
            let raw = serde_json::to_string(text).unwrap();
            assert_eq!(unescaped_len(&raw), text.len(), "{raw}");
        }
        assert_eq!(unescaped_len(r#""\u00e9\ud83d\ude00\n""#), "é😀\n".len());
    }
}
