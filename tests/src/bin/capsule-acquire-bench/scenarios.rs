//! The scenarios measured, in order: a steady period, warm hits (isolated, then back to back),
//! a burst, misses, and, as the reference, isolated warm hits and misses with the interpreter in
//! the worker container (the configuration before the interpreter container).

use std::time::Duration;

use capsule_e2e::DevCluster;
use serde_json::json;

use crate::bench::{connect, install_pool, Bench, Sample};
use crate::report::{p50_ratio, summary};
use crate::{Args, BenchResult};

/// Steady period: warm workers heartbeating, no sessions; status writes per pool per minute.
async fn steady_status_writes(args: &Args, bench: &Bench) -> BenchResult<f64> {
    tokio::time::sleep(Duration::from_secs(args.status_interval_seconds)).await;
    let before = bench.status_writes().await?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let after = bench.status_writes().await?;
    let writes_per_minute = (after - before) * 60.0 / args.steady_seconds as f64;
    eprintln!("status writes per pool per minute: {writes_per_minute:.1}");
    Ok(writes_per_minute)
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
    let writes_per_minute = steady_status_writes(args, &bench).await?;
    let (hits, back_to_back) = measure_hits(args, &bench).await?;
    let burst = measure_burst(args, &bench).await?;
    let misses = measure_misses(args, &bench).await?;
    let (reference_hits, reference_misses) = measure_worker_container(args, &bench).await?;

    let (warm_hit, miss) = (summary(&hits), summary(&misses));
    let (warm_hit_reference, miss_reference) =
        (summary(&reference_hits), summary(&reference_misses));
    Ok(json!({
        "benchmark": "capsule-acquire-bench",
        "warm_workers": args.warm,
        "status_interval_seconds": args.status_interval_seconds,
        "steady_seconds": args.steady_seconds,
        "status_writes_per_pool_per_minute": writes_per_minute,
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
    }))
}
