"""Exact-match response cache in Redis: tenant-scoped, stream-aware, stampede-proof.

The key is a SHA-256 of everything that changes the answer, canonicalised (sorted keys, no
whitespace), so field order and formatting never matter and any answer-changing field does:
the route's resolved targets, messages, tools, tool choice, response format, sampling, seed,
stop, and any field we do not know (conservatively). Only `stream`, `stream_options`, `user`,
`metadata`, `store` and the gateway's own extensions are left out. The key is scoped: per team
by default, per key, or global for public content, so no team can read another's answer.

A lookup is one Lua round trip that returns the entry or, on a miss, takes a short lock for
this key (single flight). Concurrent identical requests then wait for the lock holder's answer
instead of calling the upstream themselves: in this process on an event, across replicas by
polling. A lock whose holder died expires.

Entries hold either a complete chat completion or a stream's chunks, and either can be served as
the other, so a streaming client gets a proper SSE replay. Entries past 1 KiB are zlib-compressed;
entries past `max_entry_bytes` are not stored. Any Redis failure is a bypass, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from gateway import metrics
from gateway.batching import Batcher
from gateway.upstream.replay import chunks_to_completion, completion_to_chunks

log = logging.getLogger("gateway.cache")

NOT_ANSWER_CHANGING = frozenset({"stream", "stream_options", "user", "metadata", "store", "grounding"})
COMPRESS_ABOVE = 1024

# KEYS[1] entry, KEYS[2] lock. ARGV[1] lock token, ARGV[2] lock ttl ms, ARGV[3] "1" to take the lock on a miss
_LOOKUP = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
if ARGV[3] == '1' and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 'leader'} end
return {0, 'follower'}
"""
# Stores a batch of answers and releases their locks. KEYS: entry1, lock1, entry2, lock2, ...
# ARGV: entry1, ttl1 (s; 0: nothing to store), token1, entry2, ... (an empty token: no lock of ours)
_STORE_MANY = """
for i = 1, #KEYS, 2 do
  local j = (i - 1) / 2 * 3
  if ARGV[j + 2] ~= '0' then redis.call('SET', KEYS[i], ARGV[j + 1], 'EX', ARGV[j + 2]) end
  if ARGV[j + 3] ~= '' and redis.call('GET', KEYS[i + 1]) == ARGV[j + 3] then redis.call('DEL', KEYS[i + 1]) end
end
return #KEYS / 2
"""
# release the lock only if we still hold it
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class Entry:
    completion: dict[str, Any] | None  # a complete answer (chat or legacy completion, or embeddings)
    chunks: list[dict[str, Any]] | None  # or a chat stream's chunks (without usage)
    usage: dict[str, Any] | None  # the original answer's usage
    cost: str  # what the original answer cost: a hit saves this much
    model: str  # the deployment that answered
    tier: str

    def as_completion(self) -> dict[str, Any]:
        if self.completion is not None:
            out = dict(self.completion)
        else:
            assert self.chunks is not None
            out = chunks_to_completion(self.chunks)
        if self.usage is not None:
            out["usage"] = dict(self.usage)
        return out

    def as_chunks(self) -> list[dict[str, Any]]:
        if self.chunks is not None:
            return self.chunks
        assert self.completion is not None
        return completion_to_chunks(self.completion, include_usage=False)


@dataclass(slots=True)
class Lookup:
    key: str
    entry: Entry | None = None
    leader: bool = False  # we hold the single-flight lock: store the answer, then release it
    token: str = ""


def cache_key(prefix: str, scope: str, scope_id: str, endpoint: str, targets: tuple[str, ...],
              body: dict[str, Any]) -> str:
    canonical = {k: _canon(v) for k, v in body.items() if k not in NOT_ANSWER_CHANGING and k != "model"}
    canonical["__targets"] = targets
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{prefix}cache:{scope}:{scope_id}:{endpoint}:{digest}"


def _canon(value: Any) -> Any:
    """Equal JSON values get equal bytes: 0 and 0.0 (and 1e2 and 100) are one number."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def deterministic(body: dict[str, Any]) -> bool:
    temperature = body.get("temperature")
    return body.get("seed") is not None or (isinstance(temperature, (int, float)) and temperature == 0)


def encode(entry: Entry) -> bytes:
    raw = orjson.dumps({"completion": entry.completion, "chunks": entry.chunks, "usage": entry.usage,
                        "cost": entry.cost, "model": entry.model, "tier": entry.tier})
    if len(raw) > COMPRESS_ABOVE:
        return b"z" + zlib.compress(raw, 1)
    return b"j" + raw


def decode(data: bytes) -> Entry:
    raw = zlib.decompress(data[1:]) if data[:1] == b"z" else data[1:]
    d = orjson.loads(raw)
    return Entry(d["completion"], d["chunks"], d["usage"], d["cost"], d["model"], d["tier"])


class Cache:
    def __init__(self, redis: Any, max_entry_bytes: int = 1024 * 1024, lock_ms: int = 30_000,
                 poll_s: float = 0.02, batch_s: float = 0.004) -> None:
        self.redis = redis  # anything with register_script: redis-py's client or store.LeanClient
        self.max_entry_bytes = max_entry_bytes
        self.lock_ms = lock_ms
        self.poll_s = poll_s
        self._lookup = redis.register_script(_LOOKUP)
        self._unlock = redis.register_script(_UNLOCK)
        self._store_many = redis.register_script(_STORE_MANY)
        self._stores: Batcher[tuple[Lookup, bytes, int]] = Batcher(self._store_batch, batch_s)
        self._local: dict[str, asyncio.Event] = {}  # keys this process is computing right now

    async def get(self, key: str, single_flight: bool = True, wait_s: float = 30.0) -> Lookup:
        """The entry, or a miss; on a miss, either the lock (leader) or, after waiting for the
        leader's answer, a hit (or a miss again if the leader failed)."""
        local = self._local.get(key)
        if local is not None:  # someone in this process is already fetching it: wait for them
            try:
                await asyncio.wait_for(local.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass
            return await self._get_once(key, take_lock=False)
        found = await self._get_once(key, take_lock=single_flight)
        if found.entry is not None or found.leader or not single_flight:
            if found.leader:
                self._local[key] = asyncio.Event()
            return found
        # another replica holds the lock: poll until its answer lands or its lock goes
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            found = await self._get_once(key, take_lock=True)
            if found.entry is not None or found.leader:
                if found.leader:
                    self._local[key] = asyncio.Event()
                return found
        return Lookup(key)

    async def _get_once(self, key: str, take_lock: bool) -> Lookup:
        token = hashlib.sha1(f"{id(self)}:{time.monotonic_ns()}".encode()).hexdigest()[:16]
        hit, value = await self._lookup(keys=[key, key + ":lock"], args=[token, self.lock_ms, "1" if take_lock else "0"])
        if int(hit):
            return Lookup(key, entry=decode(value))
        return Lookup(key, leader=value == b"leader", token=token)

    def put(self, lookup: Lookup, entry: Entry, ttl_s: int) -> None:
        """Store the answer and release our lock on it, off the request path and batched: whatever
        arrives within `batch_s` goes in one round trip. Waiting identical requests in this process
        are woken once it lands; a Redis failure still wakes them (and the lock expires)."""
        data = encode(entry)
        if len(data) > self.max_entry_bytes:
            metrics.CACHE.labels("too_large").inc()
            self._wake(lookup)
            if lookup.leader:
                self._stores.submit((lookup, b"", 0))  # no entry: only the lock is given back
            return
        self._stores.submit((lookup, data, max(1, ttl_s)))

    async def drain(self) -> None:
        await self._stores.drain()

    async def _store_batch(self, items: list[tuple[Lookup, bytes, int]]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for lk, blob, ttl in items:
            keys += (lk.key, lk.key + ":lock")
            args += (blob, ttl, lk.token if lk.leader else "")  # ttl 0: no entry, only the lock
        try:
            await self._store_many(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError):
            metrics.CACHE.labels("error").inc(len(items))
            for lk, _, _ in items:  # wake local waiters first; then try to give the locks back
                self._wake(lk)
            for lk, _, _ in items:
                await self.release(lk)
            return
        for lk, blob, _ in items:
            lk.leader = False  # the script released it
            if blob:
                metrics.CACHE_BYTES.inc(len(blob))
            self._wake(lk)  # local waiters read the answer now; no round trip needed

    def _wake(self, lookup: Lookup) -> None:
        event = self._local.pop(lookup.key, None)
        if event is not None:
            event.set()

    async def release(self, lookup: Lookup) -> None:
        event = self._local.pop(lookup.key, None)
        if lookup.leader:
            try:
                await self._unlock(keys=[lookup.key + ":lock"], args=[lookup.token])
            except (RedisError, OSError, TimeoutError):
                pass  # it expires on its own
        if event is not None:
            event.set()
