"""`transaction="rollbackOnError"` (issue #18) through the SDK, sync and async, direct and through
the gateway: a failed, cancelled or timed-out run leaves the namespace as it was; a successful one
keeps its changes; the error says `rolled_back`."""
from __future__ import annotations

import asyncio
import threading

import pytest

import capsule_client as cc
from capsule_client._base import SessionBase

SETUP = "items = [1, 2]\nconfig = {'mode': 'a'}\nname = 'kept'"
CHANGES = "items.append(3)\nconfig['mode'] = 'b'\nname = 'changed'\nextra = 1\n"
STATE = "(items, config, name, 'extra' in dir())"
BEFORE = "([1, 2], {'mode': 'a'}, 'kept', False)"


def test_sync_transaction_rolls_back_on_error_timeout_and_cancel(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as s:
        s.run(SETUP, on_output=None)
        # Counters are the worker process's: an earlier session on it may have counted some.
        rolled_back_before = s.stats()["transactionsRolledBack"]
        with pytest.raises(cc.ExecutionError) as err:
            s.run(CHANGES + "raise ValueError('boom')", on_output=None, transaction=cc.ROLLBACK_ON_ERROR)
        assert err.value.rolled_back and err.value.ename == "ValueError"
        assert s.run(STATE, on_output=None).repr == BEFORE

        with pytest.raises(cc.ExecutionTimedOut) as err:
            s.run(CHANGES + "import time\ntime.sleep(30)", timeout=0.5, on_output=None,
                  transaction="rollbackOnError")
        assert err.value.rolled_back
        assert s.run(STATE, on_output=None).repr == BEFORE

        started = threading.Event()
        with pytest.raises(cc.ExecutionCancelled) as err:
            threading.Thread(target=lambda: started.wait(30) and s.cancel(), daemon=True).start()
            s.run(CHANGES + "print('go', flush=True)\nimport time\ntime.sleep(30)",
                  on_output=lambda stream, text: started.set(), transaction="rollbackOnError")
        assert err.value.rolled_back
        assert s.run(STATE, on_output=None).repr == BEFORE

        result = s.run(CHANGES + "len(items)", on_output=None, transaction="rollbackOnError")
        assert result.repr == "3"
        assert s.run(STATE, on_output=None).repr == "([1, 2, 3], {'mode': 'b'}, 'changed', True)"

        # Without a transaction a failure keeps what the code changed, and says nothing was rolled back.
        with pytest.raises(cc.ExecutionError) as err:
            s.run("name = 'again'\nraise KeyError('k')", on_output=None)
        assert not err.value.rolled_back
        assert s.run("name", on_output=None).repr == "'again'"
        assert s.stats()["transactionsRolledBack"] == rolled_back_before + 3


def test_async_transaction_rolls_back(cluster, connection, pool):
    async def main():
        async with await cc.AsyncSession.create(pool, gateway_url=connection) as s:
            await s.run(SETUP, on_output=None)
            with pytest.raises(cc.ExecutionError) as err:
                await s.run(CHANGES + "1/0", on_output=None, transaction="rollbackOnError")
            assert err.value.rolled_back and err.value.ename == "ZeroDivisionError"
            assert (await s.run(STATE, on_output=None)).repr == BEFORE
            with pytest.raises(cc.ExecutionTimedOut) as err:
                await s.run(CHANGES + "import time\ntime.sleep(30)", timeout=0.5, on_output=None,
                            transaction="rollbackOnError")
            assert err.value.rolled_back
            assert (await s.run(STATE, on_output=None)).repr == BEFORE
            with pytest.raises(ValueError, match="transaction must be one of rollbackOnError"):
                await s.run("1", transaction="always")

    asyncio.run(main())


def test_transaction_value_is_checked_before_sending():
    assert SessionBase.execute_body("1", None, "rollbackOnError") == {"code": "1", "transaction": "rollbackOnError"}
    assert "transaction" not in SessionBase.execute_body("1", None)
    with pytest.raises(ValueError, match="transaction must be one of rollbackOnError .*'sometimes'"):
        SessionBase.execute_body("1", None, "sometimes")
