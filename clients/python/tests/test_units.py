"""The pure parts, without a cluster: error replies to typed errors, NDJSON framing, final events."""
from __future__ import annotations

import json

import pytest

import capsule_client as cc
from capsule_client.events import MAX_CAPTURE_CHARS, Collector, Event
from capsule_client.transport import LineBuffer, Route, error_for, gateway_from_env


def body(code, message="m"):
    return json.dumps({"code": code, "message": message}).encode()


@pytest.mark.parametrize("status,code,cls", [
    (401, "unauthorized", cc.TokenRefused),
    (401, "", cc.TokenRefused),
    (404, "sessionNotFound", cc.SessionNotFound),
    (409, "sessionNotBound", cc.SessionNotBound),
    (409, "noSession", cc.SessionNotBound),
    (502, "workerUnreachable", cc.WorkerUnreachable),
    (429, "queueFull", cc.APIError),
    (404, "", cc.APIError),
])
def test_gateway_and_worker_error_codes(status, code, cls):
    err = error_for(status, body(code, "why"), "session ns/s")
    assert type(err) is cls and "why" in str(err)


def test_error_reply_that_is_not_json():
    err = error_for(500, b"<html>oops", "s")
    assert isinstance(err, cc.APIError) and err.status == 500 and "oops" in err.message


def test_routes():
    assert Route.direct("http://10.0.0.1:8000/", "t").url("executions/e1/cancel") == "http://10.0.0.1:8000/v1/executions/e1/cancel"
    gw = Route.gateway("https://gw.example/", "ns", "s1", "t")
    assert gw.url("stats") == "https://gw.example/v1/sessions/ns/s1/stats"
    assert gw.headers == {"Authorization": "Bearer t"}
    assert isinstance(gw.unreachable(OSError("refused")), cc.GatewayUnreachable)
    assert isinstance(Route.direct("http://x:1", "t").unreachable(OSError("x")), cc.WorkerUnreachable)


def test_gateway_url_from_env(monkeypatch):
    monkeypatch.setenv("CAPSULE_GATEWAY_URL", "http://gw:8080/")
    assert gateway_from_env(None) == "http://gw:8080"
    assert gateway_from_env("https://other") == "https://other"
    monkeypatch.setenv("CAPSULE_GATEWAY_URL", "gw:8080")
    with pytest.raises(cc.ConfigError, match="CAPSULE_GATEWAY_URL"):
        gateway_from_env(None)


def test_line_buffer_splits_and_bounds():
    lines = LineBuffer(10)
    assert lines.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert lines.feed(b':2}\n\n') == [b'{"b":2}']
    assert lines.finish() == []
    with pytest.raises(cc.WorkerLost, match="longer than 10"):
        LineBuffer(10).feed(b"x" * 11)


def test_event_parse_rejects_garbage():
    assert Event.parse(b'{"type":"output","executionId":"e","text":"hi"}').get("text") == "hi"
    for bad in (b"not json", b"[1]", b'{"no":"type"}'):
        with pytest.raises(cc.WorkerLost):
            Event.parse(bad)


def ev(type_, **data):
    return Event(type_, "e1", {"type": type_, "executionId": "e1", **data})


@pytest.mark.parametrize("final,cls", [
    (ev("error", ename="ValueError", evalue="v", traceback=["tb"]), cc.ExecutionError),
    (ev("cancelled"), cc.ExecutionCancelled),
    (ev("timedOut", timeoutMs=5), cc.ExecutionTimedOut),
    (ev("interpreterRestarted", exitCode=9, reason="killed"), cc.InterpreterRestarted),
    (ev("outputDrainTimeout", pending=3), cc.OutputLost),
])
def test_final_events_raise_their_error(final, cls):
    c = Collector()
    c.add(final)
    with pytest.raises(cls):
        c.outcome()


def test_collector_keeps_output_bounded_and_needs_a_final_event():
    c = Collector()
    c.add(ev("started", namespaceLost=True))
    c.add(ev("output", stream="stdout", text="x" * (MAX_CAPTURE_CHARS + 5)))
    c.add(ev("result", repr="1", mode="plain", durationMs=3))
    r = c.outcome()
    assert len(r.stdout) == MAX_CAPTURE_CHARS and r.output_truncated and r.namespace_lost and r.duration_ms == 3
    with pytest.raises(cc.WorkerLost, match="without a final event"):
        Collector().outcome()
