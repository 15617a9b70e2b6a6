"""`capsule shell`: a Python REPL whose code runs on a session.

Lines are gathered locally until `codeop` says the statement is complete, then run remotely.
Ctrl-C while code runs cancels it on the worker; Ctrl-C at an empty prompt, or Ctrl-D, exits and
deletes the session.
"""
from __future__ import annotations

import argparse
import codeop
import sys

from . import errors
from .cli import report_dropped
from .session import Session

BANNER = "Capsule shell on {ns}/{name} (pool {pool}, worker {worker}). Ctrl-C cancels a run; Ctrl-C at an empty prompt or Ctrl-D exits."


def read_statement() -> str:
    """One complete statement from the terminal (KeyboardInterrupt / EOFError pass through)."""
    lines: list = []
    while True:
        try:
            line = input("... " if lines else ">>> ")
        except KeyboardInterrupt:
            if not lines:
                raise
            print("\nKeyboardInterrupt")  # a half-typed statement is dropped, as in python
            lines = []
            continue
        lines.append(line)
        source = "\n".join(lines)
        try:
            if codeop.compile_command(source, "<capsule>", "single") is not None:
                return source
        except (SyntaxError, OverflowError, ValueError):
            return source  # the worker reports the error with its traceback
        if not line.strip() and len(lines) > 1:
            return source


def run_one(s: Session, source: str) -> None:
    try:
        result = s.run(source, on_input=lambda prompt: input(prompt))
    except errors.ExecutionError as e:
        sys.stderr.write("".join(l if l.endswith("\n") else l + "\n" for l in e.traceback) or f"{e.ename}: {e.evalue}\n")
        return
    except errors.ExecutionCancelled:
        print("KeyboardInterrupt (cancelled on the worker)", file=sys.stderr)
        return
    except KeyboardInterrupt:
        print("\nKeyboardInterrupt (cancelled on the worker)", file=sys.stderr)
        return
    report_dropped(result)
    if result.repr is not None:
        print(result.repr)


def run_shell(args: argparse.Namespace) -> int:
    try:
        import readline  # noqa: F401  (line editing and history when available)
    except ImportError:
        pass
    print(f"capsule: waiting for a worker of pool {args.pool}...", file=sys.stderr)
    with Session.create(args.pool, namespace=args.namespace, timeout=args.wait, gateway_url=args.gateway,
                        context=args.context) as s:
        print(BANNER.format(ns=s.namespace, name=s.name, pool=s.pool, worker=s.worker), flush=True)
        while True:
            try:
                source = read_statement()
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()
                break
            if source.strip():
                run_one(s, source)
        print(f"capsule: deleting session {s.namespace}/{s.name}", file=sys.stderr)
    return 0
