"""Turn a complete chat completion into the stream a streaming client expects.

Used when the answer had to be complete before the client could see it (a cascade step that
had to pass its `accept:` check first), and by the cache for hits on streaming requests.
Chunks follow OpenAI's shapes: a role chunk, the content (or tool calls), a finish chunk per
choice, and the usage chunk when the client asked for it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson

from gateway.upstream.base import Chunk
from gateway.usage import Usage


class ReplayStream:
    def __init__(self, completion: dict[str, Any], usage: Usage | None, include_usage: bool) -> None:
        self.usage = usage
        self._completion = completion
        self._include_usage = include_usage

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        for data in completion_to_chunks(self._completion, self._include_usage):
            yield Chunk(orjson.dumps(data), data)

    async def aclose(self) -> None:
        return None


def completion_to_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "id": completion.get("id", "chatcmpl-replay"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    if include_usage:
        base["usage"] = None
    chunks: list[dict[str, Any]] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> None:
        chunks.append({**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                            "finish_reason": finish}]})

    for choice in completion.get("choices") or []:
        i = choice.get("index", 0)
        message = choice.get("message") or {}
        chunk(i, {"role": message.get("role", "assistant"), "content": ""})
        if message.get("content"):
            chunk(i, {"content": message["content"]}, logprobs=choice.get("logprobs"))
        for j, call in enumerate(message.get("tool_calls") or []):
            chunk(i, {"tool_calls": [{"index": j, "id": call.get("id"), "type": call.get("type", "function"),
                                      "function": call.get("function", {})}]})
        if message.get("refusal"):
            chunk(i, {"refusal": message["refusal"]})
        chunk(i, {}, choice.get("finish_reason") or "stop")
    if include_usage and completion.get("usage"):
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks
