//! `capsule-worker`: the worker pod's main container. Configuration: env vars (see README.md).
//!
//! Prints one line `capsule-worker listening on <addr>` on stdout once the API is bound (so a
//! parent that asked for port 0 learns the port); logs go to stderr.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use capsule_worker::config::Config;
use capsule_worker::fork_server::connect;
use capsule_worker::runtime::Runtime;
use capsule_worker::{api, heartbeat, logging, Error};

/// How long running code may take to notice a shutdown before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn main() {
    let fork_server_argument = std::env::args().nth(1).as_deref() == Some("fork-server");
    if fork_server_argument || std::env::var_os(connect::CONNECT_ENV).is_some() {
        fork_server_main(fork_server_argument);
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    logging::init(config.log_format);
    if let Err(error) = capsule_protocol::auth::keep_credentials_from_same_uid() {
        tracing::warn!(%error, "could not make the worker non-dumpable");
    }
    let runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(serve(config)) {
        tracing::error!(%error, "capsule-worker failed");
        std::process::exit(1);
    }
}

/// `capsule-worker fork-server` (or `CAPSULE_FORK_SERVER_CONNECT` set): the interpreter container's
/// entrypoint; never returns.
fn fork_server_main(skip_argument: bool) -> ! {
    use clap::Parser;
    let args = std::env::args_os().skip(usize::from(skip_argument));
    let args = match connect::ForkServerArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    eprintln!("capsule-worker fork-server: {}", connect::run(&args));
    std::process::exit(1);
}

async fn serve(config: Config) -> Result<(), Error> {
    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr()?;
    let runtime = Runtime::start(config);
    let (stop_heartbeats, heartbeats_stopping) = tokio::sync::watch::channel(false);
    let heartbeats = runtime
        .config
        .heartbeat_url
        .clone()
        .map(|url| tokio::spawn(heartbeat::run(runtime.clone(), url, heartbeats_stopping)));
    tracing::info!(addr = %local, pool = %runtime.config.pool, pod = %runtime.config.pod_name, "capsule-worker listening");
    {
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "capsule-worker listening on {local}");
        let _ = stdout.flush();
    }
    let app = api::router(runtime.clone());
    // Without TCP_NODELAY a streamed reply's small final chunk waits on delayed ACKs (~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app);
    tokio::select! {
        result = server => result?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down: rejecting pending promises");
            runtime.draining.store(true, Relaxed);
            runtime.bridge.shutdown("the worker is shutting down").await;
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            while runtime.executor.active() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Let the connection tasks write the final events they were just handed.
            tokio::time::sleep(Duration::from_millis(200)).await;
            // The last heartbeat carries the counters of the executions that just finished.
            stop_heartbeats.send_replace(true);
            if let Some(task) = heartbeats {
                let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
