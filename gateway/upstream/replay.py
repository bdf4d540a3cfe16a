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
    """A stream from a complete answer, or from a stored stream's chunks (then the usage chunk, if asked)."""

    def __init__(self, completion: dict[str, Any] | None, usage: Usage | None, include_usage: bool,
                 chunks: list[dict[str, Any]] | None = None) -> None:
        self.usage = usage
        self._completion = completion
        self._include_usage = include_usage
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._chunks is None:
            assert self._completion is not None
            chunks = completion_to_chunks(self._completion, self._include_usage)
        else:
            chunks = list(self._chunks)
            if self._include_usage and self.usage is not None and chunks:
                last = chunks[-1]
                chunks = [{**c, "usage": None} for c in chunks]
                chunks.append({"id": last.get("id"), "object": "chat.completion.chunk", "created": last.get("created"),
                               "model": last.get("model"), "choices": [], "usage": {
                                   "prompt_tokens": self.usage.prompt_tokens,
                                   "completion_tokens": self.usage.completion_tokens,
                                   "total_tokens": self.usage.total_tokens}})
        for data in chunks:
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


def chunks_to_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble a stream's chunks into the chat completion they add up to."""
    first = chunks[0] if chunks else {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            i = c.get("index", 0)
            choice = choices.setdefault(i, {"index": i, "message": {"role": "assistant", "content": None,
                                                                    "refusal": None},
                                            "finish_reason": None, "logprobs": None})
            delta = c.get("delta") or {}
            msg = choice["message"]
            if delta.get("role"):
                msg["role"] = delta["role"]
            if delta.get("content"):
                msg["content"] = (msg["content"] or "") + delta["content"]
            for tc in delta.get("tool_calls") or ():
                calls = msg.setdefault("tool_calls", [])
                j = tc.get("index", 0)
                while len(calls) <= j:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                call = calls[j]
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            if c.get("finish_reason"):
                choice["finish_reason"] = c["finish_reason"]
    out: dict[str, Any] = {"id": first.get("id", "chatcmpl-cache"), "object": "chat.completion",
                           "created": first.get("created", 0), "model": first.get("model", ""),
                           "choices": [choices[i] for i in sorted(choices)]}
    if first.get("system_fingerprint"):
        out["system_fingerprint"] = first["system_fingerprint"]
    if usage:
        out["usage"] = usage
    return out
