"""The upstream contract: send one call, get back the answer (or its stream) with its token usage.

    adapter.send(deployment, call) -> UpstreamResponse | UpstreamStream

An adapter raises only `gateway.errors` exceptions: UpstreamError (502), UpstreamTimeout (504),
RateLimited (429, with the upstream's Retry-After) and UpstreamClientError (the upstream's own
4xx). A stream is returned once the upstream has accepted the request (status 200), so that
errors before the first byte can still become proper HTTP errors or fall back to another target.

An `UpstreamStream` yields `Chunk`s (the raw JSON payload of each SSE `data:` event, and its
parsed form) and ends after the upstream's `[DONE]`. When it is exhausted, `usage` holds the
usage the upstream reported, if any. The usage-only chunk the gateway asked for on the client's
behalf (stream_options.include_usage) is consumed, not yielded, when the client did not ask.
`aclose()` cancels the upstream request if the stream is abandoned early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

from gateway.catalog import Deployment
from gateway.usage import Usage

# Fields of our own request extensions, never sent upstream.
GATEWAY_FIELDS = ("grounding",)


@dataclass(slots=True)
class UpstreamCall:
    endpoint: str  # "chat/completions", "completions" or "embeddings"
    body: dict[str, Any]  # the client's body; the adapter sends a copy with `model` set for the deployment
    stream: bool = False
    client_wants_usage: bool = False
    request_id: str = ""


@dataclass(slots=True)
class UpstreamResponse:
    body: dict[str, Any]
    usage: Usage | None


@dataclass(slots=True)
class Chunk:
    raw: bytes
    data: dict[str, Any]


class UpstreamStream(Protocol):
    usage: Usage | None

    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


class Adapter(Protocol):
    async def send(self, deployment: Deployment, call: UpstreamCall) -> UpstreamResponse | UpstreamStream: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class StreamState:
    """What an adapter learns while a stream passes through."""

    usage: Usage | None = None
    finished: bool = False
    chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def upstream_body(deployment: Deployment, call: UpstreamCall) -> dict[str, Any]:
    body = dict(call.body)
    body["model"] = deployment.model
    for name in GATEWAY_FIELDS:
        body.pop(name, None)
    if call.stream and deployment.stream_usage and call.endpoint != "embeddings":
        opts = dict(body.get("stream_options") or {})
        opts["include_usage"] = True
        body["stream_options"] = opts
    return body
