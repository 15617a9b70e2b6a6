"""The SDK's life cycle against real workers: create → run → stream → input → promise → cancel →
reset → checkpoint/stats → delete."""
from __future__ import annotations

import threading
import time

import pytest

import capsule_client as cc


def test_create_run_stream_input_promise_cancel_reset_delete(cluster, connection, pool):
    seen = []
    with cc.Session.create(pool, gateway_url=connection, timeout=60) as s:
        assert s.worker and s.endpoint.startswith("http://")
        # run: output streams to the callback, the last expression's repr comes back
        r = s.run("print('hi'); import sys; print('err', file=sys.stderr)\nx = 6\nx * 7",
                  on_output=lambda stream, text: seen.append((stream, text)))
        assert r.repr == "42" and r.stdout == "hi\n" and r.stderr == "err\n"
        assert "".join(t for st, t in seen if st == "stdout") == "hi\n"
        assert "".join(t for st, t in seen if st == "stderr") == "err\n"
        assert r.execution_id and r.duration_ms >= 0
        # the namespace persists between runs
        assert s.run("x", on_output=None).repr == "6"
        # a statement has no repr
        assert s.run("y = 1", on_output=None).repr is None

        # stream: the events in order, one final
        types = [ev.type for ev in s.stream("print(1)\n2")]
        assert types[0] == "accepted" and "started" in types and "output" in types and types[-1] == "result"

        # input(): answered by the callback with the prompt
        prompts = []
        r = s.run("name = input('who? ')\nname.upper()", on_output=None,
                  on_input=lambda p: prompts.append(p) or "ada")
        assert prompts == ["who? "] and r.repr == "'ADA'"

        # promise: resolved from another thread while the code waits on it
        def resolve_when_pending():
            for _ in range(100):
                pending = s.stats()["pendingPromises"]
                if any(p["id"] == "p1" for p in pending):
                    s.resolve("p1", {"n": 41})
                    return
                time.sleep(0.05)
        t = threading.Thread(target=resolve_when_pending)
        t.start()
        r = s.run("import capsule\ncapsule.promise('p1', timeout=20).result()['n'] + 1", on_output=None)
        t.join()
        assert r.repr == "42"

        # reject: the code sees capsule.PromiseError
        def reject_when_pending():
            for _ in range(100):
                if any(p["id"] == "p2" for p in s.stats()["pendingPromises"]):
                    s.reject("p2", "no way")
                    return
                time.sleep(0.05)
        t = threading.Thread(target=reject_when_pending)
        t.start()
        with pytest.raises(cc.ExecutionError) as err:
            s.run("import capsule\ncapsule.promise('p2', timeout=20).result()", on_output=None)
        t.join()
        assert err.value.ename == "PromiseError" and "no way" in err.value.evalue

        # cancel: from another thread while the code runs
        started = threading.Event()
        def cancel_when_started():
            started.wait(10)
            time.sleep(0.2)
            assert s.cancel() == "cancelling"
        t = threading.Thread(target=cancel_when_started)
        t.start()
        with pytest.raises(cc.ExecutionCancelled):
            s.run("import time\nprint('go', flush=True)\ntime.sleep(30)",
                  on_output=lambda *_: started.set())
        t.join()
        assert s.cancel() is None  # nothing runs

        # reset: a fresh interpreter, the names are gone
        s.reset()
        with pytest.raises(cc.ExecutionError) as err:
            s.run("x", on_output=None)
        assert err.value.ename == "NameError"

        cp = s.checkpoint(tag="t1")
        assert cp["metadata"] == {"tag": "t1"}
        stats = s.stats()
        assert stats["executions"]["ok"] >= 1 and stats["executions"]["cancelled"] >= 1
        name = s.name
    # leaving the block deletes the session
    with pytest.raises(cc.SessionNotFound):
        cc.Session.attach(name, gateway_url=connection, timeout=5)


def test_errors_carry_the_remote_traceback(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as s:
        with pytest.raises(cc.ExecutionError) as err:
            s.run("def f():\n    raise ValueError('bad value')\nf()", on_output=None)
        e = err.value
        assert e.ename == "ValueError" and e.evalue == "bad value"
        assert any("f()" in line or "in f" in line for line in e.traceback)
        assert "Remote traceback" in str(e) and "bad value" in str(e)
        with pytest.raises(cc.ExecutionTimedOut):
            s.run("import time\ntime.sleep(10)", timeout=0.5, on_output=None)
        with pytest.raises(cc.InputNotHandled):
            s.run("input('x')", on_output=None)
        # the session still works after each of these
        assert s.run("1 + 1", on_output=None).repr == "2"


def test_attach_does_not_delete(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as owner:
        owner.run("shared = 'yes'", on_output=None)
        with cc.Session.attach(owner.name, gateway_url=connection) as other:
            assert other.worker == owner.worker
            assert other.run("shared", on_output=None).repr == "'yes'"
        # attach's exit left the session in place
        assert owner.run("shared", on_output=None).repr == "'yes'"


def test_keyboard_interrupt_cancels_then_reraises(cluster, connection, pool):
    def interrupt(stream, text):
        raise KeyboardInterrupt
    with cc.Session.create(pool, gateway_url=connection) as s:
        with pytest.raises(KeyboardInterrupt):
            s.run("import time\nprint('go', flush=True)\ntime.sleep(30)\nprint('never')", on_output=interrupt)
        deadline = time.monotonic() + 10
        while s.stats()["executions"]["cancelled"] < 1:
            assert time.monotonic() < deadline, "the interrupted execution was not cancelled"
            time.sleep(0.1)
        assert s.stats()["cancels"]["requested"] >= 1
        assert s.run("'next'", on_output=None).repr == "'next'"
