//! Helpers shared by the end-to-end tests: locating binaries and tools, and running the devcluster,
//! the operator and kubectl as real processes that are stopped when the test ends.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod images;
pub mod k8s_sd;
pub mod prom_operator;
pub mod prometheus;
pub mod sd_server;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (as `make test` does).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    // A binary of this crate (a benchmark) lives beside the others.
    let beside = exe.parent().expect("exe dir").join(name);
    if beside.exists() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does) before the end-to-end tests",
        path.display()
    );
    path
}

/// An outside tool installed by `scripts/install-tools.sh` under `$CAPSULE_TOOLS_DIR` (default `.tools`).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("CAPSULE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join(".tools"));
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run `scripts/install-tools.sh` (make tools)",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released for the process under test to take).
/// `bin(name)` linked (or copied) under `state_dir/bin`, with `state_dir` made crossable: pods that
/// run as a non-root user (`runAsUser`) must reach their binary, their volumes and their
/// kubeconfig, and the build tree may sit under a directory only root can cross.
pub fn reachable_bin(state_dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let crossable = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(state_dir, crossable.clone()).unwrap();
    let dir = state_dir.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, crossable.clone()).unwrap();
    let target = dir.join(name);
    if !target.exists() && std::fs::hard_link(bin(name), &target).is_err() {
        std::fs::copy(bin(name), &target).unwrap();
        std::fs::set_permissions(&target, crossable).unwrap();
    }
    target
}

/// The blocking HTTP client of the e2e tests, bounded at 30 s a request.
/// Posts a heartbeat naming `pod` of `pool` in `default` (idle, every counter zero) with `token`
/// to the operator's `url`; returns the status.
pub fn post_heartbeat(url: &str, token: &str, pod: &str, pool: &str) -> u16 {
    http()
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"pod": pod, "namespace": "default", "pool": pool, "seq": 1,
            "sentAt": "2026-11-30T00:00:00Z", "startedAt": "2026-11-30T00:00:00Z", "state": "idle",
            "session": null, "rssBytes": 1, "cpuPercent": 0.0, "namespaceSize": 0, "interpreterRestarts": 0,
            "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
            "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0, "maxQueueDepth": 0, "drainTimeouts": 0},
            "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0, "timedOut": 0, "cancelled": 0},
            "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}}))
        .send()
        .expect("heartbeat request")
        .status()
        .as_u16()
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then SIGKILLs it.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

/// A running `capsule-devcluster serve`.
pub struct DevCluster {
    pub process: Process,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub state_dir: PathBuf,
}

impl DevCluster {
    /// Starts the devcluster with its kubelet mapping the worker and sidecar images to this
    /// workspace's binaries.
    pub fn start(state_dir: &Path) -> DevCluster {
        Self::start_with_image_maps(state_dir, &[])
    }

    /// Starts the devcluster and installs the generated Capsule CRDs with kubectl.
    pub fn start_with_crds(state_dir: &Path) -> DevCluster {
        let cluster = Self::start(state_dir);
        cluster.install_crds();
        cluster
    }

    /// Installs the generated Capsule CRDs with kubectl.
    pub fn install_crds(&self) {
        let crds = workspace().join("crds/capsule.dev_crds.yaml");
        self.kubectl(&["apply", "-f", crds.to_str().unwrap()]);
    }

    /// Like [`DevCluster::start`], with more `--image-map PATTERN=COMMAND` entries after the
    /// worker's and the sidecar's (e.g. the operator image, for the Helm chart's Deployment).
    pub fn start_with_image_maps(state_dir: &Path, extra_image_maps: &[String]) -> DevCluster {
        let args: Vec<String> = extra_image_maps
            .iter()
            .flat_map(|m| ["--image-map".to_string(), m.clone()])
            .collect();
        Self::start_with_args(state_dir, &args)
    }

    /// Like [`DevCluster::start`], with more `capsule-devcluster serve` arguments (e.g.
    /// `--image-root`, whose entries win over the default image maps).
    pub fn start_with_args(state_dir: &Path, extra_args: &[String]) -> DevCluster {
        Self::start_configured(state_dir, extra_args, None)
    }

    /// Like [`DevCluster::start`], logging every API request it serves (see
    /// [`DevCluster::requests`]).
    pub fn start_logging_requests(state_dir: &Path) -> DevCluster {
        Self::start_configured(state_dir, &[], Some(REQUEST_LOG_FILTER))
    }

    /// The API requests served so far, in order, when started with
    /// [`DevCluster::start_logging_requests`].
    pub fn requests(&self) -> Vec<ApiRequest> {
        let log = std::fs::read_to_string(self.state_dir.join("devcluster.log")).unwrap();
        log.lines().filter_map(ApiRequest::parse).collect()
    }

    /// Starts it with more `serve` arguments and, when given, its `RUST_LOG`
    /// ([`REQUEST_LOG_FILTER`] logs every request).
    pub fn start_configured(
        state_dir: &Path,
        extra_args: &[String],
        rust_log: Option<&str>,
    ) -> DevCluster {
        let worker = reachable_bin(state_dir, "capsule-worker");
        let sidecar = reachable_bin(state_dir, "capsule-sidecar");
        let mut command = Command::new(bin("capsule-devcluster"));
        command
            .arg("serve")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--image-map")
            .arg(format!("capsule-worker:*={}", worker.display()))
            .arg("--image-map")
            .arg(format!("capsule-sidecar:*={}", sidecar.display()));
        command.args(extra_args);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(state_dir.join("devcluster.log")).unwrap(),
            ))
            .spawn()
            .expect("devcluster starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        assert!(
            line.starts_with("ready "),
            "devcluster did not start: {line:?}"
        );
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} missing from {line:?}"))
                .to_string()
        };
        DevCluster {
            kubeconfig: PathBuf::from(field("kubeconfig=")),
            url: field("url="),
            state_dir: state_dir.to_path_buf(),
            process: Process {
                child,
                name: "capsule-devcluster".into(),
            },
        }
    }

    /// Runs kubectl against the devcluster; panics with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with optional stdin; returns its raw output.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut cmd = Command::new(tool("kubectl"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_output(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A jsonpath of an object, or "" while it does not exist.
    pub fn jsonpath(&self, kind_name: &[&str], path: &str) -> String {
        let mut args: Vec<&str> = vec!["get"];
        args.extend_from_slice(kind_name);
        let expr = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &expr]);
        let out = self.kubectl_output(&args, None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// How to run one `capsule-operator run` process against the devcluster.
/// The devcluster's `RUST_LOG` that logs every API request it serves.
pub const REQUEST_LOG_FILTER: &str = "info,capsule_devcluster::api=debug";

/// `line` without the terminal colour codes tracing writes even to a file.
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        rest = match rest[at..].find('m') {
            Some(end) => &rest[at + end + 1..],
            None => "",
        };
    }
    plain.push_str(rest);
    plain
}

/// The samples of metric `name` in a Prometheus text exposition: each series' labels (the text
/// between the braces, empty without any) and its value.
pub fn metric_samples<'a>(
    text: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The value of label `key` in a series' labels as [`metric_samples`] gives them.
pub fn metric_label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        pair.strip_prefix(key)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

/// A kube client acting as the user of `kubeconfig` (the devcluster's admin, or another).
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("the devcluster's kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client config from the kubeconfig");
    kube::Client::try_from(config).expect("a kube client")
}

/// The operator as a benchmark runs it: its `RUST_LOG` from `CAPSULE_BENCH_OPERATOR_LOG` (default
/// `warn`), its log in `state`.
pub fn start_bench_operator(
    cluster: &DevCluster,
    port: u16,
    status_interval_seconds: u64,
    state: &Path,
) -> Process {
    let mut run = OperatorRun::on_port(port);
    run.status_interval_seconds = status_interval_seconds;
    run.rust_log = std::env::var("CAPSULE_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into());
    run.start(cluster, &state.join("operator.log"))
}

/// Ends a benchmark run: writes its figures to `json` when asked, stops the devcluster and removes
/// the state directory unless `CAPSULE_BENCH_KEEP` is set.
pub fn finish_bench(
    figures: &serde_json::Value,
    json: Option<&Path>,
    cluster: DevCluster,
    state: &Path,
) -> std::io::Result<()> {
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(figures)?)?;
    }
    drop(cluster);
    if std::env::var_os("CAPSULE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(state);
    }
    Ok(())
}

/// One request in the devcluster's request log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub agent: String,
}

impl ApiRequest {
    fn parse(line: &str) -> Option<ApiRequest> {
        let line = without_colours(line);
        let fields = line.split_once(" request ")?.1;
        let field = |key: &str| {
            fields
                .split(' ')
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        Some(ApiRequest {
            method: field("method=")?,
            uri: field("uri=")?,
            agent: field("agent=").unwrap_or_default(),
        })
    }

    /// A watch, which stays open rather than reading once.
    pub fn is_watch(&self) -> bool {
        self.uri.contains("watch=true") || self.uri.contains("watch=1")
    }

    /// A request of the operator (by its User-Agent) other than a watch.
    pub fn is_operator_call(&self) -> bool {
        self.agent.starts_with("capsule-operator/") && !self.is_watch()
    }
}

pub struct OperatorRun {
    /// Port of its HTTP server on 127.0.0.1.
    pub port: u16,
    /// Port workers send heartbeats to (default: `port`).
    pub heartbeat_port: Option<u16>,
    pub status_interval_seconds: u64,
    pub rust_log: String,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl OperatorRun {
    pub fn on_port(port: u16) -> Self {
        OperatorRun {
            port,
            heartbeat_port: None,
            status_interval_seconds: 1,
            rust_log: "info,kube=warn".into(),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Starts it, its stderr going to `log`.
    pub fn start(&self, cluster: &DevCluster, log: &Path) -> Process {
        let heartbeat_port = self.heartbeat_port.unwrap_or(self.port);
        let mut cmd = Command::new(bin("capsule-operator"));
        cmd.arg("run")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--heartbeat-url")
            .arg(format!("http://127.0.0.1:{heartbeat_port}/v1/heartbeats"))
            .arg("--sidecar-image")
            .arg("capsule-sidecar:dev")
            .arg("--status-interval-seconds")
            .arg(self.status_interval_seconds.to_string())
            .args(&self.extra_args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Process {
            child: cmd.spawn().expect("operator starts"),
            name: "capsule-operator".into(),
        }
    }
}

/// Starts `capsule-operator run` against the devcluster, serving on `port`.
pub fn start_operator(
    cluster: &DevCluster,
    port: u16,
    log: &Path,
    extra_env: &[(&str, &str)],
) -> Process {
    let mut run = OperatorRun::on_port(port);
    run.env = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    run.start(cluster, log)
}

/// Starts `capsule-gateway` on `port` and waits until its caches listed.
pub fn start_gateway(cluster: &DevCluster, port: u16, log: &std::path::Path) -> Process {
    let child = Command::new(bin("capsule-gateway"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "debug,kube=warn,hyper=info,reqwest=info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("capsule-gateway starts");
    let process = Process {
        child,
        name: "capsule-gateway".into(),
    };
    wait_for(
        "the gateway ready",
        Duration::from_secs(30),
        || match http().get(format!("http://127.0.0.1:{port}/readyz")).send() {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        },
    );
    process
}

/// Waits until session `name` is in `phase`; the failure names the phase and condition it was in.
pub fn wait_session_phase(cluster: &DevCluster, name: &str, phase: &str, timeout: Duration) {
    wait_for(&format!("session {name} {phase}"), timeout, || {
        let got = cluster.jsonpath(&["csess", name], "{.status.phase}");
        if got == phase {
            Ok(())
        } else {
            let message = cluster.jsonpath(&["csess", name], "{.status.conditions[0].message}");
            Err(format!("phase={got:?} ({message})"))
        }
    });
}

/// The token of a bound session, read from the Secret its status names.
pub fn session_token(cluster: &DevCluster, name: &str) -> String {
    use base64::Engine;
    let secret = cluster.jsonpath(&["csess", name], "{.status.tokenSecret.name}");
    let encoded = cluster.jsonpath(&["secret", &secret], "{.data.token}");
    let token = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("the token Secret holds base64");
    String::from_utf8(token).expect("the token is text")
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what` and the last value.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
}

#[cfg(test)]
mod metric_text_tests {
    use super::{metric_label, metric_samples};

    #[test]
    fn samples_of_one_family_with_their_labels_and_nothing_of_a_longer_name() {
        let text = "# HELP capsule_x_total X.\ncapsule_x_total{pool=\"a\",reason=\"stale\"} 3\n\
                    capsule_x_total 2\ncapsule_x_total_other 9\ncapsule_x_created{pool=\"a\"} 1\n";
        let samples: Vec<_> = metric_samples(text, "capsule_x_total").collect();
        assert_eq!(samples, [("pool=\"a\",reason=\"stale\"", 3.0), ("", 2.0)]);
        assert_eq!(metric_label(samples[0].0, "reason"), Some("stale"));
        assert_eq!(metric_label(samples[0].0, "pool"), Some("a"));
        assert_eq!(metric_label(samples[0].0, "son"), None);
    }
}
