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
    /// The container runs from its image ([`super::sandbox`]): the probe enters its namespaces.
    pub in_image: Option<InImage>,
}

/// What an exec probe of a container run from its image needs to join it.
#[derive(Clone, Copy, Debug)]
pub struct InImage {
    /// The shim outside the container's PID namespace; its child is the container's PID 1.
    pub shim_pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The container's PID 1 (as the host sees it): the shim's only child.
fn container_pid(shim_pid: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{shim_pid}/task/{shim_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// `nsenter` into the container's mount and PID namespaces, its root and working directory, as its
/// uid and gid (supplementary groups dropped); `no_new_privs` on the way in.
fn enter_command(target: &InImage, program: &str, args: &[String]) -> Result<Command, String> {
    let pid = container_pid(target.shim_pid)
        .ok_or_else(|| "the container's first process is gone".to_string())?;
    // By path: the probe's PATH is the container's, not the host's.
    let nsenter = ["/usr/bin/nsenter", "/bin/nsenter"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nsenter");
    let mut command = Command::new(nsenter);
    command
        .arg(format!("--target={pid}"))
        .args(["--mount", "--pid", "--root", "--wd"])
        .arg(format!("--setuid={}", target.uid))
        .arg(format!("--setgid={}", target.gid))
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear();
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
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
    let mut command = match &exec.in_image {
        Some(target) => match enter_command(target, program, args) {
            Ok(command) => command,
            Err(message) => return ProbeOutcome::Failure(message),
        },
        None => {
            let mut command = Command::new(program);
            command
                .args(args)
                .env_clear()
                .envs(std::env::var_os("PATH").map(|path| ("PATH".to_owned(), path)))
                .current_dir(&exec.working_dir);
            command
        }
    };
    let status = command
        .envs(exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
