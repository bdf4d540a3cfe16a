"""The batcher behind cache stores: one flush per window, no task per item, errors kept inside the
flush, and what waits is flushed on drain."""

from __future__ import annotations

import asyncio

from gateway.batching import Batcher


async def test_items_in_one_window_are_flushed_together() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        flushed.append(items)

    b: Batcher[int] = Batcher(flush, 0.01)
    for i in range(10):
        b.submit(i)
    await asyncio.sleep(0.05)
    b.submit(10)  # a new window
    await asyncio.sleep(0.05)
    assert flushed == [list(range(10)), [10]]


async def test_a_failing_flush_is_logged_and_the_next_window_still_runs(caplog) -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("store down")

    b: Batcher[int] = Batcher(flush, 0.01)
    b.submit(1)
    await asyncio.sleep(0.05)
    b.submit(2)
    await asyncio.sleep(0.05)
    assert calls == [[1], [2]]
    assert "batch flush failed" in caplog.text


async def test_drain_flushes_what_is_waiting_now() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        await asyncio.sleep(0.01)
        flushed.append(items)

    b: Batcher[int] = Batcher(flush, 10.0)  # a window that would not end during the test
    b.submit(1)
    b.submit(2)
    await b.drain()
    assert flushed == [[1, 2]]
