//! Reset figures of `capsule-worker-bench`: how long a session release with `Reset` takes to swap
//! in a fresh interpreter, and until the next result, with and without the warmed standby.

use std::time::{Duration, Instant};

use capsule_protocol::execute::EventBody;
use serde::Serialize;

use super::worker_process::worker_bin;
use super::{execute, percentile, start_worker_with, Args, SESSION_TOKEN};

/// A reset (fresh interpreter for the next session) until the next `1+1` result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetFigures {
    /// `POST /v1/reset` round trip: the swap itself.
    pub(crate) swap_p50_ms: f64,
    pub(crate) swap_p99_ms: f64,
    /// From the reset request to the next execution's result.
    pub(crate) to_first_result_p50_ms: f64,
    pub(crate) to_first_result_p99_ms: f64,
}

pub(crate) async fn bench(args: &Args, standby: bool) -> ResetFigures {
    let standby_env = if standby { "true" } else { "false" };
    measure(args, &[("CAPSULE_STANDBY_INTERPRETER", standby_env)]).await
}

/// With a standby, the fork server in a process of its own connected over a socket, as in a
/// pod's `interpreter` container (under the same uid here: the figure is the protocol's cost).
pub(crate) async fn bench_interpreter_container(args: &Args) -> ResetFigures {
    let dir = std::env::temp_dir().join(format!("capsule-bench-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("fork.sock");
    let scratch = dir.join("scratch");
    let _fork_server = tokio::process::Command::new(worker_bin(args))
        .env("CAPSULE_FORK_SERVER_CONNECT", &socket)
        .env("CAPSULE_PYTHON", &args.python)
        .kill_on_drop(true)
        .spawn()
        .expect("start the fork server");
    let figures = measure(
        args,
        &[
            ("CAPSULE_FORK_SERVER_SOCKET", socket.to_str().unwrap()),
            ("CAPSULE_SCRATCH_DIR", scratch.to_str().unwrap()),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

async fn measure(args: &Args, env: &[(&str, &str)]) -> ResetFigures {
    let mut env = env.to_vec();
    env.push(("CAPSULE_WARMUP_CODE", args.reset_warmup.as_str()));
    let worker = start_worker_with(args, &env).await;
    let mut swaps = Vec::with_capacity(args.resets);
    let mut firsts = Vec::with_capacity(args.resets);
    for _ in 0..args.resets {
        execute(&worker, "x = list(range(1000))").await;
        // Sessions are not released back to back: the standby has had time to warm.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let reset = worker
            .client
            .post(format!("{}/v1/reset", worker.base))
            .bearer_auth(SESSION_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 200, "reset");
        swaps.push(started.elapsed().as_secs_f64() * 1000.0);
        let (_, last) = execute(&worker, "1+1").await;
        firsts.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(last, EventBody::Result { .. }));
    }
    swaps.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    ResetFigures {
        swap_p50_ms: percentile(&swaps, 0.5),
        swap_p99_ms: percentile(&swaps, 0.99),
        to_first_result_p50_ms: percentile(&firsts, 0.5),
        to_first_result_p99_ms: percentile(&firsts, 0.99),
    }
}
