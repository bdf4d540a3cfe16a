"""OpenAI's endpoints: decode, call the pipeline, encode (JSON, SSE or an OpenAI error)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import metrics
from gateway.errors import GatewayError, ModelNotFound
from gateway.pipeline import ENDPOINT_KIND, RequestContext
from gateway.server import protocol
from gateway.server.protocol import ClientDisconnected, error_response, json_response, until_disconnect
from gateway.server.runtime import Runtime
from gateway.server.sse import SSEResponse
from gateway.upstream import UpstreamResponse

log = logging.getLogger("gateway.server")

router = APIRouter(prefix="/v1")

_STREAMABLE = ("chat/completions", "completions")


async def _serve(request: Request, endpoint: str, validate: Callable[[dict[str, Any]], None]) -> Response:
    rt: Runtime = request.app.state.runtime
    pipeline = rt.pipeline
    ctx = RequestContext(protocol.new_request_id(request), endpoint, request.headers)
    try:
        await pipeline.authenticate(ctx, protocol.bearer_token(request))
        body = await protocol.read_json(request, rt.settings.max_body_bytes)
        validate(body)
        if endpoint not in _STREAMABLE:
            body.pop("stream", None)
        result = await until_disconnect(request.receive, lambda: pipeline.run(ctx, body))
    except ClientDisconnected:
        metrics.CLIENT_DISCONNECTS.labels(ENDPOINT_KIND[endpoint]).inc()
        pipeline.finish(ctx, 499, error="client_disconnected")
        return Response(status_code=499)
    except GatewayError as exc:
        pipeline.finish(ctx, exc.status, error=exc.code)
        return error_response(exc, ctx.routing_headers())
    except Exception:
        log.exception("request failed", extra={"fields": {"request_id": ctx.request_id}})
        pipeline.finish(ctx, 500, error="internal_error")
        return error_response(GatewayError(f"The gateway failed to handle request {ctx.request_id}."),
                              ctx.routing_headers())
    if isinstance(result, UpstreamResponse):
        await pipeline.ground(ctx, result)
        cost = pipeline.meter_response(ctx, result)
        pipeline.finish(ctx, 200)
        return json_response(result.body, {**ctx.routing_headers(), "x-gateway-cost-usd": cost})
    return SSEResponse(ctx, result, pipeline)


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _serve(request, "chat/completions", protocol.validate_chat)


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await _serve(request, "completions", protocol.validate_completion)


@router.post("/embeddings")
async def embeddings(request: Request) -> Response:
    return await _serve(request, "embeddings", protocol.validate_embedding)


def _model_entry(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "gateway"}


@router.get("/models")
async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    ctx = RequestContext(protocol.new_request_id(request), "models")
    try:
        await rt.pipeline.authenticate(ctx, protocol.bearer_token(request))
    except GatewayError as exc:
        return error_response(exc, {"x-gateway-request-id": ctx.request_id})
    created = int(rt.policy_loaded_at)
    data = [_model_entry(name, created) for name in rt.pipeline.policy.model_names]
    return json_response({"object": "list", "data": data}, {"x-gateway-request-id": ctx.request_id})


@router.get("/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> Response:
    rt: Runtime = request.app.state.runtime
    ctx = RequestContext(protocol.new_request_id(request), "models")
    try:
        await rt.pipeline.authenticate(ctx, protocol.bearer_token(request))
        if model not in rt.pipeline.policy.model_names:
            raise ModelNotFound(f"The model {model!r} does not exist or you do not have access to it.", param="model")
    except GatewayError as exc:
        return error_response(exc, {"x-gateway-request-id": ctx.request_id})
    return json_response(_model_entry(model, int(rt.policy_loaded_at)), {"x-gateway-request-id": ctx.request_id})
