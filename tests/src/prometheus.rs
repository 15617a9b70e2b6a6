//! A real Prometheus server scraping the operator, and instant queries against it.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{free_port, http, tool, Process};

/// Starts Prometheus (from `.tools/`) scraping `127.0.0.1:<operator_port>` every second; returns
/// the process and the port of its HTTP API.
pub fn start_prometheus(dir: &Path, operator_port: u16) -> (Process, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: capsule-operator\n    static_configs:\n      - targets: ['127.0.0.1:{operator_port}']\n"
        ),
    )
    .unwrap();
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
    let process = Process {
        child,
        name: "prometheus".into(),
    };
    (process, port)
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
