"""Per-deployment circuit breakers and concurrency limits: the state a replica keeps about its upstreams.

A circuit opens after `failures` consecutive upstream failures and stays open for `cooldown_s`;
then one trial request goes through (half-open): success closes it, failure reopens it at once.
The engine reads `unhealthy()` as a fact, so the decision itself stays pure.
"""

from __future__ import annotations

import time

from gateway import metrics


class Breakers:
    def __init__(self, failures: int = 5, cooldown_s: float = 30.0) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._consecutive: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def configure(self, failures: int, cooldown_s: float) -> None:
        self.failures, self.cooldown_s = failures, cooldown_s

    def unhealthy(self, now: float | None = None) -> frozenset[str]:
        if not self._open_until:
            return frozenset()
        now = time.monotonic() if now is None else now
        return frozenset(k for k, until in self._open_until.items() if until > now)

    def success(self, model_id: str) -> None:
        if self._consecutive.pop(model_id, None) is not None and self._open_until.pop(model_id, None) is not None:
            metrics.CIRCUIT_OPEN.labels(model_id).set(0)

    def failure(self, model_id: str, now: float | None = None) -> None:
        count = self._consecutive.get(model_id, 0) + 1
        self._consecutive[model_id] = count
        if count >= self.failures:
            now = time.monotonic() if now is None else now
            self._open_until[model_id] = now + self.cooldown_s
            metrics.CIRCUIT_OPEN.labels(model_id).set(1)


class Concurrency:
    """In-flight calls per deployment, against its `max_concurrency`."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def acquire(self, model_id: str, limit: int | None) -> bool:
        if limit is None:
            return True
        n = self._in_flight.get(model_id, 0)
        if n >= limit:
            return False
        self._in_flight[model_id] = n + 1
        return True

    def release(self, model_id: str, limit: int | None) -> None:
        if limit is not None:
            self._in_flight[model_id] = max(0, self._in_flight.get(model_id, 1) - 1)
