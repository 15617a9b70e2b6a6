//! A real Prometheus server scraping the operator, and instant queries against it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, http, tool, Process};

/// Starts Prometheus (from `.tools/`) scraping `127.0.0.1:<operator_port>` every second; returns
/// the process and the port of its HTTP API.
pub fn start_prometheus(dir: &Path, operator_port: u16) -> (Process, u16) {
    let job = json!({"job_name": "capsule-operator",
                     "static_configs": [{"targets": [format!("127.0.0.1:{operator_port}")]}]});
    start_prometheus_with(dir, &[job])
}

/// Starts Prometheus with these scrape configs (default interval 1 s); returns the process and
/// the port of its HTTP API.
pub fn start_prometheus_with(dir: &Path, scrape_configs: &[Value]) -> (Process, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    // JSON is YAML: the config is written as JSON.
    let text = json!({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs});
    std::fs::write(&config, text.to_string()).unwrap();
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .expect("prometheus starts");
    let mut process = Process {
        child,
        name: "prometheus".into(),
    };
    wait_ready(&mut process, port, dir);
    (process, port)
}

/// Waits for `/-/ready`; panics with Prometheus's log when it exits first (a refused config).
fn wait_ready(process: &mut Process, port: u16, dir: &Path) {
    let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    crate::wait_for("Prometheus ready", Duration::from_secs(30), || {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", log());
        }
        let ready = http()
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        ready.then_some(()).ok_or_else(|| "not ready".to_string())
    });
}

/// The value of the first series an instant query returns, or None (no series, or no answer).
pub fn promql(port: u16, query: &str) -> Option<f64> {
    let body: Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .ok()?
        .json()
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Every series an instant query returns (its `metric` labels and `value`); panics when
/// Prometheus refuses the query, so a broken expression fails loudly instead of reading as empty.
pub fn promql_series(port: u16, query: &str) -> Vec<Value> {
    let body: Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .expect("a Prometheus query")
        .json()
        .expect("a JSON answer");
    assert_eq!(body["status"], "success", "{query}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Runs `promtool check metrics` on an exposition; panics with promtool's findings when it
/// reports any (it lints names, types and help text).
pub fn assert_promtool_clean(what: &str, exposition: &str) {
    use std::io::Write;
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(exposition.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
