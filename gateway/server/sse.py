"""A server-sent-events response that owns its upstream stream from first byte to last.

It closes the upstream stream however the response ends (done, upstream failure, client gone),
so an abandoned answer never keeps an upstream generating, and it records the request once,
after the last byte, with the usage the stream reported.
"""

from __future__ import annotations

import logging

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.errors import GatewayError
from gateway.cache import Entry
from gateway.metering import stream_text
from gateway.pipeline import ENDPOINT_KIND, Pipeline, RequestContext, usage_dict
from gateway.pricing import ZERO, usd
from gateway.server.protocol import ClientDisconnected, until_disconnect
from gateway.upstream import UpstreamStream
from gateway.usage import Usage

log = logging.getLogger("gateway.server")

DONE = b"data: [DONE]\n\n"


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, ctx: RequestContext, stream: UpstreamStream, pipeline: Pipeline) -> None:
        self.status_code = 200
        self.background = None
        self.ctx = ctx
        self.stream = stream
        self.pipeline = pipeline
        opts = (ctx.body or {}).get("stream_options")
        self.wants_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        self._text: list[str] = []
        self.init_headers({**ctx.routing_headers(), "cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, error = 200, None
        try:
            await until_disconnect(receive, lambda: self._pump(send))
        except ClientDisconnected:
            status, error = 499, "client_disconnected"
            metrics.CLIENT_DISCONNECTS.labels(ENDPOINT_KIND[self.ctx.endpoint]).inc()
        except GatewayError as exc:
            status, error = exc.status, exc.code
        except Exception:
            log.exception("stream failed", extra={"fields": {"request_id": self.ctx.request_id}})
            status, error = 500, "internal_error"
        finally:
            await self.stream.aclose()
            if self.ctx.usage is None and self.ctx.deployment is not None:
                # broken off: bill what was streamed (the upstream generated at least that)
                self.pipeline.meter_stream(self.ctx, "".join(self._text), self.stream.usage)
            self.pipeline.finish(self.ctx, status, error)

    def _own_chunk(self, **fields: object) -> dict:
        """A chunk the gateway adds to the stream itself (choices empty), as an ASGI body message."""
        ctx = self.ctx
        chunk = {"id": f"chatcmpl-{ctx.request_id}", "object": "chat.completion.chunk",
                 "created": int(ctx.received_at), "model": ctx.deployment.model if ctx.deployment else "",
                 "choices": [], **fields}
        return {"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True}

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        text = self._text = []
        content: list[str] = []
        usage_sent = False
        keep: list[dict] | None = [] if self.ctx.lookup is not None else None  # for the cache
        try:
            async for chunk in self.stream:
                raw, data = chunk.raw, chunk.data
                stream_text(data, text, content)
                if keep is not None and data.get("choices"):
                    keep.append({k: v for k, v in data.items() if k != "usage"})
                reported = data.get("usage")
                if reported:  # only there when the client asked for usage: add what it cost
                    usage_sent = True
                    data = {**data, "usage": {**reported, "cost_usd": self.pipeline.stream_cost(
                        self.ctx, Usage.from_openai(reported) or Usage())}}
                    raw = orjson.dumps(data)
                await send({"type": "http.response.body", "body": b"data: " + raw + b"\n\n", "more_body": True})
        except GatewayError as exc:
            # Headers are gone already: the failure travels as an SSE error event, which the openai SDK raises.
            await send({"type": "http.response.body", "body": b"data: " + exc.to_json() + b"\n\n", "more_body": False})
            raise
        usage = self.pipeline.meter_stream(self.ctx, "".join(text), self.stream.usage)
        if keep:
            self.pipeline.cache_store(self.ctx, Entry(None, keep, usage_dict(usage), usd(self.ctx.cost or ZERO),
                                                      self.ctx.model, self.ctx.tier))
        if self.wants_usage and not usage_sent:
            # The client asked for usage and the upstream sent none: send our count, marked estimated.
            await send(self._own_chunk(usage={**usage_dict(usage), "cost_usd": usd(self.ctx.total_cost)}))
        report = await self.pipeline.ground_stream(self.ctx, "".join(content))
        if report is not None:
            # the check ran on the whole answer: its result is the last chunk, choices empty
            await send(self._own_chunk(grounding=report))
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

