//! Configuration from the environment (every variable is also a `--flag`), as the operator writes
//! it into the sidecar container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, Result};
use crate::rate_limit::Rate;
use crate::redaction::Redaction;

/// One introspection view; each is off unless the pool's policy lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum View {
    Traces,
    Promises,
    Namespace,
    Counters,
    Pool,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Traces,
        View::Promises,
        View::Namespace,
        View::Counters,
        View::Pool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::Traces => "Traces",
            View::Promises => "Promises",
            View::Namespace => "Namespace",
            View::Counters => "Counters",
            View::Pool => "Pool",
        }
    }

    pub fn parse(text: &str) -> Option<View> {
        View::ALL
            .into_iter()
            .find(|view| view.name().eq_ignore_ascii_case(text.trim()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `capsule-sidecar` settings.
#[derive(Debug, Clone, Parser)]
#[command(name = "capsule-sidecar", version, about)]
pub struct Config {
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    #[arg(long, env = "POD_IP", default_value = "")]
    pub pod_ip: String,
    /// The pool's name (the SubjectAccessReview's resource name).
    #[arg(long, env = "CAPSULE_POOL", default_value = "")]
    pub pool: String,
    /// The worker pod's credential: key of the keyed hash, and bearer towards the worker's stats.
    #[arg(
        long,
        env = "CAPSULE_WORKER_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub worker_token: String,
    /// HTTP address; default `$POD_IP:8001`, else `127.0.0.1:8001`.
    #[arg(long, env = "CAPSULE_LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    #[arg(
        long,
        env = "CAPSULE_TRACE_SOCKET",
        default_value = "/var/run/capsule/trace.sock"
    )]
    pub trace_socket: PathBuf,
    /// Most events buffered (1..=10,000,000).
    #[arg(long, env = "CAPSULE_TRACE_MAX_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub trace_max_events: u64,
    /// Oldest event kept, in seconds (1..=604,800).
    #[arg(long, env = "CAPSULE_TRACE_MAX_AGE_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub trace_max_age_seconds: u64,
    /// Hard cap on the buffer's memory, in bytes (64 KiB..=1 GiB).
    #[arg(long, env = "CAPSULE_TRACE_MAX_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(65_536..=1_073_741_824))]
    pub trace_max_bytes: u64,
    #[arg(
        long,
        env = "CAPSULE_TRACE_REDACTION",
        value_enum,
        default_value = "Hash"
    )]
    pub trace_redaction: Redaction,
    /// Comma list among Traces,Promises,Namespace,Counters,Pool; empty = introspection off.
    #[arg(long, env = "CAPSULE_INTROSPECTION_VIEWS", default_value = "")]
    pub introspection_views: String,
    #[arg(
        long,
        env = "CAPSULE_INTROSPECTION_REDACTION",
        value_enum,
        default_value = "Hash"
    )]
    pub introspection_redaction: Redaction,
    #[arg(long, env = "CAPSULE_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit: bool,
    /// Introspection requests per second one client (peer IP) may make (1..=10,000).
    #[arg(long, env = "CAPSULE_INTROSPECTION_CLIENT_RATE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub introspection_client_rate: u32,
    /// Requests one client may make at once above its rate (1..=10,000).
    #[arg(long, env = "CAPSULE_INTROSPECTION_CLIENT_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub introspection_client_burst: u32,
    /// Introspection requests per second over all clients (1..=100,000).
    #[arg(long, env = "CAPSULE_INTROSPECTION_GLOBAL_RATE", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub introspection_global_rate: u32,
    /// Requests all clients may make at once above the overall rate (1..=100,000).
    #[arg(long, env = "CAPSULE_INTROSPECTION_GLOBAL_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub introspection_global_burst: u32,
    /// The worker's API; default `http://$POD_IP:8000`, else `http://127.0.0.1:8000`.
    #[arg(long, env = "CAPSULE_WORKER_URL")]
    pub worker_url: Option<String>,
    #[arg(long, env = "CAPSULE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    pub fn listen(&self) -> SocketAddr {
        if let Some(addr) = self.listen_addr {
            return addr;
        }
        match self.pod_ip.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 8001),
            Err(_) => SocketAddr::from(([127, 0, 0, 1], 8001)),
        }
    }

    pub fn worker_base_url(&self) -> String {
        match &self.worker_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if !self.pod_ip.is_empty() => format!("http://{}:8000", self.pod_ip),
            None => "http://127.0.0.1:8000".to_owned(),
        }
    }

    /// The introspection rate limits (per client and overall).
    pub fn introspection_rates(&self) -> (Rate, Rate) {
        (
            Rate {
                per_second: f64::from(self.introspection_client_rate),
                burst: f64::from(self.introspection_client_burst),
            },
            Rate {
                per_second: f64::from(self.introspection_global_rate),
                burst: f64::from(self.introspection_global_burst),
            },
        )
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.trace_max_age_seconds)
    }

    /// The enabled views; an unknown name is a configuration error rather than silently ignored.
    pub fn enabled_views(&self) -> Result<Vec<View>> {
        let mut views = Vec::new();
        for name in self
            .introspection_views
            .split(',')
            .filter(|n| !n.trim().is_empty())
        {
            let view = View::parse(name).ok_or_else(|| {
                Error::Config(format!(
                    "CAPSULE_INTROSPECTION_VIEWS (--introspection-views): unknown view {:?}; accepted: Traces,Promises,Namespace,Counters,Pool",
                    name.trim()
                ))
            })?;
            if !views.contains(&view) {
                views.push(view);
            }
        }
        Ok(views)
    }
}
