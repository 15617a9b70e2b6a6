"""Output the worker dropped under `DropNew` reaches the client as a count and a warning, never
silently: the SDK's `Result`, the `OutputDropped` warning, and the CLI's note."""
from __future__ import annotations

import time
import warnings

import pytest

import capsule_client as cc
from capsule_client.cli import report_dropped
from capsule_client.events import Collector, Event

from cluster import LOSSY_POOL

#: 32 MiB in 64 KiB writes: more than the socket buffers hold while the client sleeps.
FLOOD = "import sys\nchunk = 'y' * 65535 + '\\n'\nfor _ in range(512):\n    sys.stdout.write(chunk)\n'done'"


def result_event(**extra):
    return Event("result", "e1", {"type": "result", "executionId": "e1", "repr": None, **extra})


def test_a_result_with_dropped_output_warns_and_counts():
    c = Collector()
    c.add(result_event(outputDropped=3))
    with pytest.warns(cc.OutputDropped, match="3 output chunk"):
        r = c.outcome()
    assert r.output_dropped == 3


def test_a_complete_result_does_not_warn():
    c = Collector()
    c.add(result_event())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.outcome().output_dropped == 0


def test_an_error_carries_the_dropped_count():
    c = Collector()
    c.add(Event("error", "e1", {"type": "error", "ename": "E", "evalue": "", "outputDropped": 4}))
    with pytest.raises(cc.ExecutionError) as raised:
        c.outcome()
    assert raised.value.output_dropped == 4


def test_the_cli_notes_dropped_output_on_stderr(capsys):
    report_dropped(cc.Result(execution_id="e1", repr=None, output_dropped=2))
    report_dropped(cc.Result(execution_id="e2", repr=None))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "e1: 2 output chunk(s) were dropped" in err
    assert "spec.executor.backpressure" in err


def test_a_slow_client_of_a_drop_new_pool_is_told_what_it_missed(cluster, connection):
    got = []

    def slow(stream: str, text: str) -> None:
        if not got:
            time.sleep(2)  # the code fills the socket and the worker's queue of two meanwhile
        got.append(len(text))

    with cc.Session.create(LOSSY_POOL, gateway_url=connection, timeout=60) as s:
        with pytest.warns(cc.OutputDropped):
            r = s.run(FLOOD, on_output=slow)
    assert r.repr == "'done'"
    assert r.output_dropped > 0
    assert len(got) + r.output_dropped == 512, "every chunk either arrived or was counted"
