//! The worker image runs as a non-root uid, and the interpreter runs under the same uid. The worker
//! makes itself non-dumpable, so code in a session cannot read the worker's environment (where the
//! worker credential is), its open files or its memory, although it can read its own; the fork
//! server every interpreter comes from, and the standby waiting for the next session, are
//! non-dumpable too, so neither can be tampered with to reach the next session.

mod common;

use common::{result_repr, Worker, WORKER_TOKEN};

/// The image's user (`USER 65532:65532` in docker/Dockerfile.worker).
const IMAGE_UID: u32 = 65532;

/// Each probe names what it found: `refused` is the only acceptable answer for the worker's files.
const PROBES: &str = r#"
import ctypes, os
TOKEN = WORKER_TOKEN.encode()
zygote = os.getppid()
def parent(pid):
    try:
        return int(open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
worker = parent(zygote)
def read(path):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except PermissionError:
        return "refused"
    except OSError as e:
        return type(e).__name__
    return "LEAK" if TOKEN in data else "read"
def listing(path):
    try:
        os.listdir(path)
        return "read"
    except PermissionError:
        return "refused"
libc = ctypes.CDLL(None, use_errno=True)
attached = libc.ptrace(16, worker, None, None)  # PTRACE_ATTACH
zygote_attached = libc.ptrace(16, zygote, None, None)
standbys = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid() and parent(p) == zygote]
standby = standbys[0] if standbys else -1
def cwd_of(pid):
    try:
        os.readlink("/proc/%d/cwd" % pid)
        return "read"
    except PermissionError:
        return "refused"
    except OSError as e:
        return type(e).__name__
standby_attached = libc.ptrace(16, standby, None, None)
leaks = [p for p in os.listdir("/proc") if p.isdigit() and read("/proc/%s/environ" % p) == "LEAK"]
{
    "uid": os.getuid(),
    "worker_uid": int(open("/proc/%d/status" % worker).read().split("\nUid:")[1].split()[0]),
    "environ": read("/proc/%d/environ" % worker),
    "mem": read("/proc/%d/mem" % worker),
    "fds": listing("/proc/%d/fd" % worker),
    "ptrace": "refused" if attached == -1 else "attached",
    "own_environ": read("/proc/self/environ"),
    "zygote_is_workers_child": parent(zygote) == worker and "capsule-worker" in open("/proc/%d/cmdline" % worker).read(),
    "zygote_mem": read("/proc/%d/mem" % zygote),
    "zygote_fds": listing("/proc/%d/fd" % zygote),
    "zygote_ptrace": "refused" if zygote_attached == -1 else "attached",
    "standbys": len(standbys),
    "standby_environ": read("/proc/%d/environ" % standby),
    "standby_cwd": cwd_of(standby),
    "standby_ptrace": "refused" if standby_attached == -1 else "attached",
    "token_anywhere": leaks,
}
"#;

#[tokio::test]
async fn a_non_root_interpreter_cannot_read_the_workers_credentials() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test starts the worker as uid {IMAGE_UID} and needs root to do so (CI runs as root)"
    );
    let worker = Worker::start_as(IMAGE_UID, &[]).await;
    let code = PROBES.replace("WORKER_TOKEN", &format!("{WORKER_TOKEN:?}"));
    let seen = result_repr(&worker.run(&code).await).unwrap();
    assert_eq!(
        seen,
        format!(
            "{{'uid': {IMAGE_UID}, 'worker_uid': {IMAGE_UID}, 'environ': 'refused', 'mem': 'refused', \
             'fds': 'refused', 'ptrace': 'refused', 'own_environ': 'read', \
             'zygote_is_workers_child': True, 'zygote_mem': 'refused', 'zygote_fds': 'refused', \
             'zygote_ptrace': 'refused', 'standbys': 1, \
             'standby_environ': 'refused', 'standby_cwd': 'refused', 'standby_ptrace': 'refused', \
             'token_anywhere': []}}"
        )
    );
}
