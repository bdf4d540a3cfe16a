"""Adapter for providers that do not speak OpenAI's protocol (Anthropic, Bedrock, Vertex, ...),
through litellm. litellm is imported on the first call to such a provider, never at start-up:
its import costs seconds and ~190 MB, which an OpenAI-compatible deployment never pays."""

from __future__ import annotations

import logging
import os
from typing import Any, AsyncIterator

import orjson

from gateway.catalog import Deployment
from gateway.errors import GatewayError, RateLimited, UpstreamClientError, UpstreamError, UpstreamTimeout
from gateway.upstream.base import GATEWAY_FIELDS, Chunk, StreamState, UpstreamCall, UpstreamResponse
from gateway.usage import Usage

log = logging.getLogger("gateway.upstream.litellm")

_litellm: Any = None


def _lib() -> Any:
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.drop_params = True
        _litellm = litellm
    return _litellm


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    return orjson.loads(obj.model_dump_json(exclude_none=False))


class LiteLLMAdapter:
    async def aclose(self) -> None:
        return None

    def _kwargs(self, d: Deployment, call: UpstreamCall) -> dict[str, Any]:
        kwargs = {k: v for k, v in call.body.items() if k not in GATEWAY_FIELDS and k != "model"}
        kwargs["model"] = f"{d.provider}/{d.model}"
        if d.api_base:
            kwargs["api_base"] = d.api_base
        if d.api_key:
            kwargs["api_key"] = d.api_key.reveal()
        if d.api_version:
            kwargs["api_version"] = d.api_version
        if d.headers:
            kwargs["extra_headers"] = dict(d.headers)
        kwargs["timeout"] = d.read_timeout
        kwargs["num_retries"] = 0
        if call.stream and call.endpoint == "chat/completions":
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    async def send(self, d: Deployment, call: UpstreamCall) -> UpstreamResponse | "LiteLLMStream":
        lib = _lib()
        kwargs = self._kwargs(d, call)
        try:
            if call.endpoint == "chat/completions":
                result = await lib.acompletion(**kwargs)
            elif call.endpoint == "completions":
                result = await lib.atext_completion(**kwargs)
            elif call.endpoint == "embeddings":
                kwargs.pop("stream", None)
                result = await lib.aembedding(**kwargs)
            else:
                raise UpstreamClientError(f"{call.endpoint} is not supported for provider {d.provider!r}", status=400)
        except GatewayError:
            raise
        except Exception as exc:  # litellm raises its own tree; map it at this boundary
            raise _map_error(d, exc) from None
        if call.stream:
            return LiteLLMStream(d, result, strip_usage=not call.client_wants_usage)
        body = _to_dict(result)
        body.pop("_hidden_params", None)
        return UpstreamResponse(body, Usage.from_openai(body.get("usage")))


def _map_error(d: Deployment, exc: Exception) -> GatewayError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    message = str(getattr(exc, "message", "") or exc)[:500]
    if "Timeout" in name or status in (408, 504):
        return UpstreamTimeout(f"The upstream for model {d.id!r} did not answer in time.")
    if status == 429 or "RateLimit" in name:
        return RateLimited(f"The upstream for model {d.id!r} is rate limited.", code="upstream_rate_limited")
    if status in (401, 403) or "Authentication" in name:
        return UpstreamError(f"The upstream for model {d.id!r} refused the gateway's credentials.",
                             code="upstream_auth_failed")
    if isinstance(status, int) and 400 <= status < 500:
        return UpstreamClientError(message, status=status)
    return UpstreamError(f"The upstream for model {d.id!r} failed ({name}).")


class LiteLLMStream:
    def __init__(self, d: Deployment, stream: Any, strip_usage: bool) -> None:
        self._d = d
        self._stream = stream
        self._strip_usage = strip_usage
        self._state = StreamState()

    @property
    def usage(self) -> Usage | None:
        return self._state.usage

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        try:
            async for item in self._stream:
                data = _to_dict(item)
                data.pop("_hidden_params", None)
                data["object"] = "chat.completion.chunk"
                usage = data.pop("usage", None)
                if usage:
                    self._state.usage = Usage.from_openai(usage)
                    if not self._strip_usage:
                        data["usage"] = usage
                    if self._strip_usage and not data.get("choices"):
                        continue
                if not data.get("choices") and "usage" not in data:
                    continue
                self._state.chunks += 1
                yield Chunk(orjson.dumps(data), data)
            self._state.finished = True
        except GatewayError:
            raise
        except Exception as exc:
            raise _map_error(self._d, exc) from None

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None and not self._state.finished:
            try:
                await close()
            except Exception:  # closing an abandoned provider stream is best effort
                log.debug("litellm stream close failed", exc_info=True)
