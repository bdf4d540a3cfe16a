"""Batching for writes that are off the request path: many callers, one round trip."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects items for `window` seconds, then hands them all to `flush` at once.

    The first caller of a window waits it out and runs the flush; the others wait for that flush,
    so every caller learns whether its item was written (the flush's exception reaches them all).
    A caller cancelled while its window is open still flushes what it gathered before it stops:
    nothing collected is silently dropped.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], window: float) -> None:
        self._flush = flush
        self.window = window
        self._items: list[T] = []
        self._open: asyncio.Future[None] | None = None

    async def add(self, item: T) -> None:
        self._items.append(item)
        if self._open is not None:  # a window is open: its first caller writes this item too
            await asyncio.shield(self._open)
            return
        self._open = done = asyncio.get_running_loop().create_future()
        cancelled = False
        try:
            await asyncio.sleep(self.window)
        except asyncio.CancelledError:
            cancelled = True
        items, self._items, self._open = self._items, [], None
        try:
            await self._flush(items)
        except BaseException as exc:
            done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("batch flush interrupted"))
            done.exception()  # marked retrieved: waiters that gave up must not leave it unobserved
            raise
        else:
            done.set_result(None)
        if cancelled:
            raise asyncio.CancelledError()
