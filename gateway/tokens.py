"""Token counting with tiktoken, offline (encodings from the folder litellm ships).

Used where the upstream's own count is not there yet: routing on prompt size and context
windows before the call, and estimating usage when an upstream reports none.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from gateway.model_info import ensure_tiktoken_offline

# OpenAI's accounting for chat: each message costs its content plus this overhead, and every
# reply is primed with 3 tokens (<|start|>assistant<|message|>).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


@lru_cache(maxsize=8)
def encoding_for(model: str) -> Any:
    ensure_tiktoken_offline()
    import tiktoken

    name = model.lower().split("/")[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return tiktoken.get_encoding("o200k_base")
    return tiktoken.get_encoding("cl100k_base")


def count_text(text: str, model: str = "") -> int:
    return len(encoding_for(model).encode(text, disallowed_special=()))


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def count_chat(messages: list[dict[str, Any]], model: str = "") -> int:
    enc = encoding_for(model)
    total = REPLY_PRIMING
    for m in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in m.items():
            if key == "content":
                total += len(enc.encode(message_text(value), disallowed_special=()))
            elif key == "name" and isinstance(value, str):
                total += len(enc.encode(value, disallowed_special=())) + TOKENS_PER_NAME
            elif key == "role" and isinstance(value, str):
                total += len(enc.encode(value, disallowed_special=()))
    return total


def prompt_chars(body: dict[str, Any]) -> int:
    """An upper bound on prompt tokens that costs no tokenizer: a token is at least one character
    (tiktoken's byte-level encodings), so chars >= tokens, bar special markup."""
    if "messages" in body:
        return sum(len(message_text(m.get("content"))) + 8 for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", body.get("input", ""))
    return len(prompt) if isinstance(prompt, str) else sum(len(str(p)) for p in prompt)


def count_request(body: dict[str, Any], model: str = "") -> int:
    if "messages" in body:
        return count_chat(body["messages"], model)
    prompt = body.get("prompt", body.get("input", ""))
    if isinstance(prompt, str):
        return count_text(prompt, model)
    return sum(count_text(p, model) if isinstance(p, str) else len(p) for p in prompt)
