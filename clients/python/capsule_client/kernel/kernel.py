"""A Jupyter kernel whose cells run on a CapsuleSession.

On start it creates a session on `$CAPSULE_POOL` (namespace `$CAPSULE_NAMESPACE`, gateway
`$CAPSULE_GATEWAY_URL`, set by the kernelspec or the environment); each execute request becomes a
`Session.run` whose output, result, error and `input()` go to the frontend; an interrupt (the
kernel gets SIGINT) cancels the execution on the worker; shutdown deletes the session.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import platform
import threading
from typing import Any, Dict, Optional

from ipykernel.kernelbase import Kernel

from .. import __version__, errors
from ..session import Session

POOL_ENV, NAMESPACE_ENV, WAIT_ENV = "CAPSULE_POOL", "CAPSULE_NAMESPACE", "CAPSULE_WAIT_SECONDS"


class CapsuleKernel(Kernel):
    implementation = "capsule"
    implementation_version = __version__
    language = "python"
    language_version = platform.python_version()
    language_info = {"name": "python", "mimetype": "text/x-python", "file_extension": ".py",
                     "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3"}
    banner = "Capsule: Python on a warm worker"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capsule: Optional[Session] = None
        #: Why the session could not be created; every cell reports it instead of running.
        self.start_error: Optional[str] = None
        self._ready = threading.Event()
        pool = os.environ.get(POOL_ENV, "")
        if not pool:
            self.start_error = f"no pool: set ${POOL_ENV} or install the kernelspec with `capsule kernel install --pool P`"
            self._ready.set()
            return
        self.banner = f"Capsule Python on a warm worker of pool {pool}"
        # The session binds while ipykernel finishes starting; the first cell waits for it.
        threading.Thread(target=self._create_session, args=(pool,), name="capsule-session", daemon=True).start()
        atexit.register(self._delete_session)  # also when the kernel is killed without a shutdown request

    def _create_session(self, pool: str) -> None:
        try:
            self.capsule = Session.create(pool, namespace=os.environ.get(NAMESPACE_ENV) or None,
                                          timeout=float(os.environ.get(WAIT_ENV, "60")))
        except Exception as e:  # any failure is reported by every cell
            self.start_error = f"{type(e).__name__}: {e}"
        finally:
            self._ready.set()

    def do_execute(self, code: str, silent: bool, store_history: bool = True,
                   user_expressions: Optional[Dict[str, Any]] = None, allow_stdin: bool = False,
                   **_: Any) -> Dict[str, Any]:
        try:
            self._ready.wait()
        except KeyboardInterrupt:
            return self._error("KeyboardInterrupt", "interrupted while waiting for the session", [], silent)
        if self.capsule is None:
            return self._error("CapsuleSessionError", self.start_error or "no session", [], silent)
        if not code.strip():
            return self._ok()

        def on_output(stream: str, text: str) -> None:
            if not silent:
                self.send_response(self.iopub_socket, "stream", {"name": stream, "text": text})

        def on_input(prompt: str) -> str:
            if not allow_stdin:
                raise errors.InputNotHandled("this frontend does not support input()")
            return self.raw_input(prompt)

        self._allow_stdin = allow_stdin  # read by Kernel.raw_input
        try:
            result = self.capsule.run(code, on_output=on_output, on_input=on_input)
        except errors.ExecutionError as e:
            return self._error(e.ename, e.evalue, e.traceback, silent)
        except KeyboardInterrupt:
            # Session.run already cancelled the execution on the worker.
            return self._error("KeyboardInterrupt", "interrupted: the execution was cancelled on the worker", [], silent)
        except Exception as e:  # a Capsule error, or the frontend refusing input(): the cell fails, the kernel lives
            return self._error(type(e).__name__, str(e), [], silent)
        if result.output_dropped and not silent:
            note = errors.output_dropped_note(result.execution_id, result.output_dropped)
            self.send_response(self.iopub_socket, "stream", {"name": "stderr", "text": f"[capsule] {note}\n"})
        if result.repr is not None and not silent:
            self.send_response(self.iopub_socket, "execute_result", {
                "execution_count": self.execution_count, "data": {"text/plain": result.repr}, "metadata": {}})
        return self._ok()

    def do_shutdown(self, restart: bool) -> Dict[str, Any]:
        self._delete_session()
        return {"status": "ok", "restart": restart}

    def _delete_session(self) -> None:
        self._ready.wait(70)  # a session still being created is deleted once it exists
        session, self.capsule = self.capsule, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.delete()

    def _ok(self) -> Dict[str, Any]:
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def _error(self, ename: str, evalue: str, traceback: list, silent: bool) -> Dict[str, Any]:
        tb = [line.rstrip("\n") for line in traceback] or [f"{ename}: {evalue}"]
        content = {"ename": ename, "evalue": evalue, "traceback": tb}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}
