"""Token usage and cost for each answer: the upstream's own count when it reports one, else a
tiktoken estimate (marked `estimated`), priced exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway import tokens
from gateway.catalog import Deployment
from gateway.pricing import Price, cost, price_for
from gateway.usage import Usage


class Meter:
    def __init__(self) -> None:
        self._prices: dict[int, Price] = {}

    def price(self, d: Deployment) -> Price:
        key = id(d)  # deployments are immutable and replaced whole on reload
        p = self._prices.get(key)
        if p is None:
            if len(self._prices) > 10_000:
                self._prices.clear()
            p = self._prices[key] = price_for(d)
        return p

    def cost(self, d: Deployment, usage: Usage) -> Decimal:
        return cost(usage, self.price(d))

    def response_usage(self, d: Deployment, endpoint: str, request: dict[str, Any], response: dict[str, Any],
                       reported: Usage | None) -> Usage:
        if reported is not None and (reported.prompt_tokens or reported.completion_tokens):
            return reported
        prompt = tokens.count_request(request, d.model)
        if endpoint == "embeddings":
            return Usage(prompt_tokens=prompt, estimated=True)
        return Usage(prompt_tokens=prompt, completion_tokens=tokens.count_text(_answer_text(response), d.model),
                     estimated=True)

    def stream_usage(self, d: Deployment, endpoint: str, request: dict[str, Any], streamed_text: str,
                     reported: Usage | None) -> Usage:
        if reported is not None and (reported.prompt_tokens or reported.completion_tokens):
            return reported
        return Usage(prompt_tokens=tokens.count_request(request, d.model),
                     completion_tokens=tokens.count_text(streamed_text, d.model), estimated=True)


def _answer_text(response: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in response.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            parts.append(tokens.message_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                fn = call.get("function") or {}
                parts.append(str(fn.get("name", "")) + str(fn.get("arguments", "")))
        elif isinstance(choice.get("text"), str):
            parts.append(choice["text"])
    return "".join(parts)


def stream_text(data: dict[str, Any], into: list[str], first_content: list[str] | None = None) -> None:
    """Collect what a stream chunk adds to the answer (content, tool calls, legacy text) into `into`, and
    the first choice's content alone into `first_content` (what a grounding check reads)."""
    for choice in data.get("choices") or ():
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if content:
                into.append(content)
                if first_content is not None and choice.get("index", 0) == 0:
                    first_content.append(content)
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                into.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        elif isinstance(choice.get("text"), str):
            into.append(choice["text"])
