"""Where a session's calls go and how HTTP failures become typed errors.

Direct mode: `{status.endpoint}/v1/{suffix}`. Gateway mode: `{gateway}/v1/sessions/{ns}/{name}/{suffix}`,
same bearer token; the gateway answers its own errors as JSON `{"code", "message"}`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import httpx

from . import errors
from .events import Event

#: Env var naming the gateway when `gateway_url` is not passed.
GATEWAY_ENV = "CAPSULE_GATEWAY_URL"
#: Connect and request timeouts for calls that are not execution streams (a reset waits for the
#: queued executions and a fresh interpreter, hence the long read).
CALL_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0)
#: Execution streams have no read timeout: code may print nothing for a long time.
STREAM_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)
#: Error bodies are read up to this size.
MAX_ERROR_BODY = 64 * 1024


def gateway_from_env(gateway_url: Optional[str]) -> Optional[str]:
    url = gateway_url if gateway_url is not None else os.environ.get(GATEWAY_ENV) or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise errors.ConfigError(f"gateway URL {url!r} must start with http:// or https:// (argument gateway_url or ${GATEWAY_ENV})")
    return url.rstrip("/") if url else None


@dataclass(frozen=True)
class Route:
    """How to reach one session: its base URL, whether it is the gateway, and its token."""

    base: str
    token: str
    via_gateway: bool

    @classmethod
    def direct(cls, endpoint: str, token: str) -> "Route":
        return cls(endpoint.rstrip("/") + "/v1", token, False)

    @classmethod
    def gateway(cls, gateway: str, namespace: str, name: str, token: str) -> "Route":
        return cls(f"{gateway.rstrip('/')}/v1/sessions/{namespace}/{name}", token, True)

    def url(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    @property
    def headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unreachable(self, exc: Exception) -> errors.CapsuleError:
        """The typed error for a connection failure (the caller may refine a direct one to WorkerLost)."""
        if self.via_gateway:
            return errors.GatewayUnreachable(
                f"the gateway at {self.base.split('/v1/')[0]} did not answer ({type(exc).__name__}: {exc}); "
                f"check the URL (--gateway / ${GATEWAY_ENV}) and that capsule-gateway runs"
            )
        return errors.WorkerUnreachable(
            f"the worker at {self.base[:-3]} did not answer ({type(exc).__name__}: {exc}); "
            f"outside the cluster, pass a gateway URL (--gateway / ${GATEWAY_ENV})"
        )


def error_for(status: int, body: bytes, where: str) -> errors.CapsuleError:
    """The typed error for an error reply; `where` names the session for the message."""
    code, message = "", body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(body[:MAX_ERROR_BODY])
        if isinstance(parsed, dict):
            code, message = str(parsed.get("code", "")), str(parsed.get("message", message))
    except ValueError:
        pass
    if status == 401:
        return errors.TokenRefused(f"{where}: the session token was refused (401 {code}: {message}); "
                                   "the session may have been re-created, attach again")
    if status == 404 and code == "sessionNotFound":
        return errors.SessionNotFound(where, "", message)
    if status == 409 and code in ("sessionNotBound", "noSession"):
        return errors.SessionNotBound(f"{where} holds no worker (409 {code}: {message})")
    if status == 502 and code == "workerUnreachable":
        return errors.WorkerUnreachable(f"{where}: the gateway could not reach the worker ({message})")
    return errors.APIError(status, code, message)


class LineBuffer:
    """Splits NDJSON byte chunks into lines, each at most `limit` bytes (a longer one raises);
    shared by the sync and the async streams."""

    def __init__(self, limit: int) -> None:
        self.limit, self.buf = limit, b""

    def feed(self, chunk: bytes) -> List[bytes]:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        if len(self.buf) > self.limit:
            raise errors.WorkerLost(f"the worker sent an event line longer than {self.limit} bytes")
        return [line for line in lines if line.strip()]

    def finish(self) -> List[bytes]:
        rest, self.buf = self.buf, b""
        return [rest] if rest.strip() else []


class EventReader:
    """Parses NDJSON byte chunks into events and notes whether the final one came; shared by the
    sync and the async streams."""

    def __init__(self, limit: int) -> None:
        self.lines = LineBuffer(limit)
        self.final = False

    def _parse(self, lines: List[bytes]) -> Iterator[Event]:
        # Lazily, event by event, as the callers yield them.
        for line in lines:
            ev = Event.parse(line)
            self.final = self.final or ev.final
            yield ev

    def feed(self, chunk: bytes) -> Iterator[Event]:
        return self._parse(self.lines.feed(chunk))

    def finish(self) -> Iterator[Event]:
        return self._parse(self.lines.finish())
