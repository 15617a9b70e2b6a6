//! The reader of the measured worker's trace socket, so the round trip is measured with tracing on:
//! the real `capsule-sidecar` when it was built next to this bench (`make bench` builds it), else a
//! stand-in that reads and discards the frames (named in the report).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

use super::fail;

pub(crate) struct TracePeer {
    socket: PathBuf,
    sidecar: Option<tokio::process::Child>,
}

impl TracePeer {
    pub(crate) async fn start() -> TracePeer {
        let socket = std::env::temp_dir().join(format!(
            "capsule-worker-bench-{}.trace.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&socket);
        // Next to this bench, not to `--worker-bin`: an older worker is measured with the same peer.
        let sidecar_bin = std::env::current_exe()
            .unwrap_or_else(|e| fail(&format!("own path: {e}")))
            .with_file_name("capsule-sidecar");
        let sidecar = if sidecar_bin.exists() {
            Some(start_sidecar(&sidecar_bin, &socket).await)
        } else {
            start_stand_in(&socket);
            None
        };
        TracePeer { socket, sidecar }
    }

    pub(crate) fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap_or_default()
    }

    pub(crate) fn name(&self) -> &'static str {
        if self.sidecar.is_some() {
            "capsule-sidecar"
        } else {
            "stand-in reader (capsule-sidecar not built)"
        }
    }
}

impl Drop for TracePeer {
    fn drop(&mut self) {
        if let Some(sidecar) = &mut self.sidecar {
            let _ = sidecar.start_kill();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn start_sidecar(bin: &std::path::Path, socket: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(bin)
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_TRACE_SOCKET", socket)
        .env("CAPSULE_WORKER_TOKEN", "bench-sidecar-token")
        .env("KUBECONFIG", "/nonexistent")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", bin.display())));
    // The worker's trace writer backs off when the socket is missing: start it only once it exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if Instant::now() > deadline {
            fail("capsule-sidecar did not open its trace socket");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child
}

fn start_stand_in(socket: &std::path::Path) {
    let listener = UnixListener::bind(socket)
        .unwrap_or_else(|e| fail(&format!("cannot bind {}: {e}", socket.display())));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while let Ok(1..) = stream.read(&mut sink).await {}
            });
        }
    });
}
