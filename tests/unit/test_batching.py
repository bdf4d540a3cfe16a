"""The batcher behind cache stores and budget charges: one flush per window, errors to every caller,
nothing gathered is dropped when the window's owner is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batching import Batcher


async def test_items_in_one_window_are_flushed_together() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        flushed.append(items)

    b: Batcher[int] = Batcher(flush, 0.01)
    await asyncio.gather(*(b.add(i) for i in range(10)))
    await b.add(10)  # a new window
    assert flushed == [list(range(10)), [10]]


async def test_a_failed_flush_reaches_every_caller_of_its_window() -> None:
    async def flush(items: list[int]) -> None:
        raise ConnectionError("store down")

    b: Batcher[int] = Batcher(flush, 0.01)
    results = await asyncio.gather(*(b.add(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results), results


async def test_a_cancelled_owner_still_flushes_what_it_gathered() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        flushed.append(items)

    b: Batcher[int] = Batcher(flush, 0.5)
    owner = asyncio.ensure_future(b.add(1))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(b.add(2))
    await asyncio.sleep(0.01)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    await follower
    assert flushed == [[1, 2]]
