//! The scenarios measured, in order: a steady period, warm hits (isolated, then back to back),
//! a burst, misses, and, as the reference, isolated warm hits and misses with the interpreter in
//! the worker container (the configuration before the interpreter container).

use std::time::Duration;

use capsule_e2e::DevCluster;
use serde_json::{json, Value};

use crate::bench::{connect, install_pool, Bench, Sample};
use crate::report::{p50_ratio, summary};
use crate::{Args, BenchResult};

/// The operator's API requests (watches aside) from the devcluster's request log, from `since`
/// on: (reads, writes).
fn operator_calls(cluster: &DevCluster, since: usize) -> (usize, usize, usize) {
    let requests = cluster.requests();
    let calls = requests[since.min(requests.len())..]
        .iter()
        .filter(|r| r.is_operator_call());
    let (reads, writes) = calls.fold((0, 0), |(reads, writes), r| match r.method.as_str() {
        "GET" => (reads + 1, writes),
        _ => (reads, writes + 1),
    });
    (reads, writes, requests.len())
}

/// Steady period: warm workers heartbeating, no sessions; status writes and API requests per pool
/// per minute.
async fn steady_period(args: &Args, cluster: &DevCluster, bench: &Bench) -> BenchResult<Value> {
    tokio::time::sleep(Duration::from_secs(args.status_interval_seconds)).await;
    let before = bench.status_writes().await?;
    let (_, _, mark) = operator_calls(cluster, 0);
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let after = bench.status_writes().await?;
    let (reads, writes, _) = operator_calls(cluster, mark);
    let per_minute = |n: f64| n * 60.0 / args.steady_seconds as f64;
    let writes_per_minute = per_minute(after - before);
    eprintln!("status writes per pool per minute: {writes_per_minute:.1}");
    eprintln!(
        "API requests per pool per minute at rest: {:.1} reads, {:.1} writes",
        per_minute(reads as f64),
        per_minute(writes as f64)
    );
    Ok(json!({
        "status_writes_per_pool_per_minute": writes_per_minute,
        "api_reads_per_pool_per_minute_at_rest": per_minute(reads as f64),
        "api_writes_per_pool_per_minute_at_rest": per_minute(writes as f64),
    }))
}

/// Warm hits, isolated and back to back.
async fn measure_hits(args: &Args, bench: &Bench) -> BenchResult<(Vec<Sample>, Vec<Sample>)> {
    // Isolated: each session finds the pool at rest, its previous session's worker reset and back.
    let mut hits = Vec::with_capacity(args.hits);
    for i in 0..args.hits {
        bench.quiesce(args.warm as usize, false).await?;
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        hits.push(bench.acquire(&format!("hit-{i}")).await?);
    }
    // Back to back: each session is created as soon as the previous one's delete returns, so the
    // operator releases and resets one worker while it binds the next.
    bench.quiesce(args.warm as usize, false).await?;
    let mut back_to_back = Vec::with_capacity(args.hits);
    for i in 0..args.hits {
        back_to_back.push(bench.acquire(&format!("next-{i}")).await?);
    }
    Ok((hits, back_to_back))
}

/// `--burst` sessions at once on a pool with as many warm workers.
async fn measure_burst(args: &Args, bench: &Bench) -> BenchResult<Vec<Sample>> {
    if args.burst == 0 {
        return Ok(Vec::new());
    }
    bench.set_replicas(args.burst as i32).await?;
    bench.quiesce(args.burst, false).await?;
    let names: Vec<String> = (0..args.burst).map(|i| format!("burst-{i}")).collect();
    let samples = futures::future::join_all(names.iter().map(|n| bench.acquire(n))).await;
    samples.into_iter().collect::<BenchResult<Vec<Sample>>>()
}

/// The burst's API requests per session: from its creation until the pool is back at rest with
/// every worker reset (the release of each session included).
async fn burst_with_calls(
    args: &Args,
    cluster: &DevCluster,
    bench: &Bench,
) -> BenchResult<(Vec<Sample>, Value)> {
    let (_, _, mark) = operator_calls(cluster, 0);
    let samples = measure_burst(args, bench).await?;
    if args.burst > 0 {
        bench.quiesce(args.burst, false).await?;
    }
    let (reads, writes, _) = operator_calls(cluster, mark);
    let per_session = |n: usize| n as f64 / args.burst.max(1) as f64;
    eprintln!(
        "API requests per session in the burst: {:.1} reads, {:.1} writes",
        per_session(reads),
        per_session(writes)
    );
    let calls = json!({
        "api_reads_per_session_in_burst": per_session(reads),
        "api_writes_per_session_in_burst": per_session(writes),
    });
    Ok((samples, calls))
}

/// Misses: the pool at zero idle workers, so each session waits for a new worker.
async fn measure_misses(args: &Args, bench: &Bench) -> BenchResult<Vec<Sample>> {
    bench.set_replicas(0).await?;
    let mut misses = Vec::with_capacity(args.misses);
    for i in 0..args.misses {
        bench.quiesce(0, true).await?;
        misses.push(bench.acquire(&format!("miss-{i}")).await?);
    }
    Ok(misses)
}

/// The reference in the same run: the previous configuration, interpreters in the worker
/// container. The pool is emptied first so every worker measured has that shape.
async fn measure_worker_container(
    args: &Args,
    bench: &Bench,
) -> BenchResult<(Vec<Sample>, Vec<Sample>)> {
    bench.set_replicas(0).await?;
    bench.quiesce(0, true).await?;
    bench.set_placement("WorkerContainer").await?;
    bench.set_replicas(args.warm).await?;
    let mut hits = Vec::with_capacity(args.hits);
    for i in 0..args.hits {
        bench.quiesce(args.warm as usize, false).await?;
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        hits.push(bench.acquire(&format!("ref-hit-{i}")).await?);
    }
    let misses = measure_misses(args, bench).await?;
    Ok((hits, misses))
}

pub async fn run(
    args: &Args,
    cluster: &DevCluster,
    operator_port: u16,
) -> BenchResult<serde_json::Value> {
    let (bench, bench_client) = connect(args, cluster, operator_port).await?;
    install_pool(args, &bench, bench_client, operator_port).await?;
    let steady = steady_period(args, cluster, &bench).await?;
    let (hits, back_to_back) = measure_hits(args, &bench).await?;
    let (burst, burst_calls) = burst_with_calls(args, cluster, &bench).await?;
    let misses = measure_misses(args, &bench).await?;
    let (reference_hits, reference_misses) = measure_worker_container(args, &bench).await?;

    let (warm_hit, miss) = (summary(&hits), summary(&misses));
    let (warm_hit_reference, miss_reference) =
        (summary(&reference_hits), summary(&reference_misses));
    let mut figures = json!({
        "benchmark": "capsule-acquire-bench",
        "warm_workers": args.warm,
        "status_interval_seconds": args.status_interval_seconds,
        "steady_seconds": args.steady_seconds,
        "warm_hit": warm_hit,
        "warm_hit_back_to_back": summary(&back_to_back),
        "warm_hit_burst": summary(&burst),
        "miss": miss,
        "reference": "interpreter in the worker container (spec.template.interpreter.placement: WorkerContainer), measured after the figures above in the same run",
        "p50_ratio_to_worker_container": {
            "warm_hit": p50_ratio(&warm_hit, &warm_hit_reference),
            "miss": p50_ratio(&miss, &miss_reference),
        },
        "warm_hit_worker_container": warm_hit_reference,
        "miss_worker_container": miss_reference,
    });
    for extra in [steady, burst_calls] {
        if let (Some(into), Value::Object(from)) = (figures.as_object_mut(), extra) {
            into.extend(from);
        }
    }
    Ok(figures)
}
