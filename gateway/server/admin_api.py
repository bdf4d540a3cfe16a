"""Admin endpoints under /admin/: virtual keys and the active policy. They require GATEWAY_MASTER_KEY."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    UnprocessableRequest,
)
from gateway.ledger import parse_time, summarise
from gateway.server import protocol
from gateway.server.protocol import error_response, json_response
from gateway.server.runtime import Runtime

router = APIRouter(prefix="/admin")


def _check_master(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    master = rt.settings.master_key
    if not master:
        raise PermissionDenied("The admin API is disabled: start the gateway with GATEWAY_MASTER_KEY set.")
    token = protocol.bearer_token(request)
    if not token or not hmac.compare_digest(token.encode(), master.reveal().encode()):
        raise AuthenticationFailed("The admin API needs the master key.")
    return rt


class _NotFound(ModelNotFound):
    code = "not_found"


@router.post("/keys")
async def create_key(request: Request) -> Response:
    try:
        rt = _check_master(request)
        body = await protocol.read_json(request, 64 * 1024)
        team = body.get("team")
        if not isinstance(team, str) or not team:
            raise InvalidRequest("Missing required parameter: 'team'.", param="team", code="missing_required_parameter")
        for name in ("user", "name"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise InvalidRequest(f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidRequest("Invalid type for 'metadata': expected an object.", param="metadata", code="invalid_type")
        key, record = await rt.pipeline.keys.create(team, body.get("user"), body.get("name"), metadata)
    except GatewayError as exc:
        return error_response(exc)
    # The only time the secret is ever shown.
    return json_response({"key": key, **record.public()}, {"cache-control": "no-store"}, status=201)


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    try:
        rt = _check_master(request)
        records = await rt.pipeline.keys.list()
    except GatewayError as exc:
        return error_response(exc)
    return json_response({"object": "list", "data": [r.public() for r in records]})


@router.delete("/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    try:
        rt = _check_master(request)
        if not await rt.pipeline.keys.revoke(key_id):
            raise _NotFound(f"No key with id {key_id!r}.", param="key_id")
    except GatewayError as exc:
        return error_response(exc)
    return json_response({"id": key_id, "revoked": True})


@router.get("/policy")
async def show_policy(request: Request) -> Response:
    try:
        rt = _check_master(request)
    except GatewayError as exc:
        return error_response(exc)
    policy = rt.pipeline.policy
    info: dict[str, Any] = {
        "source": policy.source,
        "sha256": policy.sha256,
        "loaded_at": rt.policy_loaded_at,
        "last_reload_errors": rt.reloader.last_error,
        "models": sorted(policy.deployments),
        "routes": [{"name": r.name, "position": r.position} for r in policy.routes],
    }
    return json_response(info)


@router.post("/policy/reload")
async def reload_policy(request: Request) -> Response:
    try:
        rt = _check_master(request)
    except GatewayError as exc:
        return error_response(exc)
    outcome = await rt.reloader.reload("admin API")
    if outcome.result == "rejected":
        err = UnprocessableRequest("The policy file is invalid; the previous policy keeps serving:\n"
                                   + "\n".join(outcome.errors), code="invalid_policy")
        return error_response(err)
    return json_response({"result": outcome.result, "sha256": outcome.sha256, "loaded_at": rt.policy_loaded_at})


_GROUPS = ("team", "model", "tier", "route", "key_id", "user", "endpoint", "cache")


@router.get("/usage")
async def usage_summary(request: Request) -> Response:
    try:
        rt = _check_master(request)
        group_by = request.query_params.get("group_by", "team")
        if group_by not in _GROUPS:
            raise InvalidRequest(f"group_by must be one of {', '.join(_GROUPS)}.", param="group_by",
                                 code="invalid_value")
        since = _time_param(request, "since")
        until = _time_param(request, "until")
        if rt.pipeline.ledger is None:
            raise InvalidRequest("This gateway keeps no ledger.", code="no_ledger")
        summary = await summarise(rt.pipeline.ledger, group_by, since, until)
    except GatewayError as exc:
        return error_response(exc)
    return json_response(summary)


def _time_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise InvalidRequest(f"Invalid '{name}': use epoch seconds or ISO 8601 (2026-12-01 or "
                             "2026-12-01T10:00:00Z).", param=name, code="invalid_value") from None
