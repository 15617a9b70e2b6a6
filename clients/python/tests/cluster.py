"""The test cluster: one devcluster, the CRDs, the operator and two pools per test session.

Binaries come from $CAPSULE_BIN_DIR (default <repo>/target/debug, what `make test` builds);
kubectl from $CAPSULE_TOOLS_DIR/bin (scripts/install-tools.sh kubectl). A missing one fails loudly.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("CAPSULE_BIN_DIR") or Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug")
TOOLS_DIR = Path(os.environ.get("CAPSULE_TOOLS_DIR") or REPO / ".tools")

#: The pool most tests use: two warm workers, at most three, reset (not replaced) on release.
POOL = "py"
#: A pool of one worker: a second session on it finds the pool exhausted and fails after 3 s.
TINY_POOL = "tiny"
#: A pool whose workers drop output a slow client does not take (a queue of two chunks).
LOSSY_POOL = "lossy"


def pool_yaml(name: str, replicas: int, max_workers: int, acquire_timeout: int, extra: str = "") -> str:
    """A pool of the test cluster: fast heartbeats, workers reset (not replaced) on release."""
    return f"""
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  maxWorkers: {max_workers}
  template: {{image: "capsule-worker:dev", terminationGracePeriodSeconds: 1}}
  heartbeat: {{intervalSeconds: 1, stalenessSeconds: 6}}
  recycle: {{onRelease: Reset}}
  sessions: {{idleTimeoutSeconds: 0, acquireTimeoutSeconds: {acquire_timeout}}}
{extra}
"""


POOLS_YAML = "---".join([
    pool_yaml(POOL, 2, 3, 120, "  scaleDownDelaySeconds: 0"),
    pool_yaml(TINY_POOL, 1, 1, 3),
    pool_yaml(LOSSY_POOL, 1, 1, 120,
              "  executor: {backpressure: DropNew, outputQueueCapacity: 2, drainTimeoutMs: 60000}"),
])


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run `cargo build --workspace --bins` or set CAPSULE_BIN_DIR")
    return path


def tool(name: str) -> Path:
    path = TOOLS_DIR / "bin" / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run `scripts/install-tools.sh {name}`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, what: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} within {timeout}s: {log.read_text()[-2000:]}")


class Cluster:
    """The running devcluster + operator (+ gateway when a test asks for it)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: List[subprocess.Popen] = []
        self.gateway_url: Optional[str] = None
        state.chmod(0o755)  # pods may run as another user and must reach their binaries
        bins = state / "bin"
        bins.mkdir(exist_ok=True)
        for name in ("capsule-worker", "capsule-sidecar"):
            try:
                os.link(binary(name), bins / name)  # no copy of a large binary when the disk allows
            except OSError:
                shutil.copy2(binary(name), bins / name)
        ready_r, ready_w = os.pipe()
        dc = subprocess.Popen(
            [str(binary("capsule-devcluster")), "serve", "--state-dir", str(state),
             "--image-map", f"capsule-worker:*={bins / 'capsule-worker'}",
             "--image-map", f"capsule-sidecar:*={bins / 'capsule-sidecar'}"],
            stdout=ready_w, stderr=open(state / "devcluster.log", "wb"),
        )
        os.close(ready_w)
        self.procs.append(dc)
        with os.fdopen(ready_r) as ready:
            line = ready.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"devcluster did not start: {line!r} {(state / 'devcluster.log').read_text()[-2000:]}")
        fields = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        self.kubeconfig = fields["kubeconfig"]
        self.env: Dict[str, str] = {"KUBECONFIG": self.kubeconfig}
        self.kubectl("apply", "-f", str(REPO / "crds" / "capsule.dev_crds.yaml"))
        port = free_port()
        log = state / "operator.log"
        op = subprocess.Popen(
            [str(binary("capsule-operator")), "run", "--listen", f"127.0.0.1:{port}",
             "--heartbeat-url", f"http://127.0.0.1:{port}/v1/heartbeats",
             "--sidecar-image", "capsule-sidecar:dev", "--status-interval-seconds", "1"],
            env={**os.environ, **self.env, "RUST_LOG": "info,kube=warn"},
            stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
        )
        self.procs.append(op)
        wait_http(f"http://127.0.0.1:{port}/readyz", "capsule-operator", 60, op, log)
        self.kubectl("apply", "-f", "-", stdin=POOLS_YAML)
        for pool, idle in ((POOL, 2), (TINY_POOL, 1), (LOSSY_POOL, 1)):
            self.kubectl("wait", f"--for=jsonpath={{.status.idle}}={idle}", f"cpool/{pool}", "--timeout=120s")

    def kubectl(self, *args: str, stdin: Optional[str] = None) -> str:
        out = subprocess.run([str(tool("kubectl")), *args], input=stdin, capture_output=True, text=True,
                             env={**os.environ, **self.env}, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def start_gateway(self) -> str:
        """Starts capsule-gateway against the devcluster once; returns its URL."""
        if self.gateway_url is None:
            port = free_port()
            log = self.state / "gateway.log"
            gw = subprocess.Popen(
                [str(binary("capsule-gateway")), "--listen", f"127.0.0.1:{port}"],
                env={**os.environ, **self.env}, stdout=subprocess.DEVNULL, stderr=open(log, "wb"),
            )
            self.procs.append(gw)
            wait_http(f"http://127.0.0.1:{port}/readyz", "capsule-gateway", 60, gw, log)
            self.gateway_url = f"http://127.0.0.1:{port}"
        return self.gateway_url

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
