#!/usr/bin/env python3
"""Runs Python on a Capsule session with the SDK (capsule-client, clients/python).

Usage: sdk_demo.py --pool POOL        create a session, run, delete it (the three lines below)
       sdk_demo.py --session NAME     attach to an existing session (make demo's demo-session)
Options: --namespace NS, --gateway URL (default $CAPSULE_GATEWAY_URL; unset = call the worker directly).
"""
import argparse
import sys

from capsule_client import CapsuleError, Session

CODE = 'import platform\nprint("hello from a warm Capsule worker on Python", platform.python_version())\n6 * 7'


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--pool")
    which.add_argument("--session")
    p.add_argument("--namespace")
    p.add_argument("--gateway")
    args = p.parse_args()
    try:
        if args.pool:
            with Session.create(args.pool, namespace=args.namespace, gateway_url=args.gateway) as s:
                print("=>", s.run(CODE).repr)
        else:
            with Session.attach(args.session, namespace=args.namespace, gateway_url=args.gateway) as s:
                result = s.run(CODE)
                print("=>", result.repr, f"({result.duration_ms} ms on {s.worker})")
    except CapsuleError as e:
        print(f"sdk_demo: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
