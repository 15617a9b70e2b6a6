# Jupyter baseline for capsule-worker-bench: the same figures through a real ipykernel driven by
# jupyter_client (execute round trip of `1+1`; stdout throughput of N bytes printed in 1 KiB lines and
# written in 64 KiB writes). Prints one JSON object on stdout.
import json
import sys
import time

from jupyter_client.manager import start_new_kernel

iterations = int(sys.argv[1])
warmup = int(sys.argv[2])
# {name: {"code": ..., "bytes": expected output bytes}}: the stdout shapes of bench/round_trip.rs.
shapes = json.loads(sys.argv[3])
runs = int(sys.argv[4])


def execute(client, code):
    """Runs code, returns (output bytes, seconds) once the kernel is idle again."""
    started = time.perf_counter()
    msg_id = client.execute(code, store_history=False)
    received = 0
    reply_seen = False
    idle_seen = False
    while not (reply_seen and idle_seen):
        if not idle_seen:
            msg = client.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                received += len(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle_seen = True
        if idle_seen and not reply_seen:
            reply = client.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                reply_seen = True
    return received, time.perf_counter() - started


manager, client = start_new_kernel(kernel_name="python3")
try:
    for _ in range(warmup):
        execute(client, "1+1")
    samples = []
    for _ in range(iterations):
        _, seconds = execute(client, "1+1")
        samples.append(seconds * 1000.0)
    samples.sort()
    stdout = {}
    received_ok = True
    for name, shape in shapes.items():
        throughputs = []
        for _ in range(runs):
            received, seconds = execute(client, shape["code"])
            received_ok = received_ok and received == shape["bytes"]
            throughputs.append(received / seconds / 1e6)
        stdout[name] = sorted(throughputs)
    print(
        json.dumps(
            {
                "p50Ms": samples[len(samples) // 2],
                "p99Ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
                "stdoutRunsMBps": stdout,
                "allOutputReceived": received_ok,
            }
        )
    )
finally:
    client.stop_channels()
    manager.shutdown_kernel(now=True)
