//! Reset figures of `capsule-worker-bench`: how long a session release with `Reset` takes to swap
//! in a fresh interpreter, and until the next result, with and without the warmed standby.

use std::time::{Duration, Instant};

use capsule_protocol::execute::EventBody;
use serde::Serialize;

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
    let worker = start_worker_with(
        args,
        &[
            ("CAPSULE_STANDBY_INTERPRETER", standby_env),
            ("CAPSULE_WARMUP_CODE", args.reset_warmup.as_str()),
        ],
    )
    .await;
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
