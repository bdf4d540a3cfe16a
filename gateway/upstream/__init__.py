"""Upstream adapters behind one contract (see `base.py`)."""

from __future__ import annotations

from gateway.catalog import Deployment
from gateway.upstream.base import Adapter, Chunk, UpstreamCall, UpstreamResponse, UpstreamStream
from gateway.upstream.openai_compat import OpenAICompatAdapter

__all__ = ["Adapter", "Chunk", "UpstreamCall", "UpstreamResponse", "UpstreamStream", "Upstreams"]


class Upstreams:
    """Picks the adapter for a deployment; the litellm one exists only once a deployment needs it."""

    def __init__(self) -> None:
        self._direct = OpenAICompatAdapter()
        self._litellm: Adapter | None = None

    def for_deployment(self, d: Deployment) -> Adapter:
        if d.openai_compatible:
            return self._direct
        if self._litellm is None:
            from gateway.upstream.litellm_adapter import LiteLLMAdapter

            self._litellm = LiteLLMAdapter()
        return self._litellm

    async def aclose(self) -> None:
        await self._direct.aclose()
        if self._litellm is not None:
            await self._litellm.aclose()
