#!/usr/bin/env python3
"""Kernel start to first result: the capsule-python kernel vs a local ipykernel cold start.

Starts one devcluster + operator + pool (tests/cluster.py, binaries from $CAPSULE_BIN_DIR), then
for each iteration, alternating: starts a kernel with jupyter_client's KernelManager, waits for it,
runs `1+1` and stops the clock at its execute_result; shuts the kernel down. Also times the SDK
alone (Session.create + run, in this process). Prints p50/p99 and writes JSON for
scripts/bench-table.py.

Usage: kernel_start.py [--iterations N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster import POOL, Cluster  # noqa: E402


def first_result_ms(kernel_name: str, ksm, env) -> float:
    from jupyter_client import KernelManager

    t0 = time.perf_counter()
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        msg_id = kc.execute("1+1")
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                assert msg["content"]["data"]["text/plain"] == "2", msg
                return (time.perf_counter() - t0) * 1000
            if msg["msg_type"] == "error":
                raise RuntimeError(f"{kernel_name}: {msg['content']}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def sdk_first_result_ms() -> float:
    from capsule_client import Session

    t0 = time.perf_counter()
    with Session.create(POOL) as s:
        assert s.run("1+1", on_output=None).repr == "2"
        return (time.perf_counter() - t0) * 1000


def summary(samples):
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "p50Ms": round(statistics.median(s), 1), "p99Ms": round(pick(0.99), 1),
            "minMs": round(s[0], 1), "meanMs": round(statistics.mean(s), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from jupyter_client.kernelspec import KernelSpecManager
    from capsule_client.kernel.install import install

    state = Path(tempfile.mkdtemp(prefix="capsule-kernel-bench-"))
    cluster = Cluster(state)
    try:
        os.environ.update(cluster.env)
        prefix = Path(tempfile.mkdtemp(prefix="capsule-kernelspec-"))
        install(prefix=str(prefix), pool=POOL)
        ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share/jupyter/kernels")])
        native = KernelSpecManager()  # ipykernel's own python3 spec: this interpreter
        env = dict(os.environ)
        capsule, local, sdk = [], [], []
        first_result_ms("python3", native, env)  # warm the page cache for both, not counted
        first_result_ms("capsule-python", ksm, env)
        for i in range(args.iterations):
            local.append(first_result_ms("python3", native, env))
            capsule.append(first_result_ms("capsule-python", ksm, env))
            sdk.append(sdk_first_result_ms())
            print(f"  {i + 1}/{args.iterations}: ipykernel {local[-1]:.0f} ms, capsule-python {capsule[-1]:.0f} ms, SDK {sdk[-1]:.0f} ms",
                  file=sys.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
    figures = {"kernelStartToFirstResult": {"capsulePython": summary(capsule), "localIpykernel": summary(local)},
               "sdkCreateToFirstResult": summary(sdk)}
    print(f"{'':32}{'p50 ms':>10}{'p99 ms':>10}")
    for name, f in (("capsule-python kernel", figures["kernelStartToFirstResult"]["capsulePython"]),
                    ("local ipykernel (cold)", figures["kernelStartToFirstResult"]["localIpykernel"]),
                    ("SDK Session.create + run", figures["sdkCreateToFirstResult"])):
        print(f"{name:32}{f['p50Ms']:>10}{f['p99Ms']:>10}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
