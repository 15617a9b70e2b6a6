"""Typed errors: one class per failure a user meets, all under `CapsuleError`.

Every message names what went wrong and what to do about it; the fields carry the same facts for
code that handles the error.
"""
from __future__ import annotations

from typing import List, Optional


class CapsuleError(Exception):
    """Base class of every error this package raises."""

    #: Set on the error of an execution run with `transaction="rollbackOnError"` (ExecutionError,
    #: ExecutionCancelled, ExecutionTimedOut, OutputLost): the namespace was put back as it was
    #: before the code. False when it was not (e.g. the interpreter had to be killed).
    rolled_back: bool = False
    #: Output chunks of the execution that never reached the client (the pool's backpressure
    #: policy dropped them, or a drain timeout discarded them); 0 when all arrived.
    output_dropped: int = 0


class ConfigError(CapsuleError):
    """No usable Kubernetes configuration, or an argument the user can fix."""


class PoolNotFound(CapsuleError):
    """The CapsulePool named by the session does not exist in its namespace."""

    def __init__(self, pool: str, namespace: str, detail: str = "") -> None:
        self.pool, self.namespace = pool, namespace
        msg = f"CapsulePool {pool!r} does not exist in namespace {namespace!r}: create it or pass another pool"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class PoolExhausted(CapsuleError):
    """Every worker of the pool is in use (spec.maxWorkers) and none was released in time."""

    def __init__(self, pool: str, message: str) -> None:
        self.pool = pool
        super().__init__(f"pool {pool!r} is exhausted: {message}")


class SessionTimeout(CapsuleError):
    """The session did not become Bound within the client's timeout."""

    def __init__(self, name: str, timeout: float, reason: str, message: str) -> None:
        self.name, self.timeout, self.reason = name, timeout, reason
        super().__init__(
            f"session {name!r} was not Bound within {timeout:g}s "
            f"(last reason {reason or 'none'}: {message or 'no message'}); raise timeout= or check the operator"
        )


class SessionFailed(CapsuleError):
    """The operator marked the session Failed (or Released); `reason` is the status reason."""

    def __init__(self, name: str, phase: str, reason: str, message: str) -> None:
        self.name, self.phase, self.reason, self.message = name, phase, reason, message
        super().__init__(f"session {name!r} is {phase} ({reason or 'no reason'}): {message or 'no message'}")


class SessionNotFound(CapsuleError):
    """No CapsuleSession of that name (deleted, or never created)."""

    def __init__(self, name: str, namespace: str, detail: str = "") -> None:
        self.name, self.namespace = name, namespace
        msg = f"CapsuleSession {name!r} not found in namespace {namespace!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class SessionNotBound(CapsuleError):
    """The session exists but holds no worker (still Pending, or released)."""


class WorkerLost(CapsuleError):
    """The session's worker went away mid-run (connection dropped, interpreter died, pod lost)."""


class InterpreterRestarted(WorkerLost):
    """The interpreter died during the run; its namespace is lost."""

    def __init__(self, exit_code: Optional[int], reason: str) -> None:
        self.exit_code, self.reason = exit_code, reason
        super().__init__(f"the interpreter died (exit code {exit_code}, {reason}); its namespace is lost")


class TokenRefused(CapsuleError):
    """The worker or the gateway refused the session token (401)."""


class GatewayUnreachable(CapsuleError):
    """The gateway URL did not answer (connection refused, DNS, TLS)."""


class WorkerUnreachable(CapsuleError):
    """The worker endpoint did not answer (direct mode), or the gateway could not reach it."""


class APIError(CapsuleError):
    """Any other error reply of the worker or gateway: HTTP status plus its `code` and `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"HTTP {status} {code}: {message}")


class ExecutionError(CapsuleError):
    """The code raised; `ename`, `evalue` and the remote `traceback` lines are those of the worker."""

    def __init__(self, ename: str, evalue: str, traceback: List[str], execution_id: str = "") -> None:
        self.ename, self.evalue, self.traceback, self.execution_id = ename, evalue, list(traceback), execution_id
        super().__init__(f"{ename}: {evalue}")

    def __str__(self) -> str:
        tb = "".join(line if line.endswith("\n") else line + "\n" for line in self.traceback)
        return f"{self.ename}: {self.evalue}" + (f"\n\nRemote traceback:\n{tb}" if tb else "")


class ExecutionCancelled(CapsuleError):
    """The execution was cancelled (by `cancel()`, an interrupt, or another client)."""


class ExecutionTimedOut(CapsuleError):
    """The execution ran past its `timeout`."""


class OutputLost(CapsuleError):
    """The worker could not deliver every output chunk (drain timeout); output is incomplete."""


class InputNotHandled(CapsuleError):
    """The code called input() but run() was given no `on_input` callback."""


class OutputDropped(UserWarning):
    """Warned when a run finished but some of its output was dropped on the worker (the pool's
    `spec.executor.backpressure` is `DropNew` or `DropOldest` and the client read slower than the
    code printed). `Result.output_dropped` has the count."""


def output_dropped_note(execution_id: str, dropped: int) -> str:
    """The one-line note the SDK warns and the CLI, shell and kernel print."""
    return (
        f"execution {execution_id}: {dropped} output chunk(s) were dropped on the worker by the pool's "
        "backpressure policy; set spec.executor.backpressure to Block to keep every chunk"
    )
