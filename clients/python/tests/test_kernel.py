"""The capsule-python kernel driven by a real jupyter_client: cells, streams, results, errors,
input() over the stdin channel, an interrupt, and the session deleted at shutdown."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

CAPSULE = str(Path(sys.executable).parent / "capsule")


@pytest.fixture
def kernel_prefix(tmp_path):
    out = subprocess.run([CAPSULE, "kernel", "install", "--prefix", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "share/jupyter/kernels/capsule-python/kernel.json").exists()
    return tmp_path


def start(prefix: Path, pool: str, connection):
    ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share/jupyter/kernels")])
    km = KernelManager(kernel_name="capsule-python", kernel_spec_manager=ksm)
    env = dict(os.environ, CAPSULE_POOL=pool)
    if connection:
        env["CAPSULE_GATEWAY_URL"] = connection
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=90)
    return km, kc


def collect(kc, msg_id, timeout=60):
    """The iopub messages of one request until it is idle: streams, results, errors."""
    got = {"stdout": "", "stderr": "", "result": None, "error": None}
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            got[content["name"]] += content["text"]
        elif kind == "execute_result":
            got["result"] = content["data"]["text/plain"]
        elif kind == "error":
            got["error"] = content
        elif kind == "status" and content["execution_state"] == "idle":
            return got


def execute(kc, code, **kw):
    msg_id = kc.execute(code, **kw)
    got = collect(kc, msg_id)
    return shell_reply(kc, msg_id)["content"], got


def shell_reply(kc, msg_id):
    """The shell reply to `msg_id` (an earlier request's reply, e.g. kernel_info's, is skipped)."""
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"]["msg_id"] == msg_id:
            return reply


def test_kernel_cells_input_interrupt(cluster, connection, pool, kernel_prefix):
    before = set(cluster.kubectl("get", "csess", "-o", "name").split())
    km, kc = start(kernel_prefix, pool, connection)
    try:
        info = kc.kernel_info(reply=True)["content"]
        assert info["implementation"] == "capsule" and f"pool {pool}" in info["banner"]

        reply, got = execute(kc, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nv = 41\nv + 1")
        assert reply["status"] == "ok" and got["stdout"] == "out\n" and got["stderr"] == "err\n"
        assert got["result"] == "42"
        sessions = set(cluster.kubectl("get", "csess", "-o", "name").split()) - before
        assert len(sessions) == 1, "the kernel made one session at start"

        reply, got = execute(kc, "def f():\n    raise KeyError('k')\nf()")
        assert reply["status"] == "error" and reply["ename"] == "KeyError"
        assert got["error"]["ename"] == "KeyError" and any("in f" in l for l in got["error"]["traceback"])

        # input(): the kernel asks the frontend over the stdin channel
        msg_id = kc.execute("input('your name? ') + '!'", allow_stdin=True)
        req = kc.get_stdin_msg(timeout=30)
        assert req["msg_type"] == "input_request" and req["content"]["prompt"] == "your name? "
        kc.input("ada")
        got = collect(kc, msg_id)
        assert got["result"] == "'ada!'"
        shell_reply(kc, msg_id)

        # an interrupt cancels the running cell on the worker; the namespace survives
        msg_id = kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
        deadline = time.monotonic() + 30
        while True:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"]:
                break
        t0 = time.monotonic()
        km.interrupt_kernel()
        got = collect(kc, msg_id, timeout=30)
        assert time.monotonic() - t0 < 15
        assert got["error"] and got["error"]["ename"] == "KeyboardInterrupt"
        assert "cancelled on the worker" in got["error"]["evalue"]
        assert shell_reply(kc, msg_id)["content"]["status"] == "error"
        reply, got = execute(kc, "v")
        assert got["result"] == "41"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    # shutdown deleted the session (it may still be finishing its release)
    name = next(iter(sessions)).split("/")[-1]
    left = cluster.kubectl("get", "csess", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp};{end}")
    assert f"{name}=;" not in left, left


def test_kernel_without_pool_reports_it(cluster, kernel_prefix, monkeypatch):
    monkeypatch.delenv("CAPSULE_POOL", raising=False)
    km, kc = start(kernel_prefix, "", None)
    try:
        reply, got = execute(kc, "1")
        assert reply["status"] == "error" and "CAPSULE_POOL" in reply["evalue"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
