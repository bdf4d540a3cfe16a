"""Grounding checks in chat completions through the real gateway and fake upstream: annotate, cite,
flag, block, and escalate in a cascade, streaming and not."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from support import module_gateway, sse_chat, Gateway, assert_openai_shape

POLICIES = Path(__file__).resolve().parent.parent / "policies"
DOCS = [{"id": "tower", "title": "Eiffel Tower facts", "url": "https://example.org/eiffel",
         "content": "The Eiffel Tower is 330 metres tall and stands in Paris. It was completed in 1889."},
        {"id": "visits", "content": "Nearly seven million people visit the tower every year."}]
GROUNDED = "The Eiffel Tower is 330 metres tall and stands in Paris. It was completed in 1889."


ggw = module_gateway("grounding.yaml", log_level="warning")


@pytest.fixture(scope="module")
def gclient(ggw: Gateway) -> OpenAI:
    return OpenAI(base_url=ggw.base_url, api_key=ggw.create_key(team="grounding"), max_retries=0)


def ask(c: OpenAI, model: str, text: str = GROUNDED, **grounding):
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}],
        extra_body={"grounding": {"documents": DOCS, **grounding}})
    return raw.headers, json.loads(raw.content)


def test_annotate_attaches_the_result_and_headers(gclient: OpenAI) -> None:
    headers, body = ask(gclient, "annotate-echo")
    assert_openai_shape(body, "CreateChatCompletionResponse")
    g = body["grounding"]
    assert g["grounded"] is True and headers["x-gateway-grounded"] == "true"
    assert float(headers["x-gateway-support-score"]) == pytest.approx(g["support_score"], abs=1e-4)
    assert [c["citations"] for c in g["claims"]] == [["tower"], ["tower"]]
    headers, body = ask(gclient, "annotate-chatty")
    assert body["grounding"]["grounded"] is False and headers["x-gateway-grounded"] == "false"
    assert body["choices"][0]["message"]["content"]  # annotate never changes the answer


def test_no_documents_no_check(gclient: OpenAI) -> None:
    raw = gclient.chat.completions.with_raw_response.create(model="annotate-echo",
                                                            messages=[{"role": "user", "content": GROUNDED}])
    assert "x-gateway-grounded" not in raw.headers and "grounding" not in json.loads(raw.content)


def test_cite_inserts_markers_and_sources(gclient: OpenAI) -> None:
    _, body = ask(gclient, "cite")
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("The Eiffel Tower is 330 metres tall and stands in Paris. [1] It was completed in 1889. [1]")
    assert content.endswith("Sources:\n[1] Eiffel Tower facts (https://example.org/eiffel)")


def test_flag_leaves_the_body_alone(gclient: OpenAI, ggw: Gateway) -> None:
    headers, body = ask(gclient, "flag")
    assert headers["x-gateway-grounded"] == "false" and "grounding" not in body
    assert 'gateway_grounding_checks_total{model="chatty",tier="distilled",verdict="ungrounded"}' in httpx.get(
        ggw.url + "/metrics").text


def test_block_refuses_an_ungrounded_answer_and_says_why(gclient: OpenAI) -> None:
    headers, body = ask(gclient, "block-chatty")
    assert_openai_shape(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "content_filter"
    assert "not supported by the documents provided" in choice["message"]["refusal"]
    assert body["grounding"]["blocked"] is True
    completion = gclient.chat.completions.create(model="block-chatty", messages=[{"role": "user", "content": "x"}],
                                                 extra_body={"grounding": {"documents": DOCS}})
    assert completion.choices[0].message.refusal  # the SDK reads it as OpenAI's own refusal
    _, body = ask(gclient, "block-echo")  # a grounded answer passes untouched
    assert body["choices"][0]["message"]["content"] == GROUNDED and "blocked" not in body["grounding"]
    _, body = ask(gclient, "block-chatty", action="flag")  # a request cannot weaken a blocking route
    assert body["choices"][0]["finish_reason"] == "content_filter"


def test_escalate_retries_an_ungrounded_cheap_answer_on_the_next_target(gclient: OpenAI) -> None:
    headers, body = ask(gclient, "escalate")
    assert headers["x-gateway-model"] == "echo" and headers["x-gateway-attempts"] == "2"
    assert body["grounding"]["grounded"] is True and body["choices"][0]["message"]["content"] == GROUNDED
    headers, _ = ask(gclient, "accept-score")  # the same through an accept: condition on the score
    assert headers["x-gateway-model"] == "echo"


def _stream(ggw: Gateway, c: OpenAI, model: str, text: str = GROUNDED) -> tuple[httpx.Headers, list[dict]]:
    return sse_chat(ggw.base_url, c.api_key, {"model": model, "messages": [{"role": "user", "content": text}],
                                              "grounding": {"documents": DOCS}})


@pytest.mark.parametrize("model,grounded", [("annotate-echo", True), ("annotate-chatty", False),
                                            ("block-chatty", False), ("cite", True)])
def test_streams_get_the_result_as_a_final_chunk(ggw: Gateway, gclient: OpenAI, model: str, grounded: bool) -> None:
    _, chunks = _stream(ggw, gclient, model)
    last = chunks[-1]
    assert last["choices"] == [] and last["grounding"]["grounded"] is grounded
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text  # a stream already sent is never blocked
    # the SDK tolerates the extra chunk
    stream = gclient.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": GROUNDED}],
                                             extra_body={"grounding": {"documents": DOCS}})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_escalation_works_for_streaming_clients(ggw: Gateway, gclient: OpenAI) -> None:
    headers, chunks = _stream(ggw, gclient, "escalate")
    assert headers["x-gateway-model"] == "echo"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == GROUNDED
    assert chunks[-1]["grounding"]["grounded"] is True


def test_tool_messages_as_documents(gclient: OpenAI) -> None:
    raw = gclient.chat.completions.with_raw_response.create(model="tools-as-docs", messages=[
        {"role": "user", "content": "How tall is the tower?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                "function": {"name": "search", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": DOCS[0]["content"]},
        {"role": "user", "content": "The Eiffel Tower is 330 metres tall."}])
    body = json.loads(raw.content)
    assert body["grounding"]["grounded"] is True and body["grounding"]["claims"][0]["citations"] == ["call_1"]


PARAPHRASE = "The Eiffel Tower stands 330 metres high in Paris. It was completed in 1889."


def test_a_model_verifier_judges_the_claims_in_one_call(gclient: OpenAI, ggw: Gateway, fake_upstream) -> None:
    # the CPU checker supports the paraphrase; the (verbatim-only) judge does not: its verdict decides
    plain_headers, plain = ask(gclient, "annotate-echo", PARAPHRASE)
    assert plain["grounding"]["grounded"] and float(plain_headers["x-gateway-cost-usd"]) == 0
    fake_upstream.reset()
    headers, body = ask(gclient, "verified", PARAPHRASE)
    g = body["grounding"]
    assert not g["grounded"] and headers["x-gateway-grounded"] == "false"
    first, second = g["claims"]
    assert not first["supported"] and "verifier: not supported" in first["reasons"]
    assert second["supported"] and "verifier: supported" in second["reasons"]
    # the judge's call is part of the request's cost (the echo model itself is free here)
    assert float(headers["x-gateway-cost-usd"]) > 0 and body["usage"]["cost_usd"] == headers["x-gateway-cost-usd"]
    # and it is metered once, under the judge's own model, not again under the answering one
    cost_lines = [line for line in httpx.get(ggw.url + "/metrics").text.splitlines()
                  if line.startswith("gateway_cost_usd_total{") and 'route="verified"' in line]
    assert [line for line in cost_lines if 'model="judge"' in line and float(line.split()[-1]) > 0]
    assert not [line for line in cost_lines if 'model="echo"' in line]
    judge_calls = [r["body"] for r in fake_upstream.requests()
                   if str(r["body"].get("model", "")).startswith("fake-judge")]
    assert len(judge_calls) == 1  # every claim of the answer in one call
    assert "CLAIM 2: It was completed in 1889." in judge_calls[0]["messages"][-1]["content"]
    # streamed, the final grounding chunk carries the judge's verdicts too
    _, chunks = sse_chat(ggw.base_url, gclient.api_key, {"model": "verified", "messages": [
        {"role": "user", "content": GROUNDED}], "grounding": {"documents": DOCS}})
    final = chunks[-1]["grounding"]
    assert final["grounded"] and all("verifier: supported" in c["reasons"] for c in final["claims"])


def test_a_failing_verifier_leaves_the_checkers_result(gclient: OpenAI) -> None:
    headers, body = ask(gclient, "verified-broken", GROUNDED)
    g = body["grounding"]
    assert g["grounded"] and headers["x-gateway-grounded"] == "true"
    assert all("verifier unavailable" in c["reasons"] for c in g["claims"])
