//! The pipe floor of `capsule-worker-bench`: the same round trip and stdout volume through bare
//! pipes between this process and a relay child (this binary with `--pipe-relay`), which copies its
//! stdin to its stdout. A byte there takes the hops output takes (producer → relay → consumer) with
//! no framing, HTTP or Python: what no runtime can beat on this machine.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use super::round_trip::{StdoutShape, Throughput};
use super::{fail, percentile, Args};

const RELAY_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PipeFigures {
    /// One byte there and back.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The stdout volume in 64 KiB writes, through the relay.
    pub(crate) stdout: Throughput,
}

/// The child's side: copies stdin to stdout until stdin closes.
pub(crate) fn relay() {
    let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    while let Ok(n @ 1..) = input.read(&mut buffer) {
        if output
            .write_all(&buffer[..n])
            .and_then(|_| output.flush())
            .is_err()
        {
            return;
        }
    }
}

pub(crate) async fn bench(args: &Args) -> PipeFigures {
    let (iterations, warmup, bytes, runs) = (
        args.iterations,
        args.warmup,
        args.throughput_bytes,
        args.runs,
    );
    tokio::task::spawn_blocking(move || measure(iterations, warmup, bytes, runs))
        .await
        .unwrap_or_else(|e| fail(&format!("the pipe floor failed: {e}")))
}

fn measure(iterations: usize, warmup: usize, bytes: usize, runs: usize) -> PipeFigures {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("own path: {e}")));
    let mut child = Command::new(exe)
        .arg("--pipe-relay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start the pipe relay: {e}")));
    let mut to_relay = child.stdin.take().unwrap();
    let mut from_relay = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(iterations);
    for n in 0..warmup + iterations {
        let started = Instant::now();
        to_relay.write_all(b"x").unwrap();
        from_relay.read_exact(&mut byte).unwrap();
        if n >= warmup {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    let (_, total) = StdoutShape::Writes64KiB.code(bytes);
    let mut throughputs = Vec::new();
    for _ in 0..runs {
        throughputs.push(relay_throughput(&mut to_relay, &mut from_relay, total));
    }
    drop(to_relay);
    let _ = child.wait();
    PipeFigures {
        p50_ms: percentile(&samples, 0.5),
        p99_ms: percentile(&samples, 0.99),
        stdout: Throughput::from_runs(StdoutShape::Writes64KiB.name(), throughputs),
    }
}

/// MB/s of `total` bytes written in 64 KiB writes by one thread and read back by this one.
fn relay_throughput(
    to_relay: &mut std::process::ChildStdin,
    from_relay: &mut std::process::ChildStdout,
    total: usize,
) -> f64 {
    let block = vec![b'x'; RELAY_BUFFER_BYTES];
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut left = total;
            while left > 0 {
                let n = left.min(block.len());
                to_relay.write_all(&block[..n]).unwrap();
                left -= n;
            }
        });
        let mut buffer = vec![0u8; RELAY_BUFFER_BYTES];
        let mut received = 0;
        while received < total {
            match from_relay.read(&mut buffer) {
                Ok(n @ 1..) => received += n,
                _ => fail("the pipe relay stopped"),
            }
        }
    });
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}
