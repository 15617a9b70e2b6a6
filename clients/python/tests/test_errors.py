"""Every failure a user meets raises its typed error with a message that says what to do."""
from __future__ import annotations

import dataclasses
import time

import pytest

import capsule_client as cc
from cluster import TINY_POOL, free_port


def session_yaml(name: str, pool: str) -> str:
    return f"apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata: {{name: {name}, namespace: default}}\nspec: {{pool: {pool}}}\n"


def test_pool_missing(cluster, connection):
    with pytest.raises(cc.PoolNotFound) as err:
        cc.Session.create("no-such-pool", gateway_url=connection)
    assert "no-such-pool" in str(err.value) and "create it" in str(err.value)
    # a session that names a missing pool (created by someone else) fails the same way on attach
    cluster.kubectl("apply", "-f", "-", stdin=session_yaml("orphan", "no-such-pool"))
    try:
        with pytest.raises(cc.PoolNotFound):
            cc.Session.attach("orphan", gateway_url=connection, timeout=20)
    finally:
        cluster.kubectl("delete", "csess", "orphan", "--wait=false")


def test_pool_exhausted_then_session_failed(cluster, connection):
    with cc.Session.create(TINY_POOL, gateway_url=connection) as holder:
        t0 = time.monotonic()
        with pytest.raises(cc.PoolExhausted) as err:
            cc.Session.create(TINY_POOL, gateway_url=connection, timeout=2, name="second")
        assert time.monotonic() - t0 < 10
        assert "maxWorkers" in str(err.value)
        # the session that could not bind was deleted
        assert "second" not in cluster.kubectl("get", "csess", "-o", "name")
        # one left waiting fails with AcquireTimeout (spec.sessions.acquireTimeoutSeconds: 3)
        cluster.kubectl("apply", "-f", "-", stdin=session_yaml("waiter", TINY_POOL))
        cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Failed", "csess/waiter", "--timeout=60s")
        with pytest.raises(cc.SessionFailed) as err:
            cc.Session.attach("waiter", gateway_url=connection)
        assert err.value.reason == "AcquireTimeout" and err.value.phase == "Failed"
        assert "AcquireTimeout" in str(err.value)
        cluster.kubectl("delete", "csess", "waiter", "--wait=false")
        assert holder.run("1", on_output=None).repr == "1"


def test_worker_lost_mid_run(cluster, connection, pool):
    s = cc.Session.create(pool, gateway_url=connection)
    try:
        # the interpreter dies: the namespace is lost, the session lives on
        with pytest.raises(cc.InterpreterRestarted) as err:
            s.run("import os\nos._exit(3)", on_output=None)
        assert isinstance(err.value, cc.WorkerLost) and err.value.exit_code == 3
        assert s.run("2", on_output=None).repr == "2"

        # the worker pod goes away mid-run: the stream drops
        def kill_worker(stream, text):
            cluster.kubectl("delete", "pod", s.worker, "--wait=false")
        with pytest.raises(cc.WorkerLost) as err:
            s.run("import time\nprint('running', flush=True)\ntime.sleep(60)", on_output=kill_worker)
        # the operator marks the session Failed (WorkerLost); later calls say so
        deadline = time.monotonic() + 30
        while True:
            try:
                s.run("1", on_output=None)
            except cc.WorkerLost as e:
                assert "lost its worker" in str(e)
                break
            except (cc.WorkerUnreachable, cc.SessionNotBound):
                pass  # the operator has not noticed yet (direct: connection refused; gateway: 409)
            assert time.monotonic() < deadline, "the session was never marked WorkerLost"
            time.sleep(0.5)
    finally:
        s.delete()


def test_token_refused(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as s:
        s.route = dataclasses.replace(s.route, token="not-the-token")
        with pytest.raises(cc.TokenRefused) as err:
            s.run("1", on_output=None)
        assert "401" in str(err.value)
        with pytest.raises(cc.TokenRefused):
            s.stats()


def test_gateway_unreachable(cluster, pool):
    url = f"http://127.0.0.1:{free_port()}"
    with cc.Session.create(pool, gateway_url=url) as s:
        with pytest.raises(cc.GatewayUnreachable) as err:
            s.run("1", on_output=None)
        assert url in str(err.value)
        with pytest.raises(cc.GatewayUnreachable):
            s.reset()
    with pytest.raises(cc.ConfigError) as err:
        cc.Session.create(pool, gateway_url="gateway:8080")
    assert "http://" in str(err.value)


def test_session_timeout_and_bad_arguments(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as s:
        with pytest.raises(ValueError):
            s.run("1", timeout=0)
        with pytest.raises(TypeError):
            s.run(b"1")  # type: ignore[arg-type]
    with pytest.raises(cc.SessionNotFound):
        cc.Session.attach("never-created", gateway_url=connection)


def test_calls_after_the_session_is_deleted(cluster, connection, pool):
    s = cc.Session.create(pool, gateway_url=connection)
    assert s.run("1", on_output=None).repr == "1"
    s.kube.delete_session(s.namespace, s.name)
    # direct: the released worker answers 409 noSession; gateway: 404 sessionNotFound or 409;
    # either way the session's state says it is gone
    deadline = time.monotonic() + 30
    while True:
        try:
            s.run("1", on_output=None)
        except cc.SessionNotFound as e:
            assert s.name in str(e)
            break
        except (cc.SessionNotBound, cc.WorkerUnreachable):
            pass
        assert time.monotonic() < deadline, "calls kept working after the session was deleted"
        time.sleep(0.3)
    s.close()
