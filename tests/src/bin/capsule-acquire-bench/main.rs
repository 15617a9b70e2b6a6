//! `capsule-acquire-bench`: how long a client waits for a Python session, measured end to end on
//! the devcluster with the real binaries (devcluster, operator, worker and sidecar processes).
//!
//! One sample is a `CapsuleSession` created through the API server, then watched until it is
//! `Bound`, then its token Secret read and `1+1` executed on its endpoint until the final event:
//! the client's wait from create to first result. Warm hits find an idle worker: once with the pool
//! at rest before each session (`warm_hit`: the previous session's worker reset and back, then
//! `--gap-ms`), once back to back (`warm_hit_back_to_back`: each session created as soon as the
//! previous one's delete returns, so the operator releases one worker while it binds the next).
//! Misses run with a pool at zero idle workers, so a worker must be created and warmed for each.
//! A burst creates `--burst` sessions at once on a pool with as many warm workers: every one a
//! warm hit, each measured under the load of the others.
//!
//! It also counts the operator's pool status writes during a steady period with heartbeating
//! workers (`capsule_pool_status_writes_total`), as writes per pool per minute, and its API
//! requests (watches aside, from the devcluster's request log) per pool per minute at rest and per
//! session in the burst, its release included.
//!
//! Usage: `capsule-acquire-bench [--warm 3] [--hits 30] [--misses 5] [--burst 50] [--steady-seconds 60]
//! [--status-interval-seconds 10] [--gap-ms 250] [--json PATH]`. For profiling:
//! `CAPSULE_BENCH_OPERATOR_LOG` sets the operator's `RUST_LOG` (default `warn`); the devcluster logs
//! every request with its duration; `CAPSULE_BENCH_KEEP=1` keeps the state directory with both logs. Binaries come from this executable's directory
//! (build them with `cargo build -p capsule-operator -p capsule-worker -p capsule-sidecar
//! -p capsule-devcluster --bins`); kubectl is not needed.

use std::path::PathBuf;
use std::time::Duration;

use capsule_e2e::{finish_bench, free_port, start_bench_operator, DevCluster};
use clap::Parser;

mod bench;
mod report;
mod scenarios;

use report::print_table;
use scenarios::run;

const NS: &str = "default";
const POOL: &str = "bench";
const WAIT: Duration = Duration::from_secs(120);

#[derive(Parser)]
struct Args {
    /// Warm workers in the pool (its `spec.replicas`) for the warm hits.
    #[arg(long, default_value_t = 3)]
    warm: i32,
    /// Warm-hit sessions, one after another.
    #[arg(long, default_value_t = 30)]
    hits: usize,
    /// Miss sessions (pool at zero idle workers), one after another.
    #[arg(long, default_value_t = 5)]
    misses: usize,
    /// Sessions created at once on a pool with as many warm workers (`warm_hit_burst`: each a
    /// warm hit under the load of the others being created); 0 skips it.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// Quiet time after the previous session's worker is back, before an isolated warm hit.
    #[arg(long, default_value_t = 250)]
    gap_ms: u64,
    /// Length of the steady period in which status writes are counted.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// The operator's `--status-interval-seconds`.
    #[arg(long, default_value_t = 10)]
    status_interval_seconds: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Puts the real `python3` first on the PATH the devcluster's pods inherit: a version manager's
/// shim (pyenv's takes ~150 ms a start here) is not what a worker image runs, and a reset starts
/// an interpreter.
fn use_real_python(state: &std::path::Path) -> BenchResult<()> {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()?;
    let real = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let dir = state.join("python-bin");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("python3");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link)?;
    let path = std::env::var("PATH").unwrap_or_default();
    // SAFETY: single-threaded here, before any thread or child process starts.
    unsafe { std::env::set_var("PATH", format!("{}:{path}", dir.display())) };
    eprintln!("pods run {real}");
    Ok(())
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    let state = std::env::temp_dir().join(format!("capsule-acquire-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    use_real_python(&state)?;
    let cluster = DevCluster::start_logging_requests(&state);
    let port = free_port();
    let mut operator = start_bench_operator(&cluster, port, args.status_interval_seconds, &state);
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(run(&args, &cluster, port));
    operator.stop(Duration::from_secs(10));
    let figures = outcome?;
    print_table(&figures);
    finish_bench(&figures, args.json.as_deref(), cluster, &state)?;
    Ok(())
}
