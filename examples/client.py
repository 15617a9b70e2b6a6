#!/usr/bin/env python3
"""Runs Python code on a CapsuleSession and streams its output.

Usage: client.py SESSION [CODE] [--namespace NS]
Reads the session's endpoint and token with kubectl (KUBECONFIG as usual), then POSTs the code to
<endpoint>/v1/executions and prints the NDJSON events as they arrive. Standard library only.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import urllib.request


def kubectl(*args):
    exe = os.environ.get("KUBECTL", "kubectl")
    return subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session")
    parser.add_argument("code", nargs="?", default="import sys\nprint('hello from', sys.version.split()[0])\nsum(range(10))")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()

    status = json.loads(kubectl("get", "csess", args.session, "-n", args.namespace, "-o", "json"))["status"]
    if status.get("phase") != "Bound":
        sys.exit(f"session {args.session} is {status.get('phase')}: {status.get('message', 'not bound yet')}")
    secret = status["tokenSecret"]
    token_b64 = kubectl("get", "secret", secret["name"], "-n", args.namespace, "-o", f"jsonpath={{.data.{secret['key']}}}")
    token = base64.b64decode(token_b64).decode()

    request = urllib.request.Request(
        status["endpoint"] + "/v1/executions",
        data=json.dumps({"code": args.code}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    final = None
    with urllib.request.urlopen(request, timeout=60) as response:
        for line in response:
            if not line.strip():
                continue
            event = json.loads(line)
            kind = event.get("type")
            if kind == "output":
                stream = sys.stdout if event.get("stream") == "stdout" else sys.stderr
                stream.write(event.get("text", ""))
                stream.flush()
            elif kind != "started":
                final = event
    if final is None:
        sys.exit("the stream ended without a final event")
    if final.get("type") == "result":
        print(f"=> {final.get('repr')}")
    else:
        print(f"execution ended: {json.dumps(final)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
