//! Worker configuration, read from the environment variables the operator sets on the pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What the output pump does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum Backpressure {
    /// Wait for the client to take output (loses nothing; the code pauses).
    Block,
    /// Drop the new chunk (counted).
    DropNew,
    /// Drop the oldest queued chunk to make room (counted).
    DropOldest,
    /// Fail the execution with `OutputQueueFull`.
    Error,
}

impl Backpressure {
    pub fn as_str(self) -> &'static str {
        match self {
            Backpressure::Block => "Block",
            Backpressure::DropNew => "DropNew",
            Backpressure::DropOldest => "DropOldest",
            Backpressure::Error => "Error",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `capsule-worker`: runs users' Python code in one persistent interpreter and serves the execute API.
#[derive(Debug, Clone, Parser)]
#[command(name = "capsule-worker", version, about)]
pub struct Config {
    /// Pod name (downward API).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Pod namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    /// Pod IP (downward API); the API listens on it when CAPSULE_LISTEN_ADDR is unset.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// Name of the CapsulePool this worker belongs to.
    #[arg(long, env = "CAPSULE_POOL", default_value = "")]
    pub pool: String,
    /// Address of the HTTP API (default `$POD_IP:8000`, else `127.0.0.1:8000`).
    #[arg(long, env = "CAPSULE_LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Full URL heartbeats are POSTed to; unset = no heartbeats.
    #[arg(long, env = "CAPSULE_HEARTBEAT_URL")]
    pub heartbeat_url: Option<String>,
    /// This worker's own credential: bearer on heartbeats and on the session-binding calls.
    #[arg(long, env = "CAPSULE_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, env = "CAPSULE_HEARTBEAT_INTERVAL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_interval_seconds: u64,
    /// Python executable.
    #[arg(long, env = "CAPSULE_PYTHON", default_value = "python3")]
    pub python: String,
    /// Python code run after each interpreter start, before the worker reports ready.
    #[arg(long, env = "CAPSULE_WARMUP_CODE")]
    pub warmup_code: Option<String>,
    /// Output chunks the pump holds per execution before the backpressure policy applies.
    #[arg(long, env = "CAPSULE_OUTPUT_QUEUE_CAPACITY", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub output_queue_capacity: u64,
    /// Backpressure policy of the output pump.
    #[arg(long, env = "CAPSULE_BACKPRESSURE", value_enum, default_value_t = Backpressure::Block)]
    pub backpressure: Backpressure,
    /// How long the client may take to drain the output queue, in milliseconds.
    #[arg(long, env = "CAPSULE_DRAIN_TIMEOUT_MS", default_value_t = 5000)]
    pub drain_timeout_ms: u64,
    /// How long an `input()` request waits for an answer, in milliseconds.
    #[arg(long, env = "CAPSULE_INPUT_TIMEOUT_MS", default_value_t = 300_000)]
    pub input_timeout_ms: u64,
    /// How long a promise created without a timeout waits to be settled, in milliseconds.
    #[arg(long, env = "CAPSULE_PROMISE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub promise_timeout_ms: u64,
    /// How long a cancel's KeyboardInterrupt may take before the interpreter is killed, in ms.
    #[arg(long, env = "CAPSULE_CANCEL_GRACE_MS", default_value_t = 2000)]
    pub cancel_grace_ms: u64,
    /// Executions that may wait behind the running one; more get 429.
    #[arg(long, env = "CAPSULE_EXECUTION_QUEUE_LIMIT", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub execution_queue_limit: u64,
    /// Largest request body accepted, in bytes; more gets 413.
    #[arg(long, env = "CAPSULE_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=8 * 1024 * 1024))]
    pub max_request_bytes: u64,
    /// Path of the sidecar's Unix socket for trace events; unset = no trace events.
    #[arg(long, env = "CAPSULE_TRACE_SOCKET")]
    pub trace_socket: Option<PathBuf>,
    /// How long trace events gather before one batched write, in ms (0..=1000); 0 writes as soon
    /// as the writer task runs.
    #[arg(long, env = "CAPSULE_TRACE_LINGER_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub trace_linger_ms: u64,
    /// Runtime threads: 1 runs everything on one thread (lowest round-trip latency); more use a
    /// multi-threaded runtime.
    #[arg(long, env = "CAPSULE_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub worker_threads: u64,
    /// Log format on stderr.
    #[arg(long, env = "CAPSULE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Keep the next interpreter started and warmed in the background, so a reset or a crash
    /// swaps it in at once (costs one more interpreter's memory).
    #[arg(long, env = "CAPSULE_STANDBY_INTERPRETER", default_value_t = true, action = clap::ArgAction::Set)]
    pub standby_interpreter: bool,
    /// Where each interpreter gets its private working directory; default: a folder of this
    /// process under the system temp dir.
    #[arg(long, env = "CAPSULE_SCRATCH_DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Where the pod's interpreter container connects its fork server (`capsule-worker
    /// fork-server`); unset = the worker starts the fork server itself, under its own uid.
    #[arg(long, env = "CAPSULE_FORK_SERVER_SOCKET")]
    pub fork_server_socket: Option<PathBuf>,
    /// Root of the checkpoint store (a directory on the scratch volume or a mounted
    /// PersistentVolume); unset = checkpoints disabled (503). See docs/checkpoints.md.
    #[arg(long, env = "CAPSULE_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Largest stored (compressed and sealed) checkpoint, in bytes; larger ones are refused (413).
    #[arg(long, env = "CAPSULE_CHECKPOINT_MAX_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024 * 1024))]
    pub checkpoint_max_bytes: u64,
    /// Newest checkpoints kept per session; older ones are deleted.
    #[arg(long, env = "CAPSULE_CHECKPOINT_KEEP", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub checkpoint_keep: u64,
    /// Checkpoint automatically after a successful execution that took at least this long (ms);
    /// unset = off.
    #[arg(long, env = "CAPSULE_CHECKPOINT_AFTER_MS", value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub checkpoint_after_ms: Option<u64>,
    /// Checkpoint automatically after this long idle when the namespace may have changed since
    /// the last one (seconds); unset = off.
    #[arg(long, env = "CAPSULE_CHECKPOINT_IDLE_SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub checkpoint_idle_seconds: Option<u64>,
}

impl Config {
    /// The address the API binds.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr.unwrap_or_else(|| match self.pod_ip {
            Some(ip) => SocketAddr::new(ip, 8000),
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_seconds)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn cancel_grace(&self) -> Duration {
        Duration::from_millis(self.cancel_grace_ms)
    }

    /// The folder interpreters' working directories are made in.
    pub fn scratch_dir(&self) -> PathBuf {
        self.scratch_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("capsule-worker-{}", std::process::id()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_backpressure_names_the_accepted_values() {
        let error = Config::try_parse_from(["capsule-worker", "--backpressure", "Sometimes"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("Block") && error.contains("DropOldest"),
            "{error}"
        );
    }

    #[test]
    fn listen_addr_defaults() {
        let config = Config::try_parse_from(["capsule-worker"]).unwrap();
        assert_eq!(config.listen_addr().to_string(), "127.0.0.1:8000");
        let config = Config::try_parse_from(["capsule-worker", "--pod-ip", "10.0.0.7"]).unwrap();
        assert_eq!(config.listen_addr().to_string(), "10.0.0.7:8000");
    }
}

impl Config {
    /// Parses the command line and environment; an invalid value becomes an error that names the
    /// environment variable, the flag and the accepted values.
    pub fn load() -> Result<Config, String> {
        Config::try_parse().map_err(|error| describe_parse_error(&error))
    }
}

fn describe_parse_error(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let rendered = error.render().to_string();
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return rendered;
    };
    let long = flag
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let command = Config::command();
    let env = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long.as_str()))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("invalid value for {env} (--{long}): {rendered}"),
        None => rendered,
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn checkpoint_settings_are_validated_by_name() {
        let error =
            Config::try_parse_from(["capsule-worker", "--checkpoint-keep", "0"]).unwrap_err();
        let message = describe_parse_error(&error);
        assert!(message.contains("CAPSULE_CHECKPOINT_KEEP"), "{message}");
        let error = Config::try_parse_from(["capsule-worker", "--checkpoint-max-bytes", "1MB"])
            .unwrap_err();
        let message = describe_parse_error(&error);
        assert!(
            message.contains("CAPSULE_CHECKPOINT_MAX_BYTES"),
            "{message}"
        );
        let config = Config::try_parse_from(["capsule-worker"]).unwrap();
        assert_eq!(config.checkpoint_keep, 3);
        assert_eq!(config.checkpoint_max_bytes, 256 * 1024 * 1024);
        assert!(config.checkpoint_dir.is_none() && config.checkpoint_after_ms.is_none());
    }

    #[test]
    fn parse_error_names_the_environment_variable() {
        let error =
            Config::try_parse_from(["capsule-worker", "--drain-timeout-ms", "soon"]).unwrap_err();
        let message = describe_parse_error(&error);
        assert!(message.contains("CAPSULE_DRAIN_TIMEOUT_MS"), "{message}");
    }
}
