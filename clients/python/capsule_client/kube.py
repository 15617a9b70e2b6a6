"""The Kubernetes side: CapsuleSession create / watch until Bound / delete, the token Secret, pools.

Uses the official `kubernetes` client with the kubeconfig (or the in-cluster config). Blocking;
`AsyncSession` runs these calls in a worker thread.
"""
from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from . import errors

GROUP, VERSION = "capsule.dev", "v1alpha1"
SESSIONS, POOLS = "capsulesessions", "capsulepools"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: `capsule sessions` lists at most this many sessions per page, and this many pages.
LIST_PAGE, LIST_PAGES = 500, 20
#: Pause before reading the session again when a watch ended at once without an event.
WATCH_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Binding:
    """A Bound session: its worker, endpoint and token."""

    worker: str
    endpoint: str
    token: str


def load(context: Optional[str] = None) -> Tuple[client.ApiClient, str]:
    """An API client and the default namespace: in-cluster when running in a pod, else kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SA_NAMESPACE):
        config.load_incluster_config()
        with open(SA_NAMESPACE) as f:
            return client.ApiClient(), f.read().strip() or "default"
    try:
        # Read KUBECONFIG now: the client reads it once, at import time.
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        cfg = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
        _, active = config.list_kube_config_contexts(config_file=path)
    except Exception as e:  # the client raises ConfigException, OSError, or TypeError on odd files
        raise errors.ConfigError(
            f"no Kubernetes configuration ({e}); set KUBECONFIG or run inside the cluster"
        ) from None
    ns = (active or {}).get("context", {}).get("namespace") or "default"
    return client.ApiClient(cfg), ns


class Kube:
    """CapsuleSession and Secret calls for one API client."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)

    def check_pool(self, namespace: str, pool: str) -> None:
        """Raises PoolNotFound when the pool is missing; a caller who may not read pools skips the check."""
        try:
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, POOLS, pool)
        except ApiException as e:
            if e.status == 404:
                raise errors.PoolNotFound(pool, namespace) from None
            if e.status != 403:
                raise api_error(e, f"reading CapsulePool {pool}") from None

    def create_session(self, namespace: str, pool: str, name: Optional[str]) -> Dict[str, Any]:
        name = name or f"{pool[:40]}-{secrets.token_hex(4)}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CapsuleSession",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/created-by": "capsule-client"}},
            "spec": {"pool": pool},
        }
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, SESSIONS, body)
        except ApiException as e:
            raise api_error(e, f"creating CapsuleSession {name}") from None

    def get_session(self, namespace: str, name: str) -> Dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, SESSIONS, name)
        except ApiException as e:
            if e.status == 404:
                raise errors.SessionNotFound(name, namespace) from None
            raise api_error(e, f"reading CapsuleSession {name}") from None

    def delete_session(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, SESSIONS, name)
        except ApiException as e:
            if e.status != 404:
                raise api_error(e, f"deleting CapsuleSession {name}") from None

    def list_sessions(self, namespace: Optional[str]) -> List[Dict[str, Any]]:
        items: List[Dict[str, Any]] = []
        token = None
        for _ in range(LIST_PAGES):
            kw: Dict[str, Any] = {"limit": LIST_PAGE}
            if token:
                kw["_continue"] = token
            try:
                if namespace is None:
                    page = self.custom.list_cluster_custom_object(GROUP, VERSION, SESSIONS, **kw)
                else:
                    page = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, SESSIONS, **kw)
            except ApiException as e:
                raise api_error(e, "listing CapsuleSessions") from None
            items.extend(page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                break
        return items

    def read_token(self, namespace: str, name: str, ref: Dict[str, Any]) -> str:
        try:
            data = read_secret_data(self.api, namespace, ref["name"])
        except ApiException as e:
            raise api_error(e, f"reading the token Secret {ref.get('name')} of session {name}") from None
        raw = data.get(ref["key"])
        if raw is None:
            raise errors.CapsuleError(f"Secret {ref['name']} of session {name} has no key {ref['key']!r}")
        return base64.b64decode(raw).decode()

    def wait_bound(self, namespace: str, name: str, pool: str, timeout: float, obj: Dict[str, Any]) -> Binding:
        """Watches the session (from `obj`'s resourceVersion) until Bound; raises on Failed, a
        missing pool, or the timeout (PoolExhausted when the pool was full all along)."""
        deadline = time.monotonic() + timeout
        last = ("", "")
        while True:
            try:
                state = classify(obj, name, pool)
            except errors.SessionFailed as e:
                if e.reason == "AcquireTimeout" and last[0] == "PoolExhausted":
                    raise errors.PoolExhausted(pool, e.message) from None
                raise
            if state is not None and state[0] == "bound":
                status = obj["status"]
                token = self.read_token(namespace, name, status["tokenSecret"])
                return Binding(status.get("worker", ""), status["endpoint"], token)
            last = state[1:] if state else last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last[0] == "PoolExhausted":
                    raise errors.PoolExhausted(pool, last[1])
                raise errors.SessionTimeout(name, timeout, last[0], last[1])
            started = time.monotonic()
            changed = self._next_change(namespace, name, obj, remaining)
            if changed is None:
                # The watch ended without news: read the object (nothing missed in between), and
                # wait a little first if it ended at once, so a server that ends watches early
                # (or answers a list) costs a request a second, not a busy loop.
                if time.monotonic() - started < 1.0:
                    time.sleep(min(WATCH_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
                changed = self.get_session(namespace, name)
            obj = changed

    def _next_change(self, namespace: str, name: str, obj: Dict[str, Any], remaining: float) -> Optional[Dict[str, Any]]:
        """The session's next version from a watch (None when the watch ended without one)."""
        w = watch.Watch()
        rv = obj.get("metadata", {}).get("resourceVersion")
        try:
            for ev in w.stream(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, SESSIONS,
                field_selector=f"metadata.name={name}", resource_version=rv,
                timeout_seconds=max(1, int(remaining + 0.999)), _request_timeout=remaining + 10,
            ):
                if ev["type"] == "DELETED":
                    raise errors.SessionNotFound(name, namespace, "deleted while waiting for a worker")
                if ev["type"] in ("ADDED", "MODIFIED"):
                    w.stop()
                    return ev["object"]
        except ApiException as e:
            if e.status != 410:  # 410 Gone: the resourceVersion is too old; read the object again
                raise api_error(e, f"watching CapsuleSession {name}") from None
            return self.get_session(namespace, name)
        finally:
            w.stop()
        return None


def read_secret_data(api: client.ApiClient, namespace: str, name: str) -> Dict[str, str]:
    """A Secret's `data`. Importing `CoreV1Api` costs seconds (thousands of validated methods),
    which a kernel or CLI start would pay each time; clients with the request builder
    (`param_serialize`) send the one GET through the same ApiClient instead."""
    if not hasattr(api, "param_serialize"):
        secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
        return secret.data or {}
    request = api.param_serialize(
        "GET", "/api/v1/namespaces/{namespace}/secrets/{name}",
        path_params={"namespace": namespace, "name": name},
        header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=30)
    response.read()
    obj = api.response_deserialize(response, {"200": "object"}).data
    return (obj or {}).get("data") or {}


def classify(obj: Dict[str, Any], name: str, pool: str) -> Optional[Tuple[str, str, str]]:
    """("bound", "", "") or ("pending", reason, message); raises for a session that cannot bind."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        raise errors.SessionNotFound(name, meta.get("namespace", ""), "it is being deleted")
    status = obj.get("status") or {}
    phase = status.get("phase", "Pending")
    if phase == "Bound" and status.get("endpoint") and status.get("tokenSecret"):
        return ("bound", "", "")
    reason, message = status.get("reason") or "", status.get("message") or ""
    if phase in ("Failed", "Released"):
        if reason == "PoolNotFound":
            raise errors.PoolNotFound(pool, obj.get("metadata", {}).get("namespace", ""), message)
        if reason == "WorkerLost":
            raise errors.WorkerLost(f"session {name} lost its worker: {message}")
        raise errors.SessionFailed(name, phase, reason, message)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Bound":
            reason, message = cond.get("reason") or "", cond.get("message") or ""
    if reason == "PoolNotFound":
        raise errors.PoolNotFound(pool, obj.get("metadata", {}).get("namespace", ""), message)
    return ("pending", reason, message)


def api_error(e: ApiException, doing: str) -> errors.CapsuleError:
    """A one-line error for a Kubernetes API failure."""
    import json

    message = e.reason or ""
    try:
        message = json.loads(e.body).get("message", message)
    except Exception:
        pass
    if e.status in (401, 403):
        return errors.ConfigError(f"{doing}: the Kubernetes API refused ({e.status}): {message}; check your RBAC")
    return errors.APIError(e.status or 0, "kubernetes", f"{doing}: {message}")
