//! A hostile session on the devcluster, run as a platform team would run it: worker pods under a
//! non-root uid (the image's user, set here because the devcluster runs host binaries, not images)
//! and session code in the pod's `interpreter` container under a uid of its own (the default).
//! Session A hunts for credentials and tries what it finds and its own token on another worker and
//! on the operator; it leaves a patched builtin, a thread, a module, a file and a child process.
//! A is released with `Reset`, and session B on the same worker sees none of it.
//!
//! Not probed because the devcluster cannot show it (see docs/security.md): pods share the host's
//! PID and mount namespaces here, so session code sees the worker processes (whose files its uid
//! cannot open) and the sidecar's token volume is on a host path a real interpreter container
//! never mounts.

use std::time::Duration;

use base64::Engine;
use capsule_e2e::{
    free_port, http, post_heartbeat, session_token, wait_for, wait_session_phase, DevCluster,
    OperatorRun,
};
use serde_json::{json, Value};

const IMAGE_USER: &str = "65532";
/// The interpreter container's uid (`spec.template.interpreter.runAsUser`'s default).
const INTERPRETER_USER: &str = "65533";

fn pool(name: &str) -> String {
    format!(
        r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 1
  maxWorkers: 1
  scaleDownDelaySeconds: 0
  recycle:
    onRelease: Reset
  template:
    image: capsule-worker:dev
    containerSecurityContext:
      runAsUser: {IMAGE_USER}
      runAsGroup: {IMAGE_USER}
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL]}}
"#
    )
}

fn session(name: &str, pool: &str) -> String {
    format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  pool: {pool}\n"
    )
}

/// Session A: every place a credential could be, then each thing it holds tried elsewhere.
const HUNT: &str = r#"
import ctypes, json, os, urllib.request, urllib.error
zygote = os.getppid()
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except PermissionError:
        return "refused"
    except OSError as e:
        return type(e).__name__
def status(method, url, token=None, body=None):
    request = urllib.request.Request(url, method=method, data=body)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    data = read("/proc/%s/environ" % pid)
    if isinstance(data, bytes):
        for entry in data.split(b"\0"):
            name = entry.split(b"=", 1)[0].decode(errors="replace")
            if "TOKEN" in name or name in ("KUBECONFIG", "CAPSULE_WORKER_TOKEN"):
                found.append((pid, name))
def running(binary):
    return [p for p in filter(str.isdigit, os.listdir("/proc"))
            if isinstance(read("/proc/%s/cmdline" % p), bytes)
            and read("/proc/%s/cmdline" % p).split(b"\0")[0].endswith(binary)]
def uid_of(pid):
    status = read("/proc/%s/status" % pid)
    return int(status.split(b"\nUid:")[1].split()[0]) if isinstance(status, bytes) else None
workers, sidecars = running(b"capsule-worker"), running(b"capsule-sidecar")
libc = ctypes.CDLL(None, use_errno=True)
binding = json.dumps({"session": "stolen", "namespace": "default",
                      "tokenSha256": "0" * 64}).encode()
heartbeat = json.dumps({"pod": OTHER_POD, "namespace": "default", "pool": "other", "seq": 1,
    "sentAt": "2026-11-30T00:00:00Z", "startedAt": "2026-11-30T00:00:00Z", "state": "idle",
    "session": None, "rssBytes": 1, "cpuPercent": 0.0, "namespaceSize": 0,
    "interpreterRestarts": 0, "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
    "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0,
                 "maxQueueDepth": 0, "drainTimeouts": 0},
    "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0,
               "timedOut": 0, "cancelled": 0},
    "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}}).encode()
{
    "uid": os.getuid(),
    "env": sorted(k for k in os.environ if k.startswith("CAPSULE_") or k == "KUBECONFIG"),
    "environ_with_credentials": found,
    "a_worker_shares_my_uid": any(uid_of(p) == os.getuid() for p in workers),
    "worker_environ": sorted(set(read("/proc/%s/environ" % p) for p in workers)),
    "sidecar_environ": sorted(set(read("/proc/%s/environ" % p) for p in sidecars)),
    "ptrace_worker": sorted(set("refused" if libc.ptrace(16, int(p), None, None) == -1 else "attached" for p in workers)),
    "fork_server_mem": read("/proc/%d/mem" % zygote),
    "ptrace_fork_server": "refused" if libc.ptrace(16, zygote, None, None) == -1 else "attached",
    "service_account": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
    "other_execute": status("POST", OTHER + "/v1/executions", OWN_TOKEN, b'{"code": "1"}'),
    "other_bind": status("PUT", OTHER + "/v1/session", OWN_TOKEN, binding),
    "other_release": status("DELETE", OTHER + "/v1/session"),
    "other_namespace": status("GET", OTHER + "/v1/namespace", OWN_TOKEN),
    "other_stats": status("GET", OTHER + "/v1/stats", OWN_TOKEN),
    "own_bind": status("PUT", OWN + "/v1/session", OWN_TOKEN, binding),
    "heartbeat": status("POST", HEARTBEATS, OWN_TOKEN, heartbeat),
}
"#;

/// What A leaves behind for the next session on its worker.
const LEAVE_BEHIND: &str = r#"
import builtins, os, subprocess, sys, threading, time, types
def hook(*args, **kwargs):
    raise NameError("session A's compile hook ran")
builtins.compile = hook
builtins.left_by_a = True
sys.modules["planted"] = types.ModuleType("planted")
open("left-by-a.txt", "w").write("secret")
open(os.path.join("..", "..", "left-in-scratch.txt"), "w").write("secret")
threading.Thread(target=lambda: time.sleep(600), daemon=True).start()
child = subprocess.Popen(["sleep", "600"])
(os.getpid(), child.pid)
"#;

const LOOK_AROUND: &str = r#"
import builtins, os, sys, threading
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
{
    "builtin": hasattr(builtins, "left_by_a"),
    "module": "planted" in sys.modules,
    "file": os.path.exists("left-by-a.txt"),
    "scratch_file": os.path.exists(os.path.join("..", "..", "left-in-scratch.txt")),
    "threads": threading.active_count(),
    "a_alive": alive(A_PID),
    "child_alive": alive(CHILD_PID),
    "works": eval("6 * 7"),
}
"#;

/// Runs `code` and returns the final event.
fn run(endpoint: &str, token: &str, code: &str) -> Value {
    let body = http()
        .post(format!("{endpoint}/v1/executions"))
        .bearer_auth(token)
        .json(&json!({"code": code}))
        .send()
        .expect("execute request")
        .text()
        .unwrap();
    body.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .expect("a final event")
}

fn repr(endpoint: &str, token: &str, code: &str) -> String {
    let last = run(endpoint, token, code);
    assert_eq!(last["type"], "result", "{last}");
    last["repr"].as_str().unwrap_or_default().to_owned()
}

/// The endpoint, token and worker of a bound session.
fn bound(cluster: &DevCluster, name: &str) -> (String, String, String) {
    wait_session_phase(cluster, name, "Bound", Duration::from_secs(90));
    let endpoint = cluster.jsonpath(&["csess", name], "{.status.endpoint}");
    let worker = cluster.jsonpath(&["csess", name], "{.status.worker}");
    (endpoint, session_token(cluster, name), worker)
}

#[test]
fn a_hostile_session_finds_no_credential_and_leaves_nothing_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let port = free_port();
    let _operator = OperatorRun::on_port(port).start(&cluster, &dir.path().join("operator.log"));
    cluster.apply(&pool("hostile"));
    cluster.apply(&pool("other"));
    cluster.apply(&session("a", "hostile"));
    cluster.apply(&session("victim", "other"));
    let (own, own_token, worker) = bound(&cluster, "a");
    let (other, _, other_pod) = bound(&cluster, "victim");

    let hunt = HUNT
        .replace("OTHER_POD", &format!("{other_pod:?}"))
        .replace("OTHER", &format!("{other:?}"))
        .replace("OWN_TOKEN", &format!("{own_token:?}"))
        .replace("OWN", &format!("{own:?}"))
        .replace(
            "HEARTBEATS",
            &format!("\"http://127.0.0.1:{port}/v1/heartbeats\""),
        );
    assert_eq!(
        repr(&own, &own_token, &hunt),
        format!(
            "{{'uid': {INTERPRETER_USER}, 'env': [], 'environ_with_credentials': [], \
             'a_worker_shares_my_uid': False, 'worker_environ': ['refused'], \
             'sidecar_environ': ['refused'], 'ptrace_worker': ['refused'], \
             'fork_server_mem': 'refused', 'ptrace_fork_server': 'refused', \
             'service_account': False, 'other_execute': 401, 'other_bind': 401, \
             'other_release': 401, 'other_namespace': 401, 'other_stats': 401, 'own_bind': 401, \
             'heartbeat': 401}}"
        )
    );

    a_leaked_worker_credential_acts_on_its_own_worker_alone(
        &cluster, port, &worker, &own, &other_pod, &other,
    );

    let left = repr(&own, &own_token, LEAVE_BEHIND);
    let (a_pid, child_pid) = left
        .trim_matches(|c| c == '(' || c == ')')
        .split_once(", ")
        .unwrap();
    let baseline_threads = 3; // main, the driver's frame reader and its output flusher
    cluster.kubectl(&["delete", "csess", "a", "--timeout=60s"]);
    cluster.apply(&session("b", "hostile"));
    let (endpoint, token, worker_of_b) = bound(&cluster, "b");
    assert_eq!(worker_of_b, worker, "B got A's worker back after the reset");
    let look = LOOK_AROUND
        .replace("A_PID", a_pid)
        .replace("CHILD_PID", child_pid);
    wait_for("A's processes gone", Duration::from_secs(10), || {
        let seen = repr(&endpoint, &token, &look);
        let expected = format!(
            "{{'builtin': False, 'module': False, 'file': False, 'scratch_file': False, \
             'threads': {baseline_threads}, \
             'a_alive': False, 'child_alive': False, 'works': 42}}"
        );
        if seen == expected {
            Ok(())
        } else {
            Err(seen)
        }
    });
}

/// What an attacker could do with the credential of `pod` had it leaked (read here from its
/// Secret, as the interpreter cannot): act on that worker, and on no other worker or heartbeat.
fn a_leaked_worker_credential_acts_on_its_own_worker_alone(
    cluster: &DevCluster,
    operator_port: u16,
    pod: &str,
    endpoint: &str,
    other_pod: &str,
    other_endpoint: &str,
) {
    let secret = format!("{pod}-credential");
    let credential = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(
                cluster
                    .jsonpath(&["secret", &secret], "{.data.token}")
                    .trim(),
            )
            .unwrap(),
    )
    .unwrap();
    let stats = |base: &str| {
        http()
            .get(format!("{base}/v1/stats"))
            .bearer_auth(&credential)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        stats(endpoint),
        200,
        "the credential works on its own worker"
    );
    assert_eq!(stats(other_endpoint), 401, "and on no other");
    let bind_other = http()
        .put(format!("{other_endpoint}/v1/session"))
        .bearer_auth(&credential)
        .json(&json!({"session": "taken", "namespace": "default", "tokenSha256": "0".repeat(64)}))
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(bind_other, 401, "it cannot take over another worker");
    let heartbeats = format!("http://127.0.0.1:{operator_port}/v1/heartbeats");
    let heartbeat = |named: &str, pool: &str| post_heartbeat(&heartbeats, &credential, named, pool);
    assert_eq!(
        heartbeat(other_pod, "other"),
        401,
        "it forges no heartbeat for another worker"
    );

    // The credential goes with its pod, whoever deletes the pod.
    let other_secret = format!("{other_pod}-credential");
    cluster.kubectl(&["get", "secret", &other_secret]);
    cluster.kubectl(&["delete", "pod", other_pod, "--wait=false"]);
    wait_for(
        "the deleted worker's credential gone",
        Duration::from_secs(60),
        || {
            let out = cluster.kubectl_output(&["get", "secret", &other_secret], None);
            if out.status.success() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    );
}
