"""The request pipeline, one path for every endpoint:

    authenticate -> decide the route -> call the upstream (falling back on upstream failure)
    -> record (metrics, access log)

The HTTP surface decodes and encodes; everything in between happens here. Streams are returned
once the upstream accepted the request, and recorded when the last byte has gone out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.errors import GatewayError, ModelNotFound, RateLimited, UpstreamClientError, UpstreamError
from gateway.keys import KeyStore, Principal
from gateway.policy import Policy, RequestFacts, decide
from gateway.upstream import UpstreamCall, UpstreamResponse, Upstreams, UpstreamStream
from gateway.usage import Usage

log = logging.getLogger("gateway.access")

ENDPOINT_KIND = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    route: str = "-"
    model: str = "-"
    tier: str = "-"
    attempts: int = 0
    stream: bool = False

    def routing_headers(self) -> dict[str, str]:
        return {
            "x-gateway-request-id": self.request_id,
            "x-gateway-route": self.route,
            "x-gateway-model": self.model,
            "x-gateway-tier": self.tier,
            "x-gateway-attempts": str(self.attempts),
        }


class Pipeline:
    def __init__(self, policy: Policy, keys: KeyStore, upstreams: Upstreams) -> None:
        self.policy = policy  # swapped whole, never edited in place
        self.keys = keys
        self.upstreams = upstreams

    async def authenticate(self, ctx: RequestContext, token: str | None) -> Principal:
        ctx.principal = await self.keys.authenticate(token)
        return ctx.principal

    async def run(self, ctx: RequestContext, body: dict[str, Any]) -> UpstreamResponse | UpstreamStream:
        principal = ctx.principal
        assert principal is not None, "authenticate first"
        ctx.stream = bool(body.get("stream"))
        facts = RequestFacts(
            model=body["model"],
            endpoint=ENDPOINT_KIND[ctx.endpoint],
            key_id=principal.key_id,
            team=principal.team,
            user=principal.user,
            stream=ctx.stream,
        )
        plan = decide(facts, self.policy)
        if plan is None:
            raise ModelNotFound(f"The model {facts.model!r} does not exist or you do not have access to it.",
                                param="model")
        ctx.route = plan.route
        opts = body.get("stream_options")
        call = UpstreamCall(
            endpoint=ctx.endpoint,
            body=body,
            stream=ctx.stream,
            client_wants_usage=bool(isinstance(opts, dict) and opts.get("include_usage")),
            request_id=ctx.request_id,
        )
        last: GatewayError | None = None
        for deployment in plan.targets:
            ctx.attempts += 1
            ctx.model, ctx.tier = deployment.id, deployment.tier
            try:
                return await self.upstreams.for_deployment(deployment).send(deployment, call)
            except UpstreamClientError:
                raise  # the request itself was refused: another target would refuse it too
            except (UpstreamError, RateLimited) as exc:
                last = exc
                log.info("upstream failed, trying next target", extra={"fields": {
                    "request_id": ctx.request_id, "model": deployment.id, "error": exc.code}})
        assert last is not None
        raise last

    def record(self, ctx: RequestContext, status: int, usage: Usage | None = None, error: str | None = None) -> None:
        elapsed = time.perf_counter() - ctx.started
        kind = ENDPOINT_KIND.get(ctx.endpoint, ctx.endpoint)
        metrics.REQUESTS.labels(kind, ctx.route, ctx.model, ctx.tier, str(status)).inc()
        metrics.REQUEST_LATENCY.labels(kind, ctx.route, ctx.model).observe(elapsed)
        if usage is not None:
            metrics.TOKENS.labels(ctx.model, ctx.tier, "prompt").inc(usage.prompt_tokens)
            metrics.TOKENS.labels(ctx.model, ctx.tier, "completion").inc(usage.completion_tokens)
        p = ctx.principal
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"fields": {
                "request_id": ctx.request_id,
                "endpoint": kind,
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
                "key_id": p.key_id if p else None,
                "team": p.team if p else None,
                "route": ctx.route,
                "model": ctx.model,
                "tier": ctx.tier,
                "attempts": ctx.attempts,
                "stream": ctx.stream,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "error": error,
            }})
