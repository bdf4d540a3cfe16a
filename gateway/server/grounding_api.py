"""POST /v1/grounding/check: check any text against documents (text the gateway did not generate too)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest
from gateway.grounding import Checker
from gateway.pipeline import RequestContext
from gateway.server import protocol
from gateway.server.protocol import error_response, json_response
from gateway.server.runtime import Runtime

router = APIRouter(prefix="/v1")
_checker = Checker()
# Checks above this size run in a thread, so one long document set never stalls the event loop.
_INLINE_CHARS = 20_000


def _validate(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str | None, float | None]:
    response = body.get("response")
    if not isinstance(response, str):
        raise InvalidRequest("Missing required parameter: 'response' (a string).", param="response",
                             code="missing_required_parameter")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise InvalidRequest("'documents' must be a non-empty array of {id, content}.", param="documents",
                             code="invalid_value")
    for i, d in enumerate(documents):
        if not isinstance(d, dict) or not isinstance(d.get("content"), str):
            raise InvalidRequest(f"documents[{i}] needs a string 'content'.", param=f"documents[{i}]",
                                 code="invalid_value")
        d.setdefault("id", str(i))
        d["id"] = str(d["id"])
    question = body.get("question")
    if question is not None and not isinstance(question, str):
        raise InvalidRequest("'question' must be a string.", param="question", code="invalid_type")
    threshold = body.get("threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1):
        raise InvalidRequest("'threshold' must be a number in [0, 1].", param="threshold", code="invalid_value")
    return response, documents, question, threshold


@router.post("/grounding/check")
async def grounding_check(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    ctx = RequestContext(protocol.new_request_id(request), "grounding")
    headers = {"x-gateway-request-id": ctx.request_id}
    try:
        await rt.pipeline.authenticate(ctx, protocol.bearer_token(request))
        body = await protocol.read_json(request, rt.settings.max_body_bytes)
        response, documents, question, threshold = _validate(body)
    except GatewayError as exc:
        return error_response(exc, headers)
    size = len(response) + sum(len(d["content"]) for d in documents)
    if size > _INLINE_CHARS:
        result = await asyncio.to_thread(_checker.check, response, documents, question, threshold)
    else:
        result = _checker.check(response, documents, question, threshold)
    return json_response(result.to_dict(), {**headers, "x-gateway-grounded": str(result.grounded).lower(),
                                            "x-gateway-support-score": f"{result.support_score:.4f}"})
