"""The asyncio variant: the same life cycle with `await`, and task cancellation cancelling the run."""
from __future__ import annotations

import asyncio

import pytest

import capsule_client as cc


def test_async_life_cycle(cluster, connection, pool):
    async def main():
        out = []
        async with await cc.AsyncSession.create(pool, gateway_url=connection) as s:
            r = await s.run("print('a')\n40 + 2", on_output=lambda st, t: out.append(t))
            assert r.repr == "42" and "".join(out) == "a\n"

            types = [ev.type async for ev in s.stream("print(1)")]
            assert types[0] == "accepted" and types[-1] == "result"

            async def answer(prompt):
                await asyncio.sleep(0)
                return prompt.strip() + "!"
            r = await s.run("input('hey')", on_output=None, on_input=answer)
            assert r.repr == "'hey!'"

            async def resolve_soon():
                for _ in range(100):
                    if any(p["id"] == "ap" for p in (await s.stats())["pendingPromises"]):
                        await s.resolve("ap", [1, 2])
                        return
                    await asyncio.sleep(0.05)
            resolver = asyncio.ensure_future(resolve_soon())
            r = await s.run("import capsule\nsum(await capsule.promise('ap', timeout=20))", on_output=None)
            await resolver
            assert r.repr == "3"

            # cancelling the task cancels the execution on the worker
            started = asyncio.Event()
            task = asyncio.ensure_future(
                s.run("import time\nprint('go', flush=True)\ntime.sleep(30)", on_output=lambda *_: started.set())
            )
            await asyncio.wait_for(started.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(50):
                if (await s.stats())["executions"]["cancelled"] >= 1:
                    break
                await asyncio.sleep(0.1)
            assert (await s.stats())["executions"]["cancelled"] >= 1
            assert (await s.run("'still here'", on_output=None)).repr == "'still here'"

            await s.run("z = 1", on_output=None)
            await s.reset()
            with pytest.raises(cc.ExecutionError) as err:
                await s.run("z", on_output=None)
            assert err.value.ename == "NameError"
            assert (await s.checkpoint(k="v"))["metadata"] == {"k": "v"}
            name = s.name
        with pytest.raises(cc.SessionNotFound):
            await cc.AsyncSession.attach(name, gateway_url=connection, timeout=5)

    asyncio.run(main())


def test_async_errors(cluster, connection, pool):
    async def main():
        with pytest.raises(cc.PoolNotFound):
            await cc.AsyncSession.create("missing-pool", gateway_url=connection)
        async with await cc.AsyncSession.create(pool, gateway_url=connection) as s:
            with pytest.raises(cc.ExecutionError) as err:
                await s.run("1/0", on_output=None)
            assert err.value.ename == "ZeroDivisionError" and err.value.traceback
            with pytest.raises(cc.ExecutionTimedOut):
                await s.run("import time\ntime.sleep(5)", timeout=0.3, on_output=None)

    asyncio.run(main())
