//! Readiness, liveness and startup probes, run for real: an HTTP GET, a TCP connect or a command.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::Command;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    /// Runs the command (argv) with the container's environment and working directory; exit 0 passes.
    Exec { argv: Vec<String> },
    /// HTTP GET; a status in 200..400 passes. Only `http` is supported (the scheme is not checked).
    HttpGet {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection that opens passes.
    TcpSocket { host: String, port: u16 },
    /// A probe kind the devcluster does not run (gRPC): it always passes, and says so once.
    Unsupported { kind: String },
}

#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    pub fn new(action: ProbeAction) -> Self {
        // Kubernetes defaults.
        ProbeSpec {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// What an exec probe runs with.
#[derive(Clone, Debug, Default)]
pub struct ExecContext {
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// The container runs in its image's root filesystem, where a host command would be wrong.
    pub in_image: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure(String),
}

pub async fn run_probe(
    action: &ProbeAction,
    timeout: Duration,
    exec: &ExecContext,
) -> ProbeOutcome {
    let attempt = async {
        match action {
            ProbeAction::Exec { argv } => exec_probe(argv, exec).await,
            ProbeAction::HttpGet {
                host,
                port,
                path,
                headers,
            } => http_probe(host, *port, path, headers).await,
            ProbeAction::TcpSocket { host, port } => {
                match TcpStream::connect((host.as_str(), *port)).await {
                    Ok(_) => ProbeOutcome::Success,
                    Err(error) => ProbeOutcome::Failure(format!("dial tcp {host}:{port}: {error}")),
                }
            }
            ProbeAction::Unsupported { .. } => ProbeOutcome::Success,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failure(format!("probe timed out after {timeout:?}")),
    }
}

async fn exec_probe(argv: &[String], exec: &ExecContext) -> ProbeOutcome {
    let Some((program, args)) = argv.split_first() else {
        return ProbeOutcome::Failure("exec probe has no command".into());
    };
    if exec.in_image {
        // Entering the container's namespaces, root and credentials for a probe is not done yet.
        return ProbeOutcome::Failure(
            "exec probes are not supported for containers run from images (--image-root): use an httpGet or tcpSocket probe".into(),
        );
    }
    let status = Command::new(program)
        .args(args)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH".to_owned(), path)))
        .envs(exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&exec.working_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(status) if status.success() => ProbeOutcome::Success,
        Ok(status) => ProbeOutcome::Failure(format!("command exited with {status}")),
        Err(error) => ProbeOutcome::Failure(format!("command could not start: {error}")),
    }
}

async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> ProbeOutcome {
    let failure = |what: &str, error: &dyn std::fmt::Display| {
        ProbeOutcome::Failure(format!("GET http://{host}:{port}{path}: {what}: {error}"))
    };
    let stream = match TcpStream::connect((host, port)).await {
        Ok(stream) => stream,
        Err(error) => return failure("connect", &error),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(error) => return failure("handshake", &error),
        };
    let connection = tokio::spawn(connection);
    let mut request = http::Request::get(if path.is_empty() { "/" } else { path })
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::USER_AGENT, "capsule-kubelet-probe");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = match request.body(Empty::<bytes::Bytes>::new()) {
        Ok(request) => request,
        Err(error) => return failure("request", &error),
    };
    let outcome = match sender.send_request(request).await {
        Ok(response) if (200..400).contains(&response.status().as_u16()) => ProbeOutcome::Success,
        Ok(response) => ProbeOutcome::Failure(format!(
            "GET http://{host}:{port}{path}: status {}",
            response.status().as_u16()
        )),
        Err(error) => failure("response", &error),
    };
    connection.abort();
    outcome
}
