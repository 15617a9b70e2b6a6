"""`AsyncSession`: the asyncio SDK, the same surface as `Session` with `await`.

Kubernetes calls (the official client is blocking) run in a thread; HTTP uses httpx.AsyncClient.
Callbacks may be plain functions or coroutines.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import httpx

from . import errors, kube
from ._base import SessionBase, print_output
from .events import MAX_LINE_BYTES, Collector, Event, Result
from .transport import CALL_TIMEOUT, MAX_ERROR_BODY, STREAM_TIMEOUT, EventReader, error_for, gateway_from_env


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class AsyncSession(SessionBase):
    """`Session` for asyncio: `async with await AsyncSession.create("pool") as s: await s.run(...)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(timeout=CALL_TIMEOUT)

    @classmethod
    async def create(cls, pool: str, namespace: Optional[str] = None, timeout: float = 60.0,
                     gateway_url: Optional[str] = None, name: Optional[str] = None,
                     context: Optional[str] = None) -> "AsyncSession":
        gateway = gateway_from_env(gateway_url)
        api, default_ns = await asyncio.to_thread(kube.load, context)
        k, ns = kube.Kube(api), namespace or default_ns
        await asyncio.to_thread(k.check_pool, ns, pool)
        obj = await asyncio.to_thread(k.create_session, ns, pool, name)
        name = obj["metadata"]["name"]
        try:
            binding = await asyncio.to_thread(k.wait_bound, ns, name, pool, timeout, obj)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(k.delete_session, ns, name))
            raise
        return cls(k, ns, name, pool, binding, gateway, True)

    @classmethod
    async def attach(cls, name: str, namespace: Optional[str] = None, gateway_url: Optional[str] = None,
                     timeout: float = 60.0, context: Optional[str] = None) -> "AsyncSession":
        gateway = gateway_from_env(gateway_url)
        api, default_ns = await asyncio.to_thread(kube.load, context)
        k, ns = kube.Kube(api), namespace or default_ns
        obj = await asyncio.to_thread(k.get_session, ns, name)
        pool = obj.get("spec", {}).get("pool", "")
        binding = await asyncio.to_thread(k.wait_bound, ns, name, pool, timeout, obj)
        return cls(k, ns, name, pool, binding, gateway, False)

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.delete_on_exit:
            await self.delete()
        else:
            await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def delete(self) -> None:
        try:
            await asyncio.to_thread(self.kube.delete_session, self.namespace, self.name)
        finally:
            await self.close()

    async def run(self, code: str, timeout: Optional[float] = None,
                  on_output: Optional[Callable[[str, str], Any]] = print_output,
                  on_input: Optional[Callable[[str], Any]] = None,
                  transaction: Optional[str] = None) -> Result:
        """As `Session.run`; a cancelled task (or Ctrl-C under asyncio.run) cancels the execution."""
        col = Collector()
        events = self.stream(code, timeout, transaction)
        try:
            async for ev in events:
                col.add(ev)
                if ev.type == "output" and on_output is not None:
                    await _maybe_await(on_output(ev.get("stream", "stdout"), ev.get("text", "")))
                elif ev.type == "inputRequest":
                    if on_input is None:
                        await self.cancel(ev.execution_id)
                        raise self.no_input_handler(ev)
                    value = await _maybe_await(on_input(ev.get("prompt", "")))
                    await self.send_input(ev.execution_id, ev.get("inputId"), value)
        except (asyncio.CancelledError, KeyboardInterrupt):
            eid = col.execution_id or self.current
            if eid:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.cancel(eid))
            raise
        finally:
            await events.aclose()
        return col.outcome()

    async def stream(self, code: str, timeout: Optional[float] = None,
                     transaction: Optional[str] = None) -> AsyncIterator[Event]:
        body = self.execute_body(code, timeout, transaction)
        reader = EventReader(MAX_LINE_BYTES)
        try:
            async with self._http.stream("POST", self.route.url("executions"), json=body,
                                         headers=self.route.headers, timeout=STREAM_TIMEOUT) as resp:
                if resp.status_code != 200:
                    err = error_for(resp.status_code, await _read_bounded(resp), self.where)
                    raise await asyncio.to_thread(self.refine_reply, err)
                self.current = resp.headers.get("x-capsule-execution-id") or None
                async for chunk in resp.aiter_bytes():
                    for ev in reader.feed(chunk):
                        yield ev
                for ev in reader.finish():
                    yield ev
        except httpx.ConnectError as e:
            raise await asyncio.to_thread(self.refine_unreachable, e) from None
        except httpx.TransportError as e:
            if not reader.final:
                raise self.lost_mid_run(e) from None
        finally:
            self.current = None
        if not reader.final:
            raise self.lost_stream()

    async def send_input(self, execution_id: str, input_id: str, value: str) -> None:
        body = self.input_body(Event("inputRequest", execution_id, {"inputId": input_id}), value)
        await self._call("POST", f"executions/{self.q(execution_id)}/input", json=body)

    async def cancel(self, execution_id: Optional[str] = None) -> Optional[str]:
        eid = execution_id or self.current
        if not eid:
            return None
        reply = await self._call("POST", f"executions/{self.q(eid)}/cancel")
        return (reply or {}).get("status")

    async def reset(self) -> Dict[str, Any]:
        return await self._call("POST", "reset") or {}

    async def checkpoint(self, **metadata: str) -> Dict[str, Any]:
        return await self._call("GET", "checkpoint", params=metadata) or {}

    async def save_checkpoint(self) -> Dict[str, Any]:
        return await self._call("POST", "checkpoints", json={}) or {}

    async def list_checkpoints(self) -> List[Dict[str, Any]]:
        return (await self._call("GET", "checkpoints") or {}).get("checkpoints", [])

    async def restore_checkpoint(self, checkpoint_id: str = "latest") -> Dict[str, Any]:
        return await self._call("POST", f"checkpoints/{self.q(checkpoint_id)}/restore", json={}) or {}

    async def stats(self) -> Dict[str, Any]:
        return await self._call("GET", "stats") or {}

    async def resolve(self, promise_id: str, value: Any) -> None:
        await self._call("POST", f"promises/{self.q(promise_id)}/resolve", json={"value": value})

    async def reject(self, promise_id: str, reason: str) -> None:
        await self._call("POST", f"promises/{self.q(promise_id)}/reject", json={"reason": reason})

    async def _call(self, method: str, suffix: str, **kw: Any) -> Optional[Dict[str, Any]]:
        try:
            resp = await self._http.request(method, self.route.url(suffix), headers=self.route.headers, **kw)
        except httpx.ConnectError as e:
            raise await asyncio.to_thread(self.refine_unreachable, e) from None
        except httpx.TransportError as e:
            raise errors.WorkerLost(f"{self.where}: {method} {suffix} failed ({type(e).__name__}: {e})") from None
        if resp.status_code >= 400:
            err = error_for(resp.status_code, resp.content[:MAX_ERROR_BODY], self.where)
            raise await asyncio.to_thread(self.refine_reply, err)
        return resp.json() if resp.content else None


async def _read_bounded(resp: httpx.Response) -> bytes:
    out = b""
    async for chunk in resp.aiter_bytes():
        out += chunk
        if len(out) >= MAX_ERROR_BODY:
            break
    return out[:MAX_ERROR_BODY]
