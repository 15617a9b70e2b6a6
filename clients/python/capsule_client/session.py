"""`Session`: the blocking SDK. See docs/clients.md."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx

from . import errors, kube
from ._base import SessionBase, print_output
from .events import MAX_LINE_BYTES, Collector, Event, Result
from .transport import CALL_TIMEOUT, MAX_ERROR_BODY, STREAM_TIMEOUT, EventReader, error_for, gateway_from_env

OnOutput = Optional[Callable[[str, str], Any]]
OnInput = Optional[Callable[[str], str]]


class Session(SessionBase):
    """A CapsuleSession holding one warm worker. Use `Session.create` or `Session.attach`;
    `with` deletes a created session on exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(timeout=CALL_TIMEOUT)

    @classmethod
    def create(cls, pool: str, namespace: Optional[str] = None, timeout: float = 60.0,
               gateway_url: Optional[str] = None, name: Optional[str] = None,
               context: Optional[str] = None) -> "Session":
        """Creates a CapsuleSession on `pool`, watches it until Bound (at most `timeout` seconds)
        and reads its token. A session that fails to bind is deleted before the error is raised."""
        gateway = gateway_from_env(gateway_url)
        api, default_ns = kube.load(context)
        k, ns = kube.Kube(api), namespace or default_ns
        k.check_pool(ns, pool)
        obj = k.create_session(ns, pool, name)
        name = obj["metadata"]["name"]
        try:
            binding = k.wait_bound(ns, name, pool, timeout, obj)
        except BaseException:
            with contextlib.suppress(Exception):
                k.delete_session(ns, name)
            raise
        return cls(k, ns, name, pool, binding, gateway, True)

    @classmethod
    def attach(cls, name: str, namespace: Optional[str] = None, gateway_url: Optional[str] = None,
               timeout: float = 60.0, context: Optional[str] = None) -> "Session":
        """An existing session (waits up to `timeout` for it to be Bound); `with` does not delete it."""
        gateway = gateway_from_env(gateway_url)
        api, default_ns = kube.load(context)
        k, ns = kube.Kube(api), namespace or default_ns
        obj = k.get_session(ns, name)
        pool = obj.get("spec", {}).get("pool", "")
        binding = k.wait_bound(ns, name, pool, timeout, obj)
        return cls(k, ns, name, pool, binding, gateway, False)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.delete_on_exit:
            self.delete()
        else:
            self.close()

    def close(self) -> None:
        """Closes the HTTP connections; the session stays."""
        self._http.close()

    def delete(self) -> None:
        """Deletes the CapsuleSession (its worker is released) and closes the connections."""
        try:
            self.kube.delete_session(self.namespace, self.name)
        finally:
            self.close()

    # -- executions -------------------------------------------------------------------------

    def run(self, code: str, timeout: Optional[float] = None, on_output: OnOutput = print_output,
            on_input: OnInput = None, transaction: Optional[str] = None) -> Result:
        """Runs `code`, passing output to `on_output(stream, text)` as it arrives and `input()`
        prompts to `on_input(prompt) -> str`. Returns the `Result`; raises ExecutionError (with the
        remote traceback), ExecutionCancelled, ExecutionTimedOut, WorkerLost, ... Ctrl-C cancels
        the execution on the worker, then re-raises KeyboardInterrupt. With
        `transaction="rollbackOnError"` a failed, cancelled or timed-out run leaves the namespace as
        it was before the code (the raised error's `rolled_back` says it was put back)."""
        col = Collector()
        events = self.stream(code, timeout, transaction)
        try:
            for ev in events:
                col.add(ev)
                if ev.type == "output" and on_output is not None:
                    on_output(ev.get("stream", "stdout"), ev.get("text", ""))
                elif ev.type == "inputRequest":
                    if on_input is None:
                        self.cancel(ev.execution_id)
                        raise self.no_input_handler(ev)
                    self.send_input(ev.execution_id, ev.get("inputId"), on_input(ev.get("prompt", "")))
        except KeyboardInterrupt:
            if col.execution_id or self.current:
                with contextlib.suppress(Exception):
                    self.cancel(col.execution_id or self.current)
            raise
        finally:
            events.close()
        return col.outcome()

    def stream(self, code: str, timeout: Optional[float] = None,
               transaction: Optional[str] = None) -> Iterator[Event]:
        """Yields the execution's events as they arrive (`Event.type`: accepted, started, output,
        inputRequest, then one final event). Answer an inputRequest with `send_input`. Closing the
        iterator early disconnects, which cancels the execution."""
        body = self.execute_body(code, timeout, transaction)
        reader = EventReader(MAX_LINE_BYTES)
        try:
            with self._http.stream("POST", self.route.url("executions"), json=body,
                                   headers=self.route.headers, timeout=STREAM_TIMEOUT) as resp:
                if resp.status_code != 200:
                    raise self.refine_reply(error_for(resp.status_code, _read_bounded(resp), self.where))
                self.current = resp.headers.get("x-capsule-execution-id") or None
                for chunk in resp.iter_bytes():
                    for ev in reader.feed(chunk):
                        yield ev
                for ev in reader.finish():
                    yield ev
        except httpx.ConnectError as e:
            raise self.refine_unreachable(e) from None
        except httpx.TransportError as e:
            if not reader.final:
                raise self.lost_mid_run(e) from None
        finally:
            self.current = None
        if not reader.final:
            raise self.lost_stream()

    def send_input(self, execution_id: str, input_id: str, value: str) -> None:
        """Answers the `inputRequest` `input_id` of an execution."""
        body = self.input_body(Event("inputRequest", execution_id, {"inputId": input_id}), value)
        self._call("POST", f"executions/{self.q(execution_id)}/input", json=body)

    def cancel(self, execution_id: Optional[str] = None) -> Optional[str]:
        """Cancels an execution (default: the one this object streams). Returns the worker's
        status (`cancelling` or `notRunning`), or None when nothing runs here."""
        eid = execution_id or self.current
        if not eid:
            return None
        reply = self._call("POST", f"executions/{self.q(eid)}/cancel")
        return (reply or {}).get("status")

    def reset(self) -> Dict[str, Any]:
        """A fresh interpreter once the queued executions ran (the namespace is cleared)."""
        return self._call("POST", "reset") or {}

    def checkpoint(self, **metadata: str) -> Dict[str, Any]:
        """The namespace's metadata (names, sizes; never values); `metadata` is echoed back."""
        return self._call("GET", "checkpoint", params=metadata) or {}

    def save_checkpoint(self) -> Dict[str, Any]:
        """Saves the namespace to the pool's checkpoint store, sealed for this session: `id`,
        `sizeBytes`, `names` and what was `skipped` (with why). See docs/checkpoints.md."""
        return self._call("POST", "checkpoints", json={}) or {}

    def list_checkpoints(self) -> List[Dict[str, Any]]:
        """This session's checkpoints, newest first (`id`, `sizeBytes`, `names`, `createdAt`)."""
        return (self._call("GET", "checkpoints") or {}).get("checkpoints", [])

    def restore_checkpoint(self, checkpoint_id: str = "latest") -> Dict[str, Any]:
        """Replaces the interpreter with a fresh one holding the checkpoint's names; a refused
        restore (`APIError` 404 `checkpointNotFound`, 422 `checkpointCorrupt`) changes nothing."""
        return self._call("POST", f"checkpoints/{self.q(checkpoint_id)}/restore", json={}) or {}

    def stats(self) -> Dict[str, Any]:
        """The worker's counters (`WorkerStats`)."""
        return self._call("GET", "stats") or {}

    def resolve(self, promise_id: str, value: Any) -> None:
        """Resolves `capsule.promise(promise_id)` in the running code with a JSON value."""
        self._call("POST", f"promises/{self.q(promise_id)}/resolve", json={"value": value})

    def reject(self, promise_id: str, reason: str) -> None:
        """Rejects the promise: the code gets `capsule.PromiseError(reason)`."""
        self._call("POST", f"promises/{self.q(promise_id)}/reject", json={"reason": reason})

    def _call(self, method: str, suffix: str, **kw: Any) -> Optional[Dict[str, Any]]:
        try:
            resp = self._http.request(method, self.route.url(suffix), headers=self.route.headers, **kw)
        except httpx.ConnectError as e:
            raise self.refine_unreachable(e) from None
        except httpx.TransportError as e:
            raise errors.WorkerLost(f"{self.where}: {method} {suffix} failed ({type(e).__name__}: {e})") from None
        if resp.status_code >= 400:
            raise self.refine_reply(error_for(resp.status_code, resp.content[:MAX_ERROR_BODY], self.where))
        return resp.json() if resp.content else None


def _read_bounded(resp: httpx.Response) -> bytes:
    out = b""
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) >= MAX_ERROR_BODY:
            break
    return out[:MAX_ERROR_BODY]
