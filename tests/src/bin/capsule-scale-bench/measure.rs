//! The run: one pool measured at rest (the reference), then `--pools` pools; for each period the
//! operator's CPU, RSS and API requests per minute, grouped by request kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capsule_e2e::{metric_label, metric_samples, ApiRequest, DevCluster};
use serde_json::{json, Value};

use crate::workers::{heartbeat, play_kubelet};
use crate::{pools, Args, BenchResult};

/// How long the pools may take to come up: the operator creates every pod and Secret.
const WARM_UP_LIMIT: Duration = Duration::from_secs(900);

pub async fn run(args: &Args, cluster: &DevCluster, port: u16, pid: i32) -> BenchResult<Value> {
    let client = capsule_e2e::kube_client(&cluster.kubeconfig).await;
    pools::install_crds(&client).await?;
    wait_ready(port).await?;
    let workers = play_kubelet(client.clone());
    let url = format!("http://127.0.0.1:{port}/v1/heartbeats");
    heartbeat(&workers, url, Duration::from_secs(args.heartbeat_seconds));

    pools::create(&client, 0..1, args).await?;
    warm_up(&client, 1, args, port).await?;
    let one = period(args, cluster, pid, port, 1).await?;
    let started = Instant::now();
    pools::create(&client, 1..args.pools, args).await?;
    warm_up(&client, args.pools, args, port).await?;
    let warm_up_seconds = started.elapsed().as_secs_f64();
    eprintln!("{} pools warm in {warm_up_seconds:.0} s", args.pools);
    let many = period(args, cluster, pid, port, args.pools).await?;
    Ok(json!({
        "benchmark": "capsule-scale-bench",
        "pools": args.pools,
        "workers_per_pool": args.workers,
        "status_interval_seconds": args.status_interval_seconds,
        "heartbeat_seconds": args.heartbeat_seconds,
        "staleness_seconds": args.staleness_seconds,
        "measure_seconds": args.measure_seconds,
        "pools_warm_seconds": warm_up_seconds,
        "reference": "one pool, measured first in the same run",
        "one_pool": one,
        "at_rest": many,
    }))
}

async fn wait_ready(port: u16) -> BenchResult<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    for _ in 0..600 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the operator did not become ready".into())
}

/// Waits for `count` pools to be warm; on failure says which workers the operator removed, and why.
async fn warm_up(client: &kube::Client, count: usize, args: &Args, port: u16) -> BenchResult<()> {
    let warm = pools::wait_all_idle(client, count, args.workers, WARM_UP_LIMIT).await;
    match warm {
        Ok(()) => Ok(()),
        Err(error) => {
            let removed = removals(port).await.unwrap_or_default();
            Err(format!("{error}; workers removed so far by reason: {removed:?}").into())
        }
    }
}

/// The operator's `capsule_pool_workers_removed_total`, summed over pools, by reason.
async fn removals(port: u16) -> BenchResult<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let mut by_reason = BTreeMap::new();
    for (labels, value) in metric_samples(&text, "capsule_pool_workers_removed_total") {
        let reason = metric_label(labels, "reason").unwrap_or("?");
        *by_reason.entry(reason.to_string()).or_default() += value;
    }
    Ok(by_reason)
}

/// One measured period at rest, after a status interval to settle.
async fn period(
    args: &Args,
    cluster: &DevCluster,
    pid: i32,
    port: u16,
    pools: usize,
) -> BenchResult<Value> {
    tokio::time::sleep(Duration::from_secs(args.status_interval_seconds)).await;
    let removed_before = removals(port).await?;
    let mark = cluster.requests().len();
    let cpu_before = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(args.measure_seconds)).await;
    let cpu = cpu_seconds(pid)? - cpu_before;
    let requests = cluster.requests();
    let per_minute = 60.0 / args.measure_seconds as f64;
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for request in requests[mark..].iter().filter(|r| r.is_operator_call()) {
        *by_kind.entry(kind(request)).or_default() += per_minute;
    }
    let total = |reads: bool| -> f64 {
        by_kind
            .iter()
            .filter(|(k, _)| (k.starts_with("GET ") || k.starts_with("LIST ")) == reads)
            .map(|(_, n)| n)
            .sum()
    };
    // An empty f64 sum is -0.0.
    let (reads, writes) = (total(true) + 0.0, total(false) + 0.0);
    let rss_mib = rss_bytes(pid)? as f64 / (1024.0 * 1024.0);
    // At rest nothing is removed: a removal here means the period measured churn, not rest.
    let mut removed = removals(port).await?;
    for (reason, before) in removed_before {
        *removed.entry(reason).or_default() -= before;
    }
    removed.retain(|_, n| *n > 0.0);
    eprintln!(
        "{pools} pools at rest: operator {:.3} cores, {rss_mib:.0} MiB; {reads:.0} reads and \
         {writes:.0} writes a minute; workers removed meanwhile: {removed:?}",
        cpu / args.measure_seconds as f64
    );
    Ok(json!({
        "operator_cpu_cores": cpu / args.measure_seconds as f64,
        "operator_rss_mib": rss_mib,
        "api_reads_per_minute": reads,
        "api_writes_per_minute": writes,
        "api_reads_per_pool_per_minute": reads / pools as f64,
        "api_writes_per_pool_per_minute": writes / pools as f64,
        "requests_per_minute_by_kind": by_kind,
        "workers_removed_in_period_by_reason": removed,
    }))
}

/// `VERB resource[/subresource]`, a GET of a collection counted as LIST.
fn kind(request: &ApiRequest) -> String {
    let path = request.uri.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let after_namespace = parts
        .iter()
        .position(|p| *p == "namespaces")
        .map(|at| &parts[(at + 2).min(parts.len())..])
        .unwrap_or(&parts[parts.len().saturating_sub(1)..]);
    let (resource, named, sub) = match after_namespace {
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, sub, ..] => (*resource, true, Some(*sub)),
        [] => ("", false, None),
    };
    let verb = match (request.method.as_str(), named) {
        ("GET", false) => "LIST",
        (method, _) => method,
    };
    match sub {
        Some(sub) => format!("{verb} {resource}/{sub}"),
        None => format!("{verb} {resource}"),
    }
}

fn cpu_seconds(pid: i32) -> BenchResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("bad stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of stat(5), 12 and 13 after the command name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
}

fn rss_bytes(pid: i32) -> BenchResult<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?;
    Ok(kib * 1024)
}

pub fn print(figures: &Value) {
    println!("\ncapsule-scale-bench: one operator at rest");
    println!(
        "{:<10} {:>8} {:>10} {:>10} {:>14} {:>15}",
        "pools", "cpu", "rss MiB", "reads/min", "writes/min", "writes/pool/min"
    );
    for (label, key) in [("1", "one_pool"), ("all", "at_rest")] {
        let f = &figures[key];
        let n = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
        let pools = if label == "1" {
            1
        } else {
            figures["pools"].as_u64().unwrap_or(0)
        };
        println!(
            "{:<10} {:>8.3} {:>10.1} {:>10.1} {:>14.1} {:>15.2}",
            pools,
            n("operator_cpu_cores"),
            n("operator_rss_mib"),
            n("api_reads_per_minute"),
            n("api_writes_per_minute"),
            n("api_writes_per_pool_per_minute")
        );
    }
    println!(
        "requests per minute by kind, all pools: {}",
        figures["at_rest"]["requests_per_minute_by_kind"]
    );
}
