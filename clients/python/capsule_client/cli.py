"""`capsule`: run a file on a fresh session, an interactive shell, list sessions, install the kernel.

Exit codes: 0 ok, 1 the code raised (or was cancelled / timed out), 2 usage, 3 a Capsule error
(pool missing, token refused, gateway unreachable, ...), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

from . import __version__, errors
from .events import Result
from .session import Session

EXIT_CODE_FAILED, EXIT_USAGE, EXIT_CAPSULE, EXIT_INTERRUPTED = 1, 2, 3, 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="capsule", description="Run Python on warm Capsule workers.")
    p.add_argument("--version", action="version", version=f"capsule-client {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace of the session (default: the kubeconfig's)")
    common.add_argument("--gateway", help="capsule-gateway URL (default: $CAPSULE_GATEWAY_URL; unset = call the worker directly)")
    common.add_argument("--context", help="kubeconfig context")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", parents=[common], help="run a file (or - for stdin) on a new session, then delete it")
    run.add_argument("--pool", required=True, help="the CapsulePool to take a worker from")
    run.add_argument("--timeout", type=float, help="seconds the code may run")
    run.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a worker (default 60)")
    run.add_argument("file", help="Python file to run, or - to read the code from stdin")

    shell = sub.add_parser("shell", parents=[common], help="an interactive Python shell on a new session")
    shell.add_argument("--pool", required=True, help="the CapsulePool to take a worker from")
    shell.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a worker (default 60)")

    ls = sub.add_parser("sessions", parents=[common], help="list CapsuleSessions with their phase, pool and worker")
    ls.add_argument("-A", "--all-namespaces", action="store_true", help="sessions of every namespace")

    kernel = sub.add_parser("kernel", help="the capsule-python Jupyter kernel")
    ksub = kernel.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    inst = ksub.add_parser("install", help="install the capsule-python kernelspec")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data directory")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels (e.g. a virtualenv)")
    where.add_argument("--sys-prefix", action="store_true", help="into sys.prefix (this Python's environment)")
    inst.add_argument("--pool", help="pool the kernel uses (default: $CAPSULE_POOL when the kernel starts)")
    inst.add_argument("--namespace", help="namespace of the kernel's sessions")
    inst.add_argument("--gateway", help="gateway URL the kernel uses")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    # Each run prints its own note on dropped output (`report_dropped`), every time, not once.
    warnings.simplefilter("ignore", errors.OutputDropped)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "shell":
            from .shell import run_shell

            return run_shell(args)
        if args.command == "sessions":
            return cmd_sessions(args)
        from .kernel.install import install

        print(install(user=args.user, prefix=args.prefix, sys_prefix=args.sys_prefix,
                      pool=args.pool, namespace=args.namespace, gateway=args.gateway))
        return 0
    except KeyboardInterrupt:
        print("capsule: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors.CapsuleError as e:
        return fail(e)


def fail(e: errors.CapsuleError) -> int:
    """One line for a Capsule error; the remote traceback too for a code error."""
    if isinstance(e, errors.ExecutionError):
        sys.stderr.write("".join(l if l.endswith("\n") else l + "\n" for l in e.traceback) or f"{e.ename}: {e.evalue}\n")
        return EXIT_CODE_FAILED
    if isinstance(e, (errors.ExecutionCancelled, errors.ExecutionTimedOut)):
        print(f"capsule: {e}", file=sys.stderr)
        return EXIT_CODE_FAILED
    print(f"capsule: error: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
    return EXIT_CAPSULE


def read_code(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise errors.ConfigError(f"cannot read {path}: {e.strerror}") from None


def terminal_input(prompt: str) -> str:
    """input() in the remote code reads a line of the local terminal."""
    try:
        return input(prompt)
    except EOFError:
        raise errors.InputNotHandled("the code called input() but stdin is closed; run it from a terminal") from None


def cmd_run(args: argparse.Namespace) -> int:
    code = read_code(args.file)
    with Session.create(args.pool, namespace=args.namespace, timeout=args.wait, gateway_url=args.gateway,
                        context=args.context) as s:
        result = s.run(code, timeout=args.timeout, on_input=terminal_input)
    report_dropped(result)
    if result.repr is not None:
        print(result.repr)
    return 0


def report_dropped(result: "Result") -> None:
    """Says on stderr that some of the run's output never arrived."""
    if result.output_dropped:
        print(f"capsule: {errors.output_dropped_note(result.execution_id, result.output_dropped)}", file=sys.stderr)


def cmd_sessions(args: argparse.Namespace) -> int:
    from . import kube

    api, default_ns = kube.load(args.context)
    ns = None if args.all_namespaces else (args.namespace or default_ns)
    items = kube.Kube(api).list_sessions(ns)
    rows = [["NAMESPACE"] if ns is None else []]
    rows[0] += ["NAME", "PHASE", "POOL", "WORKER", "REASON"]
    for it in items:
        meta, st = it.get("metadata", {}), it.get("status") or {}
        row = [meta.get("namespace", "")] if ns is None else []
        row += [meta.get("name", ""), st.get("phase", "Pending"), it.get("spec", {}).get("pool", ""),
                st.get("worker") or "-", st.get("reason") or _pending_reason(st) or "-"]
        rows.append(row)
    if len(rows) == 1:
        print(f"No CapsuleSessions in {'any namespace' if ns is None else 'namespace ' + ns}.")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _pending_reason(status: dict) -> str:
    if status.get("phase", "Pending") != "Pending":
        return ""
    return next((c.get("reason", "") for c in status.get("conditions") or [] if c.get("type") == "Bound"), "")


if __name__ == "__main__":
    sys.exit(main())
