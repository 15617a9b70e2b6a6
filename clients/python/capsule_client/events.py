"""Execution events (worker/README.md "Execution stream") and the run's `Result`."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from . import errors

#: Event types that end a stream; exactly one ends every stream.
FINAL_TYPES = frozenset(
    {"result", "error", "cancelled", "timedOut", "outputDrainTimeout", "interpreterRestarted"}
)
#: One NDJSON line is at most this long (the worker cuts repr/evalue at 64 Ki characters and
#: tracebacks at 256 Ki; output chunks are smaller), so a broken peer cannot grow memory unbounded.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Output a `Result` keeps per stream; the rest still reaches `on_output` but is not kept.
MAX_CAPTURE_CHARS = 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One event of an execution stream: `type`, `execution_id` and the raw JSON in `data`."""

    type: str
    execution_id: str
    data: Dict[str, Any]

    @property
    def final(self) -> bool:
        return self.type in FINAL_TYPES

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @classmethod
    def parse(cls, line: bytes) -> "Event":
        if len(line) > MAX_LINE_BYTES:
            raise errors.WorkerLost(f"the worker sent an event line of {len(line)} bytes (limit {MAX_LINE_BYTES})")
        try:
            data = json.loads(line)
        except ValueError as e:
            raise errors.WorkerLost(f"the worker sent a line that is not JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise errors.WorkerLost("the worker sent an event without a `type`")
        return cls(data["type"], str(data.get("executionId", "")), data)


@dataclass
class Result:
    """What a finished execution returned: the `repr` of its last expression (None for a statement)
    and its metadata, plus the output it printed (each stream kept up to 1 MiB)."""

    execution_id: str
    repr: Optional[str]
    mode: str = "plain"
    duration_ms: int = 0
    namespace_lost: bool = False
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    #: Output chunks the worker dropped (backpressure `DropNew`/`DropOldest`); 0 when all arrived.
    output_dropped: int = 0
    data: Dict[str, Any] = field(default_factory=dict)


class Collector:
    """Folds a stream's events into a `Result`, or raises the typed error of its final event."""

    def __init__(self) -> None:
        self.execution_id = ""
        self.namespace_lost = False
        self._out = {"stdout": [], "stderr": []}  # type: Dict[str, list]
        self._sizes = {"stdout": 0, "stderr": 0}
        self.truncated = False
        self.final: Optional[Event] = None

    def add(self, ev: Event) -> None:
        self.execution_id = self.execution_id or ev.execution_id
        if ev.type == "started":
            self.namespace_lost = bool(ev.get("namespaceLost"))
        elif ev.type == "output":
            self._keep(ev.get("stream", "stdout"), ev.get("text", ""))
        elif ev.final:
            self.final = ev

    def _keep(self, stream: str, text: str) -> None:
        stream = stream if stream in self._out else "stdout"
        room = MAX_CAPTURE_CHARS - self._sizes[stream]
        if len(text) > room:
            text, self.truncated = text[: max(room, 0)], True
        if text:
            self._out[stream].append(text)
            self._sizes[stream] += len(text)

    def outcome(self) -> Result:
        ev = self.final
        if ev is None:
            raise errors.WorkerLost(
                f"the stream of execution {self.execution_id or '?'} ended without a final event: "
                "the worker or the connection went away"
            )
        dropped = int(ev.get("outputDropped") or 0)
        if ev.type == "result":
            if dropped:
                warnings.warn(errors.OutputDropped(errors.output_dropped_note(ev.execution_id, dropped)), stacklevel=3)
            return Result(
                execution_id=ev.execution_id,
                repr=ev.get("repr"),
                mode=ev.get("mode", "plain"),
                duration_ms=int(ev.get("durationMs") or 0),
                namespace_lost=self.namespace_lost,
                stdout="".join(self._out["stdout"]),
                stderr="".join(self._out["stderr"]),
                output_truncated=self.truncated,
                output_dropped=dropped,
                data=ev.data,
            )
        raise final_error(ev)


def final_error(ev: Event) -> errors.CapsuleError:
    """The typed error for a final event other than `result`, with `rolled_back` from the event."""
    err = _final_error(ev)
    err.rolled_back = bool(ev.get("rolledBack"))
    err.output_dropped = int(ev.get("outputDropped") or 0)
    return err


def _final_error(ev: Event) -> errors.CapsuleError:
    if ev.type == "error":
        return errors.ExecutionError(
            str(ev.get("ename", "Error")), str(ev.get("evalue", "")), ev.get("traceback") or [], ev.execution_id
        )
    if ev.type == "cancelled":
        return errors.ExecutionCancelled(f"execution {ev.execution_id} was cancelled")
    if ev.type == "timedOut":
        return errors.ExecutionTimedOut(f"execution {ev.execution_id} ran past its timeout of {ev.get('timeoutMs')} ms")
    if ev.type == "interpreterRestarted":
        return errors.InterpreterRestarted(ev.get("exitCode"), str(ev.get("reason", "")))
    if ev.type == "outputDrainTimeout":
        return errors.OutputLost(
            f"execution {ev.execution_id}: the worker gave up waiting for the client to read output "
            f"({ev.get('pending')} chunks discarded); read the stream faster or raise CAPSULE_DRAIN_TIMEOUT_MS"
        )
    return errors.CapsuleError(f"execution {ev.execution_id} ended with an unknown event {ev.type!r}")
