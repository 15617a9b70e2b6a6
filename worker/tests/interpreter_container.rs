//! The interpreter in a container of its own (#15): the worker runs as the image's uid, and its
//! fork server (`capsule-worker fork-server`) runs as another uid in a PID namespace of its own,
//! its container's PID 1, connected over a socket in a shared directory, as the pod's
//! `interpreter` container does. Session code there sees no worker process and no credential, a
//! second connection to the socket is refused, a reset still gives a fresh interpreter in a fresh
//! directory, checkpoints cross the uid boundary, and when the fork server ends every process of
//! the container ends with it; the worker serves the restarted container's fork server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::{Json, Router};
use capsule_protocol::checkpoint::CheckpointCreated;
use capsule_protocol::execute::EventBody;
use capsule_protocol::heartbeat::{Heartbeat, HeartbeatReply};
use common::{final_event, python, reachable_copy, result_repr, Worker, WORKER_TOKEN};

/// The worker image's user, and the interpreter container's (distinct) user.
const WORKER_UID: u32 = 65532;
const INTERPRETER_UID: u32 = 65533;

/// What a pod gives the two containers: a socket directory and a scratch directory both mount
/// (world-writable, as a kubelet makes an emptyDir), and a copy of the binary any uid can run.
struct Pod {
    dir: tempfile::TempDir,
    binary: (tempfile::TempDir, PathBuf),
}

impl Pod {
    fn new() -> Pod {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test runs the two containers as uids {WORKER_UID} and {INTERPRETER_UID} and needs root (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        for sub in ["", "run", "scratch", "checkpoints"] {
            let path = dir.path().join(sub);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        Pod {
            dir,
            binary: reachable_copy(env!("CARGO_BIN_EXE_capsule-worker")),
        }
    }

    fn path(&self, sub: &str) -> String {
        self.dir.path().join(sub).to_str().unwrap().to_owned()
    }

    fn socket(&self) -> String {
        self.path("run/fork.sock")
    }

    /// The interpreter container: a new PID and mount namespace (its own /proc), the fork server
    /// as its PID 1 under [`INTERPRETER_UID`]; it dies with the returned child.
    fn start_interpreter_container(&self) -> tokio::process::Child {
        tokio::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .args(["setpriv", "--reuid", &INTERPRETER_UID.to_string()])
            .args(["--regid", &INTERPRETER_UID.to_string(), "--clear-groups"])
            .args(["--no-new-privs", "--"])
            .arg(&self.binary.1)
            .arg("fork-server")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CAPSULE_FORK_SERVER_CONNECT", self.socket())
            .env("CAPSULE_PYTHON", python())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("unshare and setpriv (util-linux) start the interpreter container")
    }

    async fn start_worker(&self) -> Worker {
        self.start_worker_with(&[]).await
    }

    async fn start_worker_with(&self, extra: &[(&str, &str)]) -> Worker {
        let socket = self.socket();
        let scratch = self.path("scratch");
        let checkpoints = self.path("checkpoints");
        let mut envs = vec![
            ("CAPSULE_FORK_SERVER_SOCKET", socket.as_str()),
            ("CAPSULE_SCRATCH_DIR", scratch.as_str()),
            ("CAPSULE_CHECKPOINT_DIR", checkpoints.as_str()),
        ];
        envs.extend_from_slice(extra);
        Worker::start_as(WORKER_UID, &envs).await
    }
}

async fn eval(worker: &Worker, code: &str) -> String {
    let events = worker.run(code).await;
    result_repr(&events).unwrap_or_else(|| panic!("no result for {code:?}: {events:?}"))
}

const PROBES: &str = r#"
import os, socket
TOKEN = WORKER_TOKEN.encode()
def readable(path):
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return b""
pids = [p for p in os.listdir("/proc") if p.isdigit()]
def uid_of(pid):
    for line in readable("/proc/%s/status" % pid).split(b"\n"):
        if line.startswith(b"Uid:"):
            return int(line.split()[1])
rogue = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
rogue.settimeout(10)
rogue.connect(SOCKET)
{
    "uid": os.getuid(),
    "parent_is_pid_1": os.getppid() == 1,
    "other_uids": sorted({uid_of(p) for p in pids} - {os.getuid(), None}),
    "token_anywhere": [p for p in pids if TOKEN in readable("/proc/%s/environ" % p)],
    "capsule_env": sorted(k for k in os.environ if k.startswith("CAPSULE") or k == "KUBECONFIG"),
    "second_connection": rogue.recv(100),
}
"#;

#[tokio::test]
async fn session_code_in_the_interpreter_container_sees_no_worker_and_no_credential() {
    let pod = Pod::new();
    let _container = pod.start_interpreter_container();
    let worker = pod.start_worker().await;
    let code = PROBES
        .replace("WORKER_TOKEN", &format!("{WORKER_TOKEN:?}"))
        .replace("SOCKET", &format!("{:?}", pod.socket()));
    assert_eq!(
        eval(&worker, &code).await,
        format!(
            "{{'uid': {INTERPRETER_UID}, 'parent_is_pid_1': True, 'other_uids': [], \
             'token_anywhere': [], 'capsule_env': [], 'second_connection': b''}}"
        ),
        "the worker refuses (closes) a second fork server connection: the rogue reads end-of-file"
    );
    // The refused connection left the served one working.
    assert_eq!(eval(&worker, "6 * 7").await, "42");
}

#[tokio::test]
async fn heartbeats_count_the_interpreter_containers_memory_and_cpu() {
    let heartbeats = Arc::new(Mutex::new(Vec::<Heartbeat>::new()));
    let url = receive_heartbeats(heartbeats.clone()).await;
    let pod = Pod::new();
    let _container = pod.start_interpreter_container();
    let worker = pod
        .start_worker_with(&[
            ("CAPSULE_HEARTBEAT_URL", url.as_str()),
            ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "1"),
        ])
        .await;
    // About two seconds of the interpreter's CPU, far beyond what an idle worker uses.
    worker
        .run("import time\nend = time.process_time() + 2\nwhile time.process_time() < end: pass")
        .await;
    let counted =
        |h: &Heartbeat| h.rss_bytes > h.worker_rss_bytes + (10 << 20) && h.cpu_millis >= 1800;
    wait_until(
        "a heartbeat with the container's RSS (two interpreters, a fork server) and CPU",
        || heartbeats.lock().unwrap().iter().any(counted),
    )
    .await;
}

async fn receive_heartbeats(into: Arc<Mutex<Vec<Heartbeat>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/heartbeats",
        post(move |Json(heartbeat): Json<Heartbeat>| async move {
            into.lock().unwrap().push(heartbeat);
            Json(HeartbeatReply::default())
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1/heartbeats")
}

#[tokio::test]
async fn a_reset_forks_a_fresh_interpreter_and_removes_what_the_session_left_anywhere() {
    let pod = Pod::new();
    let _container = pod.start_interpreter_container();
    let worker = pod.start_worker().await;
    // A directory the worker's uid cannot empty (only the fork server, same uid, can), a file
    // beside the working directories' folder, one in /dev/shm, and an attempt to plant a
    // directory beside the next session's.
    let a_dir = eval(
        &worker,
        "import os\nsecret = 41\nos.makedirs('locked/inner')\nopen('locked/inner/f', 'w').write('a')\n\
         os.chmod('locked/inner', 0o500)\nos.chmod('locked', 0o500)\n\
         open('../../left-in-scratch', 'w').write('a')\n\
         open('/dev/shm/capsule-left-by-a', 'w').write('a')\n\
         try:\n    os.mkdir('../planted')\n    planted = 'made'\nexcept PermissionError:\n    planted = 'refused'\n\
         (os.getcwd(), planted)",
    )
    .await;
    let (a_dir, planted) = a_dir
        .trim_matches(|c| c == '(' || c == ')')
        .split_once(", ")
        .unwrap();
    assert_eq!(
        planted, "'refused'",
        "only the worker adds working directories"
    );
    let a_dir = PathBuf::from(a_dir.trim_matches('\''));
    assert!(a_dir.starts_with(pod.path("scratch/sessions")), "{a_dir:?}");
    worker.release_with_reset().await;
    worker.bind().await;
    assert_eq!(
        eval(
            &worker,
            "('secret' in dir(), 'os' in dir(), __import__('os').listdir('.'))"
        )
        .await,
        "(False, False, [])"
    );
    wait_until("session A's directory is removed", || !a_dir.exists()).await;
    let left_in_scratch = PathBuf::from(pod.path("scratch/left-in-scratch"));
    let left_in_shm = std::path::Path::new("/dev/shm/capsule-left-by-a");
    wait_until(
        "what A left in the scratch volume and /dev/shm is removed",
        || !left_in_scratch.exists() && !left_in_shm.exists(),
    )
    .await;
}

/// A chain of processes deeper than any round-by-round sweep reaches, the top one in a session of
/// its own, the deepest appending to a file; and the scratch volume's `sessions/` folder renamed
/// away with a folder of the session's own in its place.
const DIG_IN: &str = r#"
import os, time
def chain(depth):
    if depth == 0:
        while True:
            with open(BEACON, "a") as f:
                f.write(".")
            time.sleep(0.02)
    if os.fork() == 0:
        chain(depth - 1)
    os.wait()
if os.fork() == 0:
    os.setsid()
    chain(40)
time.sleep(0.5)
scratch = os.path.dirname(os.path.dirname(os.getcwd()))
os.rename(os.path.join(scratch, "sessions"), os.path.join(scratch, "moved"))
os.mkdir(os.path.join(scratch, "sessions"), 0o777)
os.path.getsize(BEACON) > 0
"#;

#[tokio::test]
async fn a_reset_ends_every_process_of_the_session_and_no_folder_of_its_own_receives_the_next() {
    let pod = Pod::new();
    let _container = pod.start_interpreter_container();
    let worker = pod.start_worker().await;
    let beacon = pod.dir.path().join("beacon");
    std::fs::write(&beacon, b"").unwrap();
    std::fs::set_permissions(&beacon, std::fs::Permissions::from_mode(0o666)).unwrap();
    let code = DIG_IN.replace("BEACON", &format!("{:?}", beacon.display().to_string()));
    assert_eq!(eval(&worker, &code).await, "True", "the chain runs");
    worker.release_with_reset().await;
    worker.bind().await;
    let size = std::fs::metadata(&beacon).unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::metadata(&beacon).unwrap().len(),
        size,
        "every process of the ended session is gone before the next one runs"
    );
    let seen = eval(
        &worker,
        "import os\n(os.stat(os.path.dirname(os.getcwd())).st_uid, os.getcwd().startswith(SCRATCH + '/sessions/'))"
            .replace("SCRATCH", &format!("{:?}", pod.path("scratch")))
            .as_str(),
    )
    .await;
    assert!(
        seen.starts_with(&format!("({WORKER_UID}, ")),
        "the next session's directory is in a folder of the worker's, not the session's: {seen}"
    );
    use std::os::unix::fs::MetadataExt;
    let owner = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.uid()).ok();
    let scratch = PathBuf::from(pod.path("scratch"));
    assert_eq!(owner(&scratch.join("sessions")), Some(WORKER_UID));
    for entry in std::fs::read_dir(&scratch).unwrap().flatten() {
        if owner(&entry.path()) == Some(INTERPRETER_UID) && entry.path().is_dir() {
            let made = std::fs::read_dir(entry.path()).unwrap().count();
            assert_eq!(
                made,
                0,
                "nothing was made in the planted {:?}",
                entry.path()
            );
        }
    }
}

#[tokio::test]
async fn checkpoints_cross_from_the_interpreters_uid_to_the_workers_and_back() {
    let pod = Pod::new();
    let _container = pod.start_interpreter_container();
    let worker = pod.start_worker().await;
    worker.run("kept = {'a': [1, 2, 3]}").await;
    let response = worker.post("/v1/checkpoints").send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let checkpoint: CheckpointCreated = response.json().await.unwrap();
    assert!(
        checkpoint.names.iter().any(|n| n == "kept"),
        "{checkpoint:?}"
    );
    worker.run("kept = None").await;
    let restored = worker
        .post(&format!("/v1/checkpoints/{}/restore", checkpoint.id))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200, "{}", restored.text().await.unwrap());
    assert_eq!(eval(&worker, "kept").await, "{'a': [1, 2, 3]}");
}

#[tokio::test]
async fn when_the_fork_server_ends_every_process_of_its_container_ends_and_a_restarted_one_serves()
{
    let pod = Pod::new();
    let mut container = pod.start_interpreter_container();
    let worker = pod.start_worker().await;
    let beacon = pod.dir.path().join("beacon");
    std::fs::write(&beacon, b"").unwrap();
    std::fs::set_permissions(&beacon, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A process that left the session's group and session, then the fork server told to go.
    let events = worker
        .run(&format!(
            "import os, signal, subprocess, time\n\
             subprocess.Popen(['sh', '-c', 'while :; do echo x >> {beacon}; sleep 0.02; done'], start_new_session=True)\n\
             time.sleep(0.3)\n\
             os.kill(1, signal.SIGTERM)\n\
             time.sleep(5)",
            beacon = beacon.display()
        ))
        .await;
    assert!(
        matches!(final_event(&events), EventBody::InterpreterRestarted { .. }),
        "the execution ends with the interpreter: {events:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), container.wait())
        .await
        .expect("the container ends with its PID 1")
        .unwrap();
    let size = std::fs::metadata(&beacon).unwrap().len();
    assert!(size > 0, "the escaped process ran");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::metadata(&beacon).unwrap().len(),
        size,
        "nothing of the container outlives its PID 1"
    );
    // The kubelet restarts the container; the worker serves its new fork server.
    let _restarted = pod.start_interpreter_container();
    assert_eq!(
        eval(&worker, "__import__('os').getuid()").await,
        INTERPRETER_UID.to_string()
    );
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within 10 s");
}
