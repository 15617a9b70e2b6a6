//! Every interpreter is forked from the fork server: a fresh process whose parent is the zygote,
//! with its own process group and directory, exit codes reported, and a zygote that session code
//! kills is replaced without the worker noticing more than a slower next start.

mod common;

use capsule_protocol::execute::EventBody;
use common::{final_event, result_repr, Worker};

const FAMILY: &str = r#"
import os
def parent(pid):
    return int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])
zygote = os.getppid()
(
    os.getpid() == os.getpgid(0),
    parent(zygote) == WORKER_PID,
    b"Capsule fork server" in open("/proc/%d/cmdline" % zygote, "rb").read(),
    os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"],
    sorted(k for k in os.environ if k.startswith("CAPSULE_")),
)
"#;

#[tokio::test]
async fn an_interpreter_is_a_child_of_the_fork_server_in_a_group_and_directory_of_its_own() {
    let worker = Worker::start(&[]).await;
    let code = FAMILY.replace("WORKER_PID", &worker.pid().to_string());
    let seen = result_repr(&worker.run(&code).await).unwrap();
    assert_eq!(seen, "(True, True, True, True, [])");
}

#[tokio::test]
async fn session_code_that_kills_the_fork_server_gets_a_fresh_interpreter_at_the_next_reset() {
    let worker = Worker::start(&[]).await;
    let first = result_repr(&worker.run("import os\nos.getppid()").await).unwrap();
    let events = worker
        .run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nx = 1")
        .await;
    assert_eq!(result_repr(&events), None, "{events:?}");

    // The standby forked before the kill serves the next session; the one after it comes from a
    // new fork server.
    for _ in 0..2 {
        worker.release_with_reset().await;
        worker.bind().await;
        let events = worker.run("'x' in globals(), 6 * 7").await;
        assert_eq!(result_repr(&events).as_deref(), Some("(False, 42)"));
    }
    let now = result_repr(&worker.run("import os\nos.getppid()").await).unwrap();
    assert_ne!(now, first, "a new fork server took over");
    assert_eq!(worker.stats().await.interpreter_restarts, 0);
}

#[tokio::test]
async fn an_exit_code_travels_from_the_fork_server_to_the_client() {
    let worker = Worker::start(&[]).await;
    let events = worker.run("import os\nos._exit(3)").await;
    match final_event(&events) {
        EventBody::InterpreterRestarted { exit_code, .. } => assert_eq!(*exit_code, Some(3)),
        other => panic!("expected interpreterRestarted, got {other:?}"),
    }
    let events = worker
        .run("import signal, os\nos.kill(os.getpid(), signal.SIGKILL)")
        .await;
    match final_event(&events) {
        EventBody::InterpreterRestarted { exit_code, .. } => {
            assert_eq!(*exit_code, None, "killed by a signal: no exit code")
        }
        other => panic!("expected interpreterRestarted, got {other:?}"),
    }
    assert_eq!(
        result_repr(&worker.run("1 + 1").await).as_deref(),
        Some("2")
    );
}

/// Starts a process that leaves the interpreter's process group and session (a double fork with
/// `setsid`, the parent gone at once): killing the group does not reach it.
const ESCAPE: &str = r#"
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(600)
    os._exit(0)
os.close(w)
escaped = int(os.read(r, 32))
os.wait()
# With its start time: the pid alone may be another process's by the time it is checked.
"%d:%s" % (escaped, open("/proc/%d/stat" % escaped).read().rsplit(")", 1)[1].split()[19])
"#;

const ALIVE: &str = r#"
import os
def alive(pid, started):
    try:
        fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z" and fields[19] == started
alive(PID, STARTED)
"#;

/// Whether the process `escaped` (`pid:start time`, from [`ESCAPE`]) still runs.
async fn alive(worker: &Worker, escaped: &str) -> String {
    let (pid, started) = escaped.trim_matches('\'').split_once(':').unwrap();
    let code = ALIVE
        .replace("PID", pid)
        .replace("STARTED", &format!("{started:?}"));
    result_repr(&worker.run(&code).await).unwrap()
}

#[tokio::test]
async fn a_process_that_left_the_session_is_killed_at_the_reset_and_only_the_old_sessions() {
    let worker = Worker::start(&[]).await;
    let old = result_repr(&worker.run(ESCAPE).await).unwrap();
    assert_eq!(alive(&worker, &old).await, "True", "it outlives its parent");

    worker.release_with_reset().await;
    worker.bind().await;
    let new = result_repr(&worker.run(ESCAPE).await).unwrap();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while alive(&worker, &old).await == "True" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the escaped process of the ended session still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Past the sweep's second: what the new session started is its own.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(alive(&worker, &new).await, "True");
}
