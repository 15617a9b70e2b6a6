//! One run of a container: a local process in its own process group, which dies with the kubelet.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::log_sink::LogSink;
use super::reaper::Reaper;
use super::sandbox::Sandbox;
use crate::error::{Error, Result};

/// Variables a pod process gets from the kubelet's own environment; everything else comes from
/// the pod spec, as in a container.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];

/// Output from a group that outlives its leader is not worth waiting for forever.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Executable first, then its arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// What the container's securityContext asks of the process.
    pub security: ProcessSecurity,
    /// Run inside an image's root filesystem ([`Sandbox`]): then `working_dir`, `security` and the
    /// kubelet's own environment do not apply; the sandbox carries the container's own.
    pub sandbox: Option<Arc<Sandbox>>,
}

/// The parts of a securityContext a process can be held to without a container runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSecurity {
    /// `(uid, gid)` from `runAsUser` / `runAsGroup`; None runs as the kubelet's user.
    pub user: Option<(u32, u32)>,
    /// `allowPrivilegeEscalation: false`: `PR_SET_NO_NEW_PRIVS`, so setuid binaries gain nothing.
    pub no_new_privileges: bool,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitOutcome {
    pub exit_code: i32,
    pub signal: Option<i32>,
}

impl From<ExitStatus> for ExitOutcome {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitOutcome {
                exit_code: code,
                signal: None,
            },
            // A container killed by a signal reports 128 + signal number, as container runtimes do.
            (None, Some(signal)) => ExitOutcome {
                exit_code: 128 + signal,
                signal: Some(signal),
            },
            (None, None) => ExitOutcome {
                exit_code: 255,
                signal: None,
            },
        }
    }
}

/// What the child does between fork and exec: die with the kubelet, no_new_privs, and enter
/// its sandbox when it has one.
fn before_exec(command: &mut Command, spec: &ProcessSpec) {
    let no_new_privileges = spec.security.no_new_privileges;
    let sandbox = spec.sandbox.clone();
    let kubelet_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, _exit, and the syscalls of Sandbox::enter) without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if no_new_privileges && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The kubelet may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != kubelet_pid {
                libc::_exit(1);
            }
            match &sandbox {
                Some(sandbox) => sandbox.enter(),
                None => Ok(()),
            }
        });
    }
}

pub struct RunningProcess {
    child: Child,
    pgid: i32,
    reaper: Reaper,
    log_copiers: Vec<JoinHandle<()>>,
    exited: Option<ExitOutcome>,
}

/// Only root can run a container as another user; a kubelet started by a developer runs every
/// container as that developer (and says so once).
fn can_switch_users() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

static USERS_NOT_SWITCHED: std::sync::Once = std::sync::Once::new();

impl RunningProcess {
    pub async fn spawn(spec: &ProcessSpec, log: LogSink, reaper: &Reaper) -> Result<Self> {
        let (program, args) = spec.argv.split_first().ok_or_else(|| Error::Spawn {
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        })?;
        if spec.sandbox.is_none() {
            tokio::fs::create_dir_all(&spec.working_dir)
                .await
                .map_err(|e| Error::io(&spec.working_dir, e))?;
        }
        // One pipe for stdout and stderr, as a container runtime's log keeps them interleaved in
        // the order they were written.
        let pipe_failed = |source| Error::Spawn {
            program: program.clone(),
            source,
        };
        let (output_writer, output_reader) = tokio::net::unix::pipe::pipe().map_err(pipe_failed)?;
        let stdout = output_writer.into_blocking_fd().map_err(pipe_failed)?;
        let stderr = stdout.try_clone().map_err(pipe_failed)?;
        let mut command = Command::new(program);
        command.args(args).env_clear();
        if spec.sandbox.is_none() {
            command
                .envs(INHERITED_ENV.iter().filter_map(|name| {
                    std::env::var_os(name).map(|value| (name.to_string(), value))
                }))
                .current_dir(&spec.working_dir);
        }
        command
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true);
        // In a sandbox the uid switch comes after chroot and the capability drop (Sandbox::enter);
        // std would switch before pre_exec.
        if let Some((uid, gid)) = spec.security.user.filter(|_| spec.sandbox.is_none()) {
            if can_switch_users() {
                // std drops supplementary groups when it changes the uid.
                command.uid(uid).gid(gid);
            } else {
                USERS_NOT_SWITCHED.call_once(|| {
                    tracing::warn!(
                        uid,
                        "the kubelet is not root: containers run as its own user, runAsUser is not honoured"
                    )
                });
            }
        }
        before_exec(&mut command, spec);
        let spawned = command.spawn();
        // The command holds the pipe's write ends: they must close here for the log to see EOF.
        drop(command);
        let child = spawned.map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        let pgid = child.id().map(|pid| pid as i32).unwrap_or_default();
        reaper.watch_group(pgid).await;
        let log_copiers = vec![tokio::spawn(log.copy_from(output_reader))];
        Ok(RunningProcess {
            child,
            pgid,
            reaper: reaper.clone(),
            log_copiers,
            exited: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the group leader to exit, then kills what is left of its group (as a container's
    /// processes die with its PID 1) and flushes its output. Cancel-safe until the leader exits.
    pub async fn wait(&mut self) -> ExitOutcome {
        if let Some(outcome) = self.exited {
            return outcome;
        }
        let outcome = match self.child.wait().await {
            Ok(status) => ExitOutcome::from(status),
            Err(_) => ExitOutcome {
                exit_code: 255,
                signal: None,
            },
        };
        self.exited = Some(outcome);
        self.signal_group(libc::SIGKILL);
        for copier in self.log_copiers.drain(..) {
            let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, copier).await;
        }
        self.reaper.forget_group(self.pgid).await;
        outcome
    }

    pub fn signal_group(&self, signal: i32) {
        if self.pgid > 0 {
            // SAFETY: plain syscall; a group that is already gone yields ESRCH, which is fine.
            unsafe {
                libc::kill(-self.pgid, signal);
            }
        }
    }

    /// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> ExitOutcome {
        if let Some(outcome) = self.exited {
            return outcome;
        }
        self.signal_group(libc::SIGTERM);
        if let Ok(outcome) = tokio::time::timeout(grace, self.wait()).await {
            return outcome;
        }
        self.signal_group(libc::SIGKILL);
        self.wait().await
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.signal_group(libc::SIGKILL);
        }
    }
}
