"""Batching for writes that are off the request path: many requests, one round trip."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("gateway.batching")


class Batcher(Generic[T]):
    """Collects items for `window` seconds, then hands them all to `flush` in one task.

    `submit` is synchronous and cheap (an append, and a timer for the first item of a window): no
    task or future per item. `flush` owns its errors (count them, release what waits on them);
    anything it lets escape is logged. `drain` flushes what is waiting now (at shutdown).
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], window: float) -> None:
        self._flush = flush
        self.window = window
        self._items: list[T] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> None:
        self._items.append(item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._start)

    def _start(self) -> None:
        self._timer = None
        items, self._items = self._items, []
        if items:
            task = asyncio.get_running_loop().create_task(self._run(items))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, items: list[T]) -> None:
        try:
            await self._flush(items)
        except Exception:
            log.exception("batch flush failed", extra={"fields": {"items": len(items)}})

    async def drain(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._start()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
