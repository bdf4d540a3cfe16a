"""Virtual API keys: created once, stored hashed, checked in constant time, revocable.

A key reads `sk-gw-<key id>_<secret>`. The store keeps, under the key id, only the SHA-256 of
the secret with the key's team, user and metadata; the secret itself is shown once at creation
and never stored, logged or cached. Verification compares digests with `hmac.compare_digest`.

Each process caches verified key records (never secrets) for `cache_ttl` seconds, so the hot
path usually makes no store round trip. A revocation reaches every replica within that TTL.
If the store is unreachable, records already seen keep working (stale-if-error) and unknown
keys get a 503: an outage degrades, it does not lock everybody out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import metrics
from gateway.errors import AuthenticationFailed, ServiceUnavailable

log = logging.getLogger("gateway.keys")

KEY_PREFIX = "sk-gw-"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    team: str
    user: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    digest: str
    team: str
    user: str | None
    name: str | None
    metadata: dict[str, Any]
    created: float
    revoked: bool = False

    def principal(self) -> Principal:
        return Principal(self.key_id, self.team, self.user, self.name, self.metadata)

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        del out["digest"]
        out["preview"] = f"{KEY_PREFIX}{self.key_id}_…"
        return out


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX):].partition("_")
    if not sep or len(key_id) != 12 or len(secret) < 32:
        return None
    return key_id, secret


class KeyStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "gw:", cache_ttl: float = 5.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[KeyRecord, float]] = {}

    def _rkey(self, key_id: str) -> str:
        return f"{self._prefix}key:{key_id}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}keys"

    async def create(self, team: str, user: str | None = None, name: str | None = None,
                     metadata: dict[str, Any] | None = None) -> tuple[str, KeyRecord]:
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = KeyRecord(key_id, _digest(secret), team, user, name, dict(metadata or {}), time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._rkey(key_id), orjson.dumps(asdict(record)))
            pipe.sadd(self._index, key_id)
            await pipe.execute()
        return f"{KEY_PREFIX}{key_id}_{secret}", record

    async def list(self) -> list[KeyRecord]:
        ids = sorted(i.decode() for i in await self._redis.smembers(self._index))
        if not ids:
            return []
        raws = await self._redis.mget([self._rkey(i) for i in ids])
        return [KeyRecord(**orjson.loads(r)) for r in raws if r]

    async def revoke(self, key_id: str) -> bool:
        raw = await self._redis.get(self._rkey(key_id))
        if raw is None:
            return False
        data = orjson.loads(raw)
        data["revoked"] = True
        await self._redis.set(self._rkey(key_id), orjson.dumps(data))
        self._cache.pop(key_id, None)
        return True

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                                       code="missing_api_key")
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationFailed("Invalid API key.")
        key_id, secret = parsed
        record = await self._record(key_id)
        # Compare even when the record is missing, so a wrong id and a wrong secret cost the same.
        expected = record.digest if record is not None else "0" * 64
        ok = hmac.compare_digest(_digest(secret), expected)
        if not ok or record is None:
            raise AuthenticationFailed("Invalid API key.")
        if record.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        return record.principal()

    async def _record(self, key_id: str) -> KeyRecord | None:
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            raw = await self._redis.get(self._rkey(key_id))
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.STORE_ERRORS.labels("key_lookup").inc()
            if cached is not None:
                return cached[0]  # stale-if-error
            log.warning("key store unreachable", extra={"fields": {"error": type(exc).__name__}})
            raise ServiceUnavailable("The key store is unreachable; try again shortly.", retry_after=1.0) from None
        if raw is None:
            self._cache.pop(key_id, None)
            return None
        record = KeyRecord(**orjson.loads(raw))
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key_id] = (record, now + self._ttl)
        return record
