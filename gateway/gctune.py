"""Garbage-collector settings for a long-running server process.

CPython's defaults (a young collection every 700 container allocations, a full one every 100 of
those) suit short scripts. A request allocates a few thousand containers (parsed JSON, a route
plan, grounding passages) that die young, so the defaults run full collections many times a
second, each walking every long-lived object the process holds (the app, policy, caches).
After start-up the long-lived objects are frozen out of the collector's view and collections run
less often; cycles are still collected, just in larger batches.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # container allocations between young collections (CPython: 700)


def tune() -> None:
    gc.collect()
    gc.freeze()  # everything alive now (imports, app, policy) is never scanned again
    gc.set_threshold(YOUNG, 20, 20)
