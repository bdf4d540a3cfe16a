"""A server-sent-events response that owns its upstream stream from first byte to last.

It closes the upstream stream however the response ends (done, upstream failure, client gone),
so an abandoned answer never keeps an upstream generating, and it records the request once,
after the last byte, with the usage the stream reported.
"""

from __future__ import annotations

import logging
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.errors import GatewayError
from gateway.pipeline import ENDPOINT_KIND, Pipeline, RequestContext
from gateway.server.protocol import ClientDisconnected, until_disconnect
from gateway.upstream import UpstreamStream

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
            self.pipeline.record(self.ctx, status, self.stream.usage, error)

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for chunk in self.stream:
                await send({"type": "http.response.body", "body": b"data: " + chunk.raw + b"\n\n", "more_body": True})
        except GatewayError as exc:
            # Headers are gone already: the failure travels as an SSE error event, which the openai SDK raises.
            await send({"type": "http.response.body", "body": b"data: " + exc.to_json() + b"\n\n", "more_body": False})
            raise
        await send({"type": "http.response.body", "body": DONE, "more_body": False})

