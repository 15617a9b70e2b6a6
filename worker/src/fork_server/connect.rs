//! `capsule-worker fork-server`: the entrypoint of the pod's interpreter container. It connects to
//! the worker's socket and becomes the fork server (`exec` of Python with the zygote's source, the
//! connection as fd 0), so the fork server is the container's first process: when it ends, every
//! interpreter of the container ends with it.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::socket::connect_to;
use super::zygote_command;

/// Set in the interpreter container: `capsule-worker` then runs as its fork server, without the
/// `fork-server` argument, so any image map or entrypoint that runs the worker runs it too.
pub const CONNECT_ENV: &str = "CAPSULE_FORK_SERVER_CONNECT";

/// How long the worker container may take to start listening.
const CONNECT_PATIENCE: Duration = Duration::from_secs(120);
const CONNECT_RETRY: Duration = Duration::from_millis(50);

/// Settings of the interpreter container, from its environment.
#[derive(Debug, clap::Parser)]
#[command(name = "capsule-worker fork-server")]
pub struct ForkServerArgs {
    /// The worker's socket (its `CAPSULE_FORK_SERVER_SOCKET`), in a volume both containers mount.
    #[arg(long, env = CONNECT_ENV)]
    pub socket: PathBuf,
    #[arg(long, env = "CAPSULE_PYTHON", default_value = "python3")]
    pub python: String,
}

/// Connects and `exec`s the fork server; returns only the reason it could not.
pub fn run(args: &ForkServerArgs) -> String {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let connection = loop {
        match connect_to(&args.socket) {
            Ok(connection) => break connection,
            Err(error) if Instant::now() >= deadline => {
                return format!(
                    "cannot connect to the worker at {} ({CONNECT_ENV}): {error}",
                    args.socket.display()
                );
            }
            Err(_) => std::thread::sleep(CONNECT_RETRY),
        }
    };
    // SAFETY: dup2 onto fd 0 of descriptors this process owns; the copy on fd 0 is not
    // close-on-exec, so the fork server finds the connection there.
    if unsafe { libc::dup2(connection.as_raw_fd(), 0) } < 0 {
        return format!("dup2: {}", std::io::Error::last_os_error());
    }
    drop(connection);
    let mut command = zygote_command(&args.python);
    let error = command.exec();
    format!("cannot run {}: {error}", args.python)
}
