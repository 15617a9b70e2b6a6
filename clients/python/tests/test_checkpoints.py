"""Checkpoints through the SDK, sync and async, direct and through the gateway (issue #18): save,
list, restore the latest or a named one into a fresh interpreter, and the errors a wrong id gives."""
from __future__ import annotations

import asyncio

import pytest

import capsule_client as cc


def test_sync_checkpoint_saves_lists_and_restores(cluster, connection, pool):
    with cc.Session.create(pool, gateway_url=connection) as s:
        s.run("import fractions\nitems = [1, 2]\nthird = fractions.Fraction(1, 3)", on_output=None)
        first = s.save_checkpoint()
        assert first["sizeBytes"] > 0 and {"items", "third", "fractions"} <= set(first["names"])
        s.run("items.append(3)\nlater = 'x'", on_output=None)
        second = s.save_checkpoint()
        listed = [c["id"] for c in s.list_checkpoints()]
        assert listed[:2] == [second["id"], first["id"]]

        s.run("items.clear()\ndel third", on_output=None)
        restored = s.restore_checkpoint()
        assert restored["id"] == second["id"]
        assert s.run("(items, third, later)", on_output=None).repr == "([1, 2, 3], Fraction(1, 3), 'x')"

        s.restore_checkpoint(first["id"])
        assert s.run("(items, 'later' in dir())", on_output=None).repr == "([1, 2], False)"

        with pytest.raises(cc.APIError) as err:
            s.restore_checkpoint("0-nosuchcheckpoint")
        assert (err.value.status, err.value.code) == (404, "checkpointNotFound")
        # A refused restore changed nothing.
        assert s.run("items", on_output=None).repr == "[1, 2]"


def test_async_checkpoint_round_trip(cluster, connection, pool):
    async def main():
        async with await cc.AsyncSession.create(pool, gateway_url=connection) as s:
            await s.run("total = 41", on_output=None)
            saved = await s.save_checkpoint()
            await s.run("total = 0", on_output=None)
            assert (await s.list_checkpoints())[0]["id"] == saved["id"]
            assert (await s.restore_checkpoint())["id"] == saved["id"]
            assert (await s.run("total + 1", on_output=None)).repr == "42"

    asyncio.run(main())
