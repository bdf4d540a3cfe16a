"""The usage ledger: one record per request, appended to a Redis Stream, never lost, never doubled.

Requests hand records to `append()`, which only queues them; a background task writes them in
batches (one pipelined round trip per batch). Each record carries its request id, and the append
is a Lua script that adds it only if that id was never added before, so writing a record twice
(a replay after a timeout that had in fact succeeded) counts it once.

When Redis is down or slow, a batch goes to a local spool file (JSON lines, fsynced) instead, and
is replayed into the stream once Redis answers again. At shutdown the queue is flushed the same
way. What a hard crash (SIGKILL) can lose is the queue of the last batch interval (50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import metrics

log = logging.getLogger("gateway.ledger")

# A batch in one call. KEYS[1] the stream, KEYS[2..n] each record's seen-marker; ARGV[1] the markers'
# TTL, ARGV[2..n] the records (JSON), in the same order. A record whose marker exists is skipped.
_APPEND = """
local added = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
    added = added + 1
  end
end
return added
"""
SEEN_TTL = 90 * 24 * 3600  # replays come within minutes; 90 days is ample
FIELDS = ("id", "ts", "key_id", "team", "user", "route", "model", "upstream_model", "tier", "endpoint",
          "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "estimated", "cost_usd",
          "saved_usd", "cache", "latency_ms", "status", "attempts", "stream", "grounding_score")


class Ledger:
    def __init__(self, redis: aioredis.Redis, prefix: str, spool_dir: str | Path,
                 batch_interval: float = 0.05, max_batch: int = 500) -> None:
        self.redis = redis
        self.stream = f"{prefix}ledger"
        self._seen = f"{prefix}ledger:seen:"
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._interval = batch_interval
        self._max_batch = max_batch
        self._script = redis.register_script(_APPEND)
        self._spool_seq = 0

    def append(self, record: dict[str, Any]) -> None:
        self._queue.put_nowait(record)

    async def run(self) -> None:
        """Write queued records; replay the spool whenever Redis answers."""
        last_replay = 0.0
        while True:
            batch = await self._take()
            if batch:
                await self._write_or_spool(batch)
            now = time.monotonic()
            if now - last_replay > 1.0:
                last_replay = now
                await self.replay_spool()

    async def _take(self) -> list[dict[str, Any]]:
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=self._interval * 10)
        except asyncio.TimeoutError:
            return []
        batch = [first]
        await asyncio.sleep(self._interval)  # gather what arrives meanwhile: one round trip per batch
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        # one script call per batch, one JSON field per entry (far cheaper than a field per column)
        await self._script(keys=[self.stream, *(self._seen + str(r["id"]) for r in batch)],
                           args=[SEEN_TTL, *(orjson.dumps(r) for r in batch)])

    async def _write_or_spool(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._write(batch)
            metrics.LEDGER_RECORDS.labels("stream").inc(len(batch))
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            metrics.STORE_ERRORS.labels("ledger_append").inc()
            log.warning("ledger store unreachable; spooling records locally",
                        extra={"fields": {"records": len(batch), "error": type(exc).__name__}})
            self._spool(batch)

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        self._spool_seq += 1
        path = self.spool_dir / f"ledger-{os.getpid()}-{time.time_ns()}-{self._spool_seq}.jsonl"
        data = b"".join(orjson.dumps(r, default=str) + b"\n" for r in batch)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        metrics.LEDGER_RECORDS.labels("spool").inc(len(batch))

    async def replay_spool(self) -> int:
        """Move spooled records into the stream. Safe to run anywhere, any number of times."""
        replayed = 0
        for path in sorted(self.spool_dir.glob("ledger-*.jsonl")):
            claimed = path.with_suffix(f".replaying-{os.getpid()}")
            try:
                path.rename(claimed)  # one replica claims a file; others skip it
            except OSError:
                continue
            records = [orjson.loads(line) for line in claimed.read_bytes().splitlines() if line.strip()]
            try:
                for i in range(0, len(records), self._max_batch):
                    await self._write(records[i:i + self._max_batch])
            except (RedisError, OSError, asyncio.TimeoutError):
                claimed.rename(path)  # still down: keep it for the next try
                return replayed
            claimed.unlink()
            replayed += len(records)
            metrics.LEDGER_RECORDS.labels("replayed").inc(len(records))
        # files claimed by a process that died mid-replay
        for stale in self.spool_dir.glob("ledger-*.replaying-*"):
            pid = stale.suffix.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    stale.rename(stale.with_suffix(".jsonl"))
        if replayed:
            log.info("replayed spooled ledger records", extra={"fields": {"records": replayed}})
        return replayed

    async def flush(self) -> None:
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._write_or_spool(batch)

    # -- reading ------------------------------------------------------------------------------

    async def records(self, since: float | None = None, until: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Records whose request time `ts` (epoch seconds) is in [since, until). Stream ids are append
        times, so replayed records may sit later in the stream: scanning starts a week before `since`."""
        start = "-" if since is None else str(int((since - 7 * 86400) * 1000))
        while True:
            rows = await self.redis.xrange(self.stream, min=start, max="+", count=1000)
            if not rows:
                return
            for _entry_id, fields in rows:
                record = {k: v if isinstance(v, str) else str(v) for k, v in orjson.loads(fields[b"r"]).items()}
                ts = float(record.get("ts", 0))
                if (since is None or ts >= since) and (until is None or ts < until):
                    yield record
            start = "(" + rows[-1][0].decode()


async def summarise(ledger: Ledger, group_by: str, since: float | None, until: float | None) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "prompt_tokens": 0,
                                                            "completion_tokens": 0, "cost": Decimal(0),
                                                            "saved": Decimal(0)})
    total = Decimal(0)
    async for r in ledger.records(since, until):
        g = groups[r.get(group_by, "-") or "-"]
        g["requests"] += 1
        g["prompt_tokens"] += int(r.get("prompt_tokens", 0))
        g["completion_tokens"] += int(r.get("completion_tokens", 0))
        c = Decimal(r.get("cost_usd", "0"))
        g["cost"] += c
        g["saved"] += Decimal(r.get("saved_usd", "0"))
        total += c
    from gateway.pricing import usd

    return {
        "groups": [{"key": k, "requests": g["requests"], "prompt_tokens": g["prompt_tokens"],
                    "completion_tokens": g["completion_tokens"], "cost_usd": usd(g["cost"]),
                    "saved_usd": usd(g["saved"])} for k, g in sorted(groups.items())],
        "total_cost_usd": usd(total),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_time(text: str) -> float:
    """Epoch seconds, or ISO 8601 (a date alone means its midnight UTC)."""
    from datetime import datetime, timezone

    try:
        return float(text)
    except ValueError:
        pass
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
