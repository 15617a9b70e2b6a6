"""What the sync and async sessions share: identity, route, request bodies, error refinement."""
from __future__ import annotations

import sys
from typing import Any, Dict, Optional
from urllib.parse import quote

from . import errors
from .events import Event
from .kube import Binding, Kube, classify
from .transport import Route

#: Input a user callback may return; the worker's request body limit is 1 MiB.
MAX_INPUT_CHARS = 512 * 1024
#: Accepted `transaction=` values: "rollbackOnError" puts the namespace back as it was before the
#: code when the code raises, is cancelled or times out (the error's `rolled_back` is then True).
TRANSACTIONS = ("rollbackOnError",)


def print_output(stream: str, text: str) -> None:
    """The default `on_output`: the remote stdout/stderr go to the local ones as they arrive."""
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(text)
    out.flush()


class SessionBase:
    """A CapsuleSession bound to a worker, reached directly or through the gateway."""

    def __init__(self, kube: Kube, namespace: str, name: str, pool: str, binding: Binding,
                 gateway: Optional[str], delete_on_exit: bool) -> None:
        self.kube, self.namespace, self.name, self.pool = kube, namespace, name, pool
        self.worker, self.endpoint = binding.worker, binding.endpoint
        self.gateway = gateway
        self.delete_on_exit = delete_on_exit
        if gateway:
            self.route = Route.gateway(gateway, namespace, name, binding.token)
        else:
            self.route = Route.direct(binding.endpoint, binding.token)
        #: The execution this object is streaming, for `cancel()` without an id.
        self.current: Optional[str] = None

    def __repr__(self) -> str:
        via = f"gateway {self.gateway}" if self.gateway else self.endpoint
        return f"<{type(self).__name__} {self.namespace}/{self.name} pool={self.pool} worker={self.worker} via {via}>"

    @property
    def where(self) -> str:
        return f"session {self.namespace}/{self.name}"

    def refine_unreachable(self, exc: Exception) -> errors.CapsuleError:
        """A connection failure in direct mode: WorkerLost when the operator already marked the
        session so, else WorkerUnreachable. Through the gateway: GatewayUnreachable."""
        plain = self.route.unreachable(exc)
        if self.route.via_gateway:
            return plain
        told = self._status_error()
        return plain if told is None else told

    def refine_reply(self, err: errors.CapsuleError) -> errors.CapsuleError:
        """A gateway's `sessionNotBound` / `workerUnreachable` or a worker's `noSession`: the
        session's status says why (WorkerLost, Failed, being deleted) once the operator saw it."""
        if not isinstance(err, (errors.SessionNotBound, errors.WorkerUnreachable)):
            return err
        told = self._status_error()
        return err if told is None else told

    def _status_error(self) -> Optional[errors.CapsuleError]:
        """The error the session's status tells of, if any."""
        try:
            classify(self.kube.get_session(self.namespace, self.name), self.name, self.pool)
        except errors.CapsuleError as e:
            return e
        return None

    def lost_mid_run(self, exc: Exception) -> errors.WorkerLost:
        """The connection dropped before the stream's final event."""
        return errors.WorkerLost(
            f"{self.where}: the connection to the worker dropped mid-run ({type(exc).__name__}: {exc})"
        )

    def lost_stream(self) -> errors.WorkerLost:
        """The stream ended without its final event."""
        return errors.WorkerLost(f"{self.where}: the stream ended without a final event (worker lost?)")

    @staticmethod
    def execute_body(code: str, timeout: Optional[float], transaction: Optional[str] = None) -> Dict[str, Any]:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        body: Dict[str, Any] = {"code": code}
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout must be positive seconds, got {timeout}")
            body["timeoutMs"] = max(1, int(timeout * 1000))
        if transaction is not None:
            if transaction not in TRANSACTIONS:
                raise ValueError(
                    f"transaction must be one of {', '.join(TRANSACTIONS)} (or None), got {transaction!r}"
                )
            body["transaction"] = transaction
        return body

    @staticmethod
    def input_body(ev: Event, value: Any) -> Dict[str, Any]:
        if not isinstance(value, str):
            raise TypeError(f"on_input must return a str, got {type(value).__name__}")
        if len(value) > MAX_INPUT_CHARS:
            raise ValueError(f"input of {len(value)} characters is over the limit of {MAX_INPUT_CHARS}")
        return {"inputId": ev.get("inputId"), "value": value}

    @staticmethod
    def no_input_handler(ev: Event) -> errors.InputNotHandled:
        return errors.InputNotHandled(
            f"the code called input({ev.get('prompt', '')!r}) but run() got no on_input callback; "
            "pass on_input=lambda prompt: ... (the execution was cancelled)"
        )

    @staticmethod
    def q(value: str) -> str:
        return quote(value, safe="")
