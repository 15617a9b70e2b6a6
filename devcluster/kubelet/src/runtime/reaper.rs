//! A watchdog process that kills every pod process group when the kubelet's process dies, however it
//! dies (even SIGKILL).
//!
//! `PR_SET_PDEATHSIG` only reaches a pod's first process; a shell's children or a worker's interpreter
//! would be re-parented to init and live on. So the kubelet starts one small `/bin/sh` watchdog in its
//! own process group, ignoring SIGINT/SIGTERM/SIGHUP, and tells it over a pipe which process groups
//! exist (`+PGID` / `-PGID` lines). When the pipe reaches end-of-file — the kernel closes it when the
//! kubelet's process exits — the watchdog SIGKILLs every group it still knows and exits.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT TERM HUP
groups=" "
while read -r line; do
  case "$line" in
    +*) groups="$groups${line#+} " ;;
    -*) groups=$(printf '%s' "$groups" | sed "s/ ${line#-} / /") ;;
  esac
done
# dash's kill takes no `--`; `-9 -PGID` names the group in every sh.
for group in $groups; do kill -9 "-$group" 2>/dev/null; done
"#;

/// Handle to the watchdog; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Mutex<ReaperInner>>,
}

struct ReaperInner {
    stdin: Option<ChildStdin>,
    child: Child,
}

impl Reaper {
    pub fn start() -> Result<Self> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "/bin/sh (process watchdog)".into(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Reaper {
            inner: Arc::new(Mutex::new(ReaperInner { stdin, child })),
        })
    }

    pub async fn watch_group(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n")).await;
    }

    pub async fn forget_group(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n")).await;
    }

    async fn send(&self, line: &str) {
        let mut inner = self.inner.lock().await;
        if let Some(stdin) = inner.stdin.as_mut() {
            if let Err(error) = stdin.write_all(line.as_bytes()).await {
                tracing::warn!(%error, "process watchdog is gone; pod processes rely on PDEATHSIG only");
                inner.stdin = None;
            }
        }
    }

    /// Closes the pipe (the watchdog kills whatever groups are left) and waits for it to exit.
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        inner.stdin = None;
        let _ = inner.child.wait().await;
    }
}
