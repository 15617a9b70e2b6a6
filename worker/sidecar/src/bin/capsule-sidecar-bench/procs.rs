//! The processes under test: the sidecar and worker binaries next to this one, started on free
//! ports, and what /proc says about their CPU time and resident memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe.parent().expect("bin dir").join(name);
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build -p {} --release`",
        path.display(),
        if name == "capsule-worker" {
            "capsule-worker"
        } else {
            "capsule-sidecar"
        }
    );
    path
}

pub fn spawn(mut command: Command, prefix: &str) -> Proc {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = command.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    break rest.trim().to_owned();
                }
            }
            _ => panic!("{prefix}: no ready line"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

pub fn sidecar(socket: &Path, max_events: u64, max_bytes: u64) -> Proc {
    let mut command = Command::new(sibling("capsule-sidecar"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_TRACE_SOCKET", socket)
        .env("CAPSULE_WORKER_TOKEN", "bench-token")
        .env("CAPSULE_TRACE_MAX_EVENTS", max_events.to_string())
        .env("CAPSULE_TRACE_MAX_BYTES", max_bytes.to_string())
        .env("KUBECONFIG", "/nonexistent")
        .env("RUST_LOG", "error");
    spawn(command, "capsule-sidecar listening on")
}

pub fn worker(socket: Option<&Path>, linger_ms: Option<u64>) -> Proc {
    let mut command = Command::new(sibling("capsule-worker"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", "bench-token")
        .env(
            "CAPSULE_PYTHON",
            std::env::var_os("CAPSULE_PYTHON").unwrap_or("python3".into()),
        )
        .env("RUST_LOG", "error");
    if let Some(socket) = socket {
        command.env("CAPSULE_TRACE_SOCKET", socket);
    }
    if let Some(linger) = linger_ms {
        command.env("CAPSULE_TRACE_LINGER_MS", linger.to_string());
    }
    spawn(command, "capsule-worker listening on")
}

/// CPU time (user + system) a process has used so far, in microseconds (from /proc, clock ticks
/// assumed 100 Hz as on Linux).
pub fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 10_000.0
}

pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Every process below `pid`, from /proc's children lists.
pub fn descendants(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let children: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let below = children.iter().flat_map(|&c| descendants(c));
    children.iter().copied().chain(below).collect()
}
