"""What litellm knows about hosted models (context window, tool and JSON support, vision, prices),
read from the JSON map litellm ships, without importing litellm (seconds and ~190 MB).

The map is parsed once per process, on first use, and only for providers that host models
(a self-hosted vLLM adapter is not in it).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

SELF_HOSTED = frozenset({"vllm", "ollama", "tgi", "openai-compatible", "fake"})


def litellm_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def _model_map() -> dict[str, Any]:
    base = litellm_dir()
    if base is None:
        return {}
    path = base / "model_prices_and_context_window_backup.json"
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}


def lookup(provider: str, model: str) -> dict[str, Any] | None:
    """litellm's entry for a hosted model, or None (self-hosted providers are never looked up)."""
    if provider in SELF_HOSTED:
        return None
    table = _model_map()
    for name in (model, f"{provider}/{model}", model.split("/")[-1]):
        entry = table.get(name)
        if isinstance(entry, dict):
            return entry
    return None


def tiktoken_cache_dir() -> str | None:
    """litellm ships tiktoken's encodings (cl100k_base, o200k_base, p50k_base); use them offline."""
    base = litellm_dir()
    if base is None:
        return None
    path = base / "litellm_core_utils" / "tokenizers"
    return str(path) if path.is_dir() else None


def ensure_tiktoken_offline() -> None:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache = tiktoken_cache_dir()
        if cache:
            os.environ["TIKTOKEN_CACHE_DIR"] = cache
