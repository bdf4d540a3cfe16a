"""Routing policies through the real gateway and fake upstream: fallbacks, cascades, splits,
capability skips, concurrency limits and circuit breakers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from support import module_gateway, Gateway, assert_openai_shape

POLICIES = Path(__file__).resolve().parent.parent / "policies"
MESSAGES = [{"role": "user", "content": "route me"}]


routing_gateway = module_gateway("routing.yaml", log_level="info")


@pytest.fixture(scope="module")
def rkey(routing_gateway: Gateway) -> str:
    return routing_gateway.create_key(team="routing")


@pytest.fixture
def rc(routing_gateway: Gateway, rkey: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=routing_gateway.base_url, api_key=rkey, max_retries=0, timeout=30) as c:
        yield c


def routed(c: OpenAI, model: str, **kw):
    raw = c.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, **kw)
    return raw.parse(), raw.headers


@pytest.mark.parametrize("model", ["fb-500", "fb-timeout", "fb-429"])
def test_fallback_on_upstream_failure(rc: OpenAI, model: str) -> None:
    completion, headers = routed(rc, model)
    assert headers["x-gateway-model"] == "ok-a" and headers["x-gateway-attempts"] == "2"
    assert completion.model == "fake-a"


def test_fallback_before_the_first_streamed_byte(rc: OpenAI) -> None:
    chunks = list(rc.chat.completions.create(model="fb-500", messages=MESSAGES, stream=True))
    assert chunks[0].model == "fake-a"


def test_retry_budget_bounds_the_attempts(routing_gateway: Gateway, rkey: str) -> None:
    r = httpx.post(routing_gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {rkey}"},
                   json={"model": "fb-all", "messages": MESSAGES}, timeout=30)
    # err500, err429, slow (timeout): three attempts, the budget; ok-a is never reached
    assert r.headers["x-gateway-attempts"] == "3"
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_cascade_escalates_when_accept_fails(rc: OpenAI, routing_gateway: Gateway) -> None:
    completion, headers = routed(rc, "cascade-length")
    assert headers["x-gateway-model"] == "long" and headers["x-gateway-attempts"] == "2"
    assert completion.usage.completion_tokens == 30
    completion, headers = routed(rc, "cascade-finish")
    assert headers["x-gateway-model"] == "ok-b" and completion.choices[0].finish_reason == "stop"
    metrics = httpx.get(routing_gateway.url + "/metrics").text
    assert 'gateway_cascade_escalations_total{model="short",route="cascade-length"}' in metrics


def test_cascade_json_check(rc: OpenAI) -> None:
    # plain text is not valid JSON when JSON was asked for ...
    _, headers = routed(rc, "cascade-json", response_format={"type": "json_object"},
                        extra_body={"fake_options": {"words": 5}})
    assert headers["x-gateway-model"] == "ok-c"  # ... but the fake answers JSON in JSON mode: accepted
    completion, headers = routed(rc, "cascade-json")
    assert headers["x-gateway-model"] == "ok-c" and headers["x-gateway-attempts"] == "1"


def test_cascade_streams_the_accepted_answer(routing_gateway: Gateway, rkey: str, rc: OpenAI) -> None:
    whole, _ = routed(rc, "cascade-length")
    with httpx.stream("POST", routing_gateway.base_url + "/chat/completions",
                      headers={"authorization": f"Bearer {rkey}"},
                      json={"model": "cascade-length", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.headers["x-gateway-model"] == "long"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        assert_openai_shape(c, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole.choices[0].message.content
    assert chunks[-1]["usage"]["completion_tokens"] == 30


def test_cascade_accepted_first_step_is_replayed_as_a_stream(routing_gateway: Gateway, rkey: str) -> None:
    with httpx.stream("POST", routing_gateway.base_url + "/chat/completions",
                      headers={"authorization": f"Bearer {rkey}"},
                      json={"model": "cascade-json", "messages": MESSAGES, "stream": True}) as r:
        assert r.headers["x-gateway-model"] == "ok-c" and r.headers["x-gateway-attempts"] == "1"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        assert_openai_shape(c, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c.get("usage") is None for c in chunks), "no usage chunk unless asked for"


def test_cascade_keeps_a_rejected_answer_when_nothing_better_answers(rc: OpenAI) -> None:
    completion, headers = routed(rc, "cascade-rejected")
    # short's answer failed accept:, err-late failed outright: short's answer is the best there is
    assert headers["x-gateway-model"] == "short" and headers["x-gateway-attempts"] == "2"
    assert completion.model == "fake-short@words=3"


def test_split_proportions_over_1000_requests_and_stickiness(rc: OpenAI) -> None:
    arms: Counter[str] = Counter()
    by_user: dict[str, set[str]] = defaultdict(set)
    for i in range(1000):
        _, headers = routed(rc, "canary", user=f"user-{i}")
        arms[headers["x-gateway-model"]] += 1
    share = arms["ok-b"] / 1000
    assert 0.065 <= share <= 0.135, arms  # 10% +- 3.5 points: over three standard deviations at n=1000
    for i in range(40):
        for _ in range(5):
            by_user[f"sticky-{i}"].add(routed(rc, "canary", user=f"sticky-{i}")[1]["x-gateway-model"])
    assert all(len(models) == 1 for models in by_user.values()), "the same user keeps the same arm"
    assert {m for models in by_user.values() for m in models} == {"ok-a", "ok-b"}


def test_capability_skipping(rc: OpenAI, routing_gateway: Gateway, rkey: str) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    completion, headers = routed(rc, "tools", tools=tools)
    assert headers["x-gateway-model"] == "tooled" and headers["x-gateway-attempts"] == "1"
    assert completion.choices[0].message.tool_calls[0].function.name == "lookup"
    _, headers = routed(rc, "tools")  # no tools: the cheap model serves
    assert headers["x-gateway-model"] == "notools"
    with pytest.raises(openai.BadRequestError) as info:
        rc.chat.completions.create(model="tools-nowhere", messages=MESSAGES, tools=tools)
    assert info.value.body["code"] == "no_capable_model"
    assert "notools does not support tools" in info.value.body["message"]


async def test_concurrency_limit_sends_the_overflow_to_the_fallback(routing_gateway: Gateway, rkey: str) -> None:
    async with AsyncOpenAI(base_url=routing_gateway.base_url, api_key=rkey, max_retries=0) as c:
        async def one():
            raw = await c.chat.completions.with_raw_response.create(model="limited", messages=MESSAGES)
            return raw.headers["x-gateway-model"]
        served = await asyncio.gather(*(one() for _ in range(3)))
    assert sorted(served) == ["limited", "ok-b", "ok-b"]


def test_circuit_breaker_skips_a_failing_model(rc: OpenAI, routing_gateway: Gateway) -> None:
    attempts = [routed(rc, "breaker")[1]["x-gateway-attempts"] for _ in range(5)]
    assert attempts == ["2", "2", "2", "1", "1"]  # three failures open the circuit (failures: 3)
    metrics = httpx.get(routing_gateway.url + "/metrics").text
    assert 'gateway_circuit_open{model="victim"} 1.0' in metrics


def test_routing_on_headers_and_metadata(rc: OpenAI) -> None:
    assert routed(rc, "lanes", extra_headers={"x-lane": "fast"})[1]["x-gateway-model"] == "ok-c"
    assert routed(rc, "lanes", metadata={"env": "prod"})[1]["x-gateway-model"] == "ok-b"
    assert routed(rc, "lanes", extra_headers={"x-gateway-metadata-env": "prod"})[1]["x-gateway-model"] == "ok-b"
    assert routed(rc, "lanes")[1]["x-gateway-route"] == "lanes-default"
