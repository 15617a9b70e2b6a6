//! A release with reset gives the next session a fresh, already warmed interpreter: nothing the
//! previous session left (patched builtins, threads, child processes, modules, files, environment)
//! reaches it.

mod common;

use std::time::Duration;

use capsule_protocol::execute::EventBody;
use common::{final_event, result_repr, Worker};

/// Session A's code: everything a hostile tenant might leave for the next one.
const LEAVE_BEHIND: &str = r#"
import builtins, os, subprocess, sys, threading, time, types
def spy(*args, **kwargs):
    raise NameError("session A's compile hook ran")
builtins.compile = spy
builtins.left_by_a = True
sys.modules["planted"] = types.ModuleType("planted")
os.environ["LEFT_BY_A"] = "1"
open("left-by-a.txt", "w").write("secret")
def keep_writing():
    while True:
        with open(os.path.join(os.environ["HOME"], "..", "thread-alive"), "a") as f:
            f.write(".")
        time.sleep(0.05)
threading.Thread(target=keep_writing, daemon=True).start()
child = subprocess.Popen(["sleep", "600"])
# Plant a module in every other interpreter directory (the standby's among them).
scratch = os.path.dirname(os.getcwd())
for name in os.listdir(scratch):
    path = os.path.join(scratch, name)
    if os.path.isdir(path) and path != os.getcwd():
        open(os.path.join(path, "planted_mod.py"), "w").write("X = 1")
(os.getpid(), child.pid, os.getcwd())
"#;

/// Session B's view: each probe is a bool that must be False, except `warm`.
const LOOK_AROUND: &str = r#"
import builtins, importlib.util, os, sys, threading
def alive(pid):
    # A killed child whose parent died may linger as a zombie until it is reaped: dead.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
{
    "builtin": hasattr(builtins, "left_by_a"),
    "module": "planted" in sys.modules,
    "env": "LEFT_BY_A" in os.environ,
    "file": os.path.exists("left-by-a.txt"),
    "extra_threads": threading.active_count() > BASE_THREADS,
    "a_alive": alive(A_PID),
    "child_alive": alive(CHILD_PID),
    "same_dir": os.getcwd() == A_DIR,
    "planted_import": importlib.util.find_spec("planted_mod") is not None,
    "credentials_in_env": any(k.startswith("CAPSULE_") for k in os.environ),
    "warm": WARM,
}
"#;

fn parse_tuple(repr: &str) -> (u32, u32, String) {
    let inner = repr.trim_start_matches('(').trim_end_matches(')');
    let mut parts = inner.splitn(3, ", ");
    let pid = parts.next().unwrap().parse().unwrap();
    let child = parts.next().unwrap().parse().unwrap();
    let dir = parts.next().unwrap().trim_matches('\'').to_owned();
    (pid, child, dir)
}

#[tokio::test]
async fn a_reset_release_leaves_nothing_for_the_next_session() {
    let worker = Worker::start(&[("CAPSULE_WARMUP_CODE", "WARM = True")]).await;
    let base_threads = result_repr(
        &worker
            .run("import threading\nthreading.active_count()")
            .await,
    )
    .unwrap();
    let events = worker.run(LEAVE_BEHIND).await;
    let (a_pid, child_pid, a_dir) = parse_tuple(&result_repr(&events).unwrap());
    let broken = worker.run("1 + 1").await;
    assert!(
        matches!(final_event(&broken), EventBody::Error { ename, .. } if ename == "NameError"),
        "the hook is live in session A: {broken:?}"
    );

    worker.release_with_reset().await;
    worker.bind().await;
    assert_eq!(
        worker.stats().await.namespace_size,
        1,
        "only the warm-up's name"
    );

    let code = LOOK_AROUND
        .replace("BASE_THREADS", &base_threads)
        .replace("A_PID", &a_pid.to_string())
        .replace("CHILD_PID", &child_pid.to_string())
        .replace("A_DIR", &format!("{a_dir:?}"));
    let events = worker.run(&code).await;
    let seen = result_repr(&events).unwrap();
    assert_eq!(
        seen,
        "{'builtin': False, 'module': False, 'env': False, 'file': False, 'extra_threads': False, \
         'a_alive': False, 'child_alive': False, 'same_dir': False, 'planted_import': False, \
         'credentials_in_env': False, 'warm': True}"
    );
    // The thread's process is gone, so the file it appended to stops growing.
    // Not through `a_dir/..`: the worker removes A's directory meanwhile, and that path with it.
    let scratch = std::path::Path::new(&a_dir).parent().unwrap();
    let thread_file = scratch.join("thread-alive");
    let size = std::fs::metadata(&thread_file)
        .map(|m| m.len())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::metadata(&thread_file)
            .map(|m| m.len())
            .unwrap_or(0),
        size
    );
    let _ = std::fs::remove_file(thread_file);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while std::path::Path::new(&a_dir).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session A's directory was not removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        worker.stats().await.interpreter_restarts,
        0,
        "a reset is not a crash"
    );
}

#[tokio::test]
async fn a_session_reset_also_swaps_the_interpreter_and_stays_usable_back_to_back() {
    let worker = Worker::start(&[]).await;
    let mut pids = Vec::new();
    for round in 0..3 {
        let events = worker
            .run(&format!("import os\nx = {round}\nos.getpid()"))
            .await;
        pids.push(result_repr(&events).unwrap());
        let response = worker.post("/v1/reset").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let events = worker.run("'x' in globals()").await;
        assert_eq!(result_repr(&events).as_deref(), Some("False"));
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "each reset gave a new process: {pids:?}");
}

#[tokio::test]
async fn without_a_standby_a_reset_still_gives_a_fresh_process() {
    let worker = Worker::start(&[("CAPSULE_STANDBY_INTERPRETER", "false")]).await;
    let before = result_repr(&worker.run("import os\nos.getpid()").await);
    let response = worker.post("/v1/reset").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let after = result_repr(&worker.run("import os\nos.getpid()").await);
    assert_ne!(before, after);
}
