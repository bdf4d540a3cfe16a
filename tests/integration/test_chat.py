"""Chat completions through the real gateway and fake upstream, driven by the official openai SDK."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from support import assert_openai_shape

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does the gateway do?"}]


def test_non_streaming_chat_has_openai_shape_and_routing_headers(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    completion = raw.parse()
    assert_openai_shape(json.loads(raw.content), "CreateChatCompletionResponse")
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    assert raw.headers["x-gateway-route"] == "main"
    assert raw.headers["x-gateway-model"] == "fast"
    assert raw.headers["x-gateway-tier"] == "base"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-gateway-request-id"].startswith("req_")


def test_request_id_from_client_is_kept(gateway, api_key: str) -> None:
    r = httpx.post(gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {api_key}",
                   "x-request-id": "my-trace-42"}, json={"model": "gpt-test", "messages": MESSAGES})
    assert r.status_code == 200
    assert r.headers["x-gateway-request-id"] == "my-trace-42"


async def test_async_client_non_streaming(aclient: AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="cheap", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.model == "fake-student"


def test_streaming_with_usage_validates_chunk_by_chunk(gateway, api_key: str, client: OpenAI) -> None:
    chunks = []
    with httpx.stream("POST", gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                      json={"model": "gpt-test", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-gateway-route"] == "main"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        chunk = json.loads(event)
        assert_openai_shape(chunk, "CreateChatCompletionStreamResponse")
        chunks.append(chunk)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = client.chat.completions.create(model="gpt-test", messages=MESSAGES).choices[0].message.content
    assert streamed == whole


def test_streaming_with_sdk_and_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces)
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_without_usage_request_gets_no_usage_chunk(client: OpenAI, fake_upstream) -> None:
    chunks = list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
    assert chunks and all(c.choices for c in chunks), "the usage-only chunk must be stripped"
    assert all(c.usage is None for c in chunks)
    # ... although the gateway asked the upstream for usage on the client's behalf (for metering).
    assert fake_upstream.last_request()["body"]["stream_options"] == {"include_usage": True}


async def test_async_streaming(aclient: AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(model="cheap", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.endswith(".")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def test_tool_calls_non_streaming(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES, tools=TOOLS,
                                                tool_choice="auto")
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)


def test_tool_calls_streaming(client: OpenAI) -> None:
    name, args = "", ""
    finish = None
    for chunk in client.chat.completions.create(model="gpt-test", messages=MESSAGES, tools=TOOLS, stream=True):
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            name += tc.function.name or ""
            args += tc.function.arguments or ""
        finish = choice.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    assert isinstance(json.loads(args), dict)


def test_parameters_and_unknown_fields_pass_through(client: OpenAI, fake_upstream) -> None:
    completion = client.chat.completions.create(
        model="gpt-test", messages=MESSAGES, n=2, seed=7, stop=["zzz"], logprobs=True, temperature=0,
        response_format={"type": "json_object"},
        extra_body={"custom_vendor_field": {"x": 1}, "grounding": {"documents": []}})
    assert len(completion.choices) == 2
    assert json.loads(completion.choices[0].message.content)["answer"]
    assert completion.choices[0].logprobs is not None
    assert completion.system_fingerprint == "fp_fake_7"
    sent = fake_upstream.last_request()["body"]
    assert sent["model"] == "fake-fast", "the gateway sends the deployment's own model name"
    assert sent["n"] == 2 and sent["seed"] == 7 and sent["stop"] == ["zzz"] and sent["logprobs"] is True
    assert sent["custom_vendor_field"] == {"x": 1}, "unknown fields reach the upstream"
    assert "grounding" not in sent, "gateway extensions never reach the upstream"


def test_provider_key_is_sent_upstream_not_client_key(client: OpenAI, fake_upstream, api_key: str) -> None:
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    seen = fake_upstream.last_request()
    assert seen["authorization"] == "Bearer sk-provider-test-secret-777"
    assert api_key not in json.dumps(seen)
    assert seen["x_request_id"].startswith("req_")


def test_legacy_completions(client: OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-test", prompt="Say something", max_tokens=20)
    assert_openai_shape(json.loads(raw.content), "CreateCompletionResponse")
    assert raw.parse().choices[0].text.strip()
    text = "".join(c.choices[0].text for c in client.completions.create(model="gpt-test", prompt="Say something",
                                                                           stream=True) if c.choices)
    assert text.strip() == raw.parse().choices[0].text.strip()


def test_embeddings_float_and_base64(client: OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="text-embedding-test", input=["alpha", "beta"],
                                                     encoding_format="float")
    assert_openai_shape(json.loads(raw.content), "CreateEmbeddingResponse")
    floats = raw.parse()
    # The SDK asks for base64 by default and decodes it; both must agree.
    decoded = client.embeddings.create(model="text-embedding-test", input=["alpha", "beta"])
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 8
    for a, b in zip(floats.data[0].embedding, decoded.data[0].embedding, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert floats.usage.prompt_tokens == 2


def test_models_list_and_retrieve(client: OpenAI) -> None:
    raw = client.models.with_raw_response.list()
    assert_openai_shape(json.loads(raw.content), "ListModelsResponse")
    ids = [m.id for m in raw.parse().data]
    assert ids[:3] == ["gpt-test", "gpt-test-2", "cheap"]
    assert "claude" in ids and "text-embedding-test" in ids
    assert client.models.retrieve("cheap").id == "cheap"


def test_fallback_on_upstream_failure(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="resilient", messages=MESSAGES)
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.headers["x-gateway-model"] == "student"
    assert raw.parse().choices[0].message.content


def test_litellm_adapter_for_non_openai_provider(client: OpenAI, fake_upstream) -> None:
    completion = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 12
    seen = fake_upstream.last_request()
    assert seen["path"] == "/v1/messages" and seen["api_key"] == "sk-provider-test-secret-777"
    stream = client.chat.completions.create(model="claude", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert any(c.usage and c.usage.completion_tokens == 12 for c in chunks)
