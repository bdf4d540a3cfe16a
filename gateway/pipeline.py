"""The request pipeline, one path for every endpoint:

    authenticate -> gather facts -> decide the route (pure) -> call the plan's targets in order
    (fallback on upstream failure, escalate a cascade when an answer fails its accept check)
    -> record (metrics, access log)

The HTTP surface decodes and encodes; everything in between happens here. Streams are returned
once the upstream accepted the request, and recorded when the last byte has gone out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

import orjson
from redis.exceptions import RedisError

from gateway import logs, metrics
from gateway.cache import Cache, Entry, Lookup, cache_key, deterministic
from gateway.catalog import Deployment
from gateway.grounding import Checker, GroundingResult, verifier
from gateway.grounding.actions import GroundingRequest, answer_text, grounding_request
from gateway.grounding.actions import apply as apply_grounding
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, RateLimited, UpstreamClientError, UpstreamError
from gateway.health import Breakers, Concurrency
from gateway.keys import KeyStore, Principal
from gateway.ledger import Ledger
from gateway.limits import Admission, Limits
from gateway.metering import Meter
from gateway.policy import Policy, RequestFacts, RoutePlan, Step, decide
from gateway.policy.facts import ENDPOINT_KIND, request_facts
from gateway.pricing import ZERO, usd
from gateway.upstream import UpstreamCall, UpstreamResponse, Upstreams, UpstreamStream
from gateway.upstream.replay import ReplayStream
from gateway.usage import Usage

log = logging.getLogger("gateway.access")


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    principal: Principal | None = None
    route: str = "-"
    model: str = "-"
    tier: str = "-"
    attempts: int = 0
    stream: bool = False
    body: dict[str, Any] | None = None
    deployment: Deployment | None = None  # the one that answered
    usage: Usage | None = None
    cost: Decimal | None = None  # what the answer cost (0 for a cache hit)
    saved: Decimal | None = None
    verifier_cost: Decimal = ZERO  # what the grounding verifier's calls cost
    cache: str = "none"  # none, miss, hit, bypass, refresh
    admission: Admission | None = None  # budgets and rate limits to charge when the answer is complete

    lookup: Lookup | None = None  # the cache entry this request may fill
    cache_ttl: int = 0
    grounding_request: GroundingRequest | None = None  # documents to check the answer against
    grounding: GroundingResult | None = None

    @property
    def total_cost(self) -> Decimal:
        """What the request cost: its answer and any grounding verifier calls it made."""
        return (self.cost or ZERO) + self.verifier_cost

    def routing_headers(self) -> dict[str, str]:
        headers = {
            "x-gateway-request-id": self.request_id,
            "x-gateway-route": self.route,
            "x-gateway-model": self.model,
            "x-gateway-tier": self.tier,
            "x-gateway-attempts": str(self.attempts),
        }
        if self.cache != "none":
            headers["x-gateway-cache"] = self.cache
        if self.grounding is not None:
            headers["x-gateway-grounded"] = "true" if self.grounding.grounded else "false"
            headers["x-gateway-support-score"] = f"{self.grounding.support_score:.4f}"
        return headers


@dataclass(slots=True)
class AnswerFacts:
    """What a cascade step's `accept:` reads. With no grounding check, the grounding fields hold."""

    finish_reason: str | None
    non_empty: bool
    valid_json: bool
    completion_tokens: int | None
    support_score: float = 1.0
    grounded: bool = True


class Pipeline:
    def __init__(self, policy: Policy, keys: KeyStore, upstreams: Upstreams, ledger: Ledger | None = None,
                 limits: Limits | None = None, cache: Cache | None = None, prefix: str = "gw:") -> None:
        self.keys = keys
        self.upstreams = upstreams
        self.ledger = ledger
        self.limits = limits
        self.cache = cache
        self.prefix = prefix
        self.meter = Meter()
        self.checker = Checker()
        self._background: set[asyncio.Task] = set()  # charges, cache stores and releases, off the request path
        self.breakers = Breakers()
        self.concurrency = Concurrency()
        self.policy = policy

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        # One assignment: a request holds the policy it started with; the next one sees the new file.
        self._policy = policy
        self.breakers.configure(policy.settings.breaker_failures, policy.settings.breaker_cooldown_s)

    async def authenticate(self, ctx: RequestContext, token: str | None) -> Principal:
        ctx.principal = await self.keys.authenticate(token)
        return ctx.principal

    async def run(self, ctx: RequestContext, body: dict[str, Any]) -> UpstreamResponse | UpstreamStream:
        policy = self.policy
        ctx.body = body
        ctx.stream = bool(body.get("stream"))
        p = ctx.principal
        assert p is not None, "authenticate first"
        budget: dict[str, Any] = {}
        if self.limits is not None and (policy.budgets or policy.rate_limits):
            ctx.admission = await self.limits.admit(policy, p)  # one round trip; 429 when over a limit
            budget = ctx.admission.facts
        facts = request_facts(body, policy, endpoint=ctx.endpoint, key=p.key_id, team=p.team, user=p.user,
                              headers=ctx.headers, budget=budget)
        plan = decide(facts, policy, self.breakers.unhealthy())
        if plan is None:
            raise ModelNotFound(f"The model {facts.model!r} does not exist or you do not have access to it.",
                                param="model")
        ctx.route = plan.route
        if not plan.steps:
            reasons = "; ".join(f"{m} {why}" for m, why in plan.skipped)
            raise InvalidRequest(f"No model on route {plan.route!r} can serve this request: {reasons}.",
                                 code="no_capable_model")
        opts = body.get("stream_options")
        wants_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
        if ctx.endpoint == "chat/completions":
            gp = plan.grounding
            ctx.grounding_request = grounding_request(body, gp.action, gp.threshold, gp.tool_messages, gp.verifier)
        if self.cache is not None and plan.cache.enabled:
            hit = await self._cache_lookup(ctx, plan, body, wants_usage)
            if hit is not None:
                return hit
        # A failure here leaves ctx.lookup held; finish(), which every request reaches, releases it.
        return await self._execute(ctx, plan, body, facts, wants_usage)

    # -- cache ---------------------------------------------------------------------------------

    async def _cache_lookup(self, ctx: RequestContext, plan: RoutePlan, body: dict[str, Any],
                            wants_usage: bool) -> UpstreamResponse | UpstreamStream | None:
        assert self.cache is not None and ctx.principal is not None
        cfg = plan.cache
        directives = ctx.headers.get("cache-control", "").lower()
        if "no-store" in directives or not (
                cfg.nondeterministic or ctx.endpoint == "embeddings" or deterministic(body)):
            ctx.cache = "bypass"
            metrics.CACHE.labels("bypass").inc()
            return None
        ctx.cache_ttl = cfg.ttl_s
        asked = ctx.headers.get("x-gateway-cache-ttl")
        if asked is not None:
            if not asked.isdigit() or int(asked) < 1:
                raise InvalidRequest("x-gateway-cache-ttl must be a whole number of seconds.",
                                     param="x-gateway-cache-ttl", code="invalid_value")
            ctx.cache_ttl = min(int(asked), cfg.max_ttl_s)
        p = ctx.principal
        scope_id = {"team": p.team, "key": p.key_id, "global": "*"}[cfg.scope]
        key = cache_key(self.prefix, cfg.scope, scope_id, ctx.endpoint,
                        tuple(s.deployment.id for s in plan.steps), body)
        try:
            if "no-cache" in directives:
                ctx.cache = "refresh"
                ctx.lookup = Lookup(key)
                metrics.CACHE.labels("refresh").inc()
                return None
            lookup = await self.cache.get(key)
        except (RedisError, OSError, TimeoutError):
            ctx.cache = "bypass"
            metrics.CACHE.labels("error").inc()
            return None
        if lookup.entry is None:
            ctx.cache, ctx.lookup = "miss", lookup
            metrics.CACHE.labels("miss").inc()
            return None
        entry = lookup.entry
        ctx.cache = "hit"
        metrics.CACHE.labels("hit").inc()
        ctx.model, ctx.tier = entry.model, entry.tier
        ctx.deployment = self.policy.deployments.get(entry.model)
        ctx.saved = Decimal(entry.cost)
        usage = Usage.from_openai(entry.usage)
        if ctx.stream:
            return ReplayStream(None, usage, wants_usage, chunks=entry.as_chunks()) if entry.chunks is not None \
                else ReplayStream(entry.as_completion(), usage, wants_usage)
        return UpstreamResponse(entry.as_completion(), usage)

    def cache_store(self, ctx: RequestContext, entry: Entry) -> None:
        """Store a complete answer (off the request path, batched), then let waiting identical requests
        read it."""
        if self.cache is None or ctx.lookup is None:
            return
        lookup, ctx.lookup = ctx.lookup, None
        self.cache.put(lookup, entry, ctx.cache_ttl)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _execute(self, ctx: RequestContext, plan: RoutePlan, body: dict[str, Any], facts: RequestFacts,
                       wants_usage: bool) -> UpstreamResponse | UpstreamStream:
        steps = plan.steps
        last_cascade = max((i for i, s in enumerate(steps) if s.kind == "cascade"), default=-1)
        best: tuple[UpstreamResponse, Step] | None = None  # a rejected answer, kept in case nothing better comes
        last: GatewayError | None = None
        for i, step in enumerate(steps):
            if ctx.attempts >= plan.max_attempts:
                break
            d = step.deployment
            if not self.concurrency.acquire(d.id, d.max_concurrency):
                metrics.AT_CAPACITY.labels(d.id).inc()
                last = last or RateLimited(f"Every model on route {plan.route!r} is at its concurrency limit.",
                                           code="at_capacity", retry_after=1.0)
                continue
            judged = step.accept is not None and i < last_cascade  # this answer must pass before anyone sees it
            stream = ctx.stream and not judged
            ctx.attempts += 1
            ctx.model, ctx.tier, ctx.deployment = d.id, d.tier, d
            call = UpstreamCall(endpoint=ctx.endpoint, body=body if stream == ctx.stream else _unstreamed(body),
                                stream=stream, client_wants_usage=wants_usage, request_id=ctx.request_id)
            try:
                result = await self.upstreams.for_deployment(d).send(d, call)
            except UpstreamClientError:
                self.concurrency.release(d.id, d.max_concurrency)
                raise  # the request itself was refused: another target would refuse it too
            except (UpstreamError, RateLimited) as exc:
                self.concurrency.release(d.id, d.max_concurrency)
                self.breakers.failure(d.id)
                metrics.FALLBACKS.labels(plan.route, d.id, exc.code or "error").inc()
                last = exc
                log.info("upstream failed, trying the next target", extra={"fields": {
                    "request_id": ctx.request_id, "route": plan.route, "model": d.id, "error": exc.code}})
                continue
            self.breakers.success(d.id)
            if isinstance(result, UpstreamResponse):
                self.concurrency.release(d.id, d.max_concurrency)
                if judged:
                    assert step.accept is not None
                    verdict = answer_facts(result, facts)
                    g = ctx.grounding_request
                    if g is not None:  # the accept check reads support_score and grounded
                        ctx.grounding = await self._check(ctx, answer_text(result.body))
                        verdict.support_score = ctx.grounding.support_score
                        verdict.grounded = ctx.grounding.grounded
                    escalate = g is not None and g.action == "escalate" and not verdict.grounded
                    if escalate or not step.accept.test(verdict):
                        metrics.ESCALATIONS.labels(plan.route, d.id).inc()
                        best = (result, step)
                        ctx.grounding = None
                        continue
                    if ctx.stream:
                        return ReplayStream(result.body, result.usage, wants_usage)
                return result
            return _Released(result, self.concurrency, d.id, d.max_concurrency)
        if best is not None:
            # Nothing after the rejected answer could answer at all: the rejected answer beats an error.
            answer, step = best
            ctx.model, ctx.tier, ctx.deployment = step.deployment.id, step.deployment.tier, step.deployment
            return ReplayStream(answer.body, answer.usage, wants_usage) if ctx.stream else answer
        assert last is not None
        raise last

    # -- metering and recording -------------------------------------------------------------

    def meter_response(self, ctx: RequestContext, result: UpstreamResponse) -> str:
        """Settle usage and cost for a complete answer; put them in its body. Returns the cost string."""
        if ctx.cache == "hit":
            ctx.usage, ctx.cost = result.usage, ZERO
        else:
            d = ctx.deployment
            assert d is not None and ctx.body is not None
            ctx.usage = self.meter.response_usage(d, ctx.endpoint, ctx.body, result.body, result.usage)
            ctx.cost = self.meter.cost(d, ctx.usage)
        body_usage = result.body.get("usage")
        if not isinstance(body_usage, dict):
            body_usage = result.body["usage"] = usage_dict(ctx.usage or Usage())
        g = ctx.grounding_request
        if ctx.grounding is not None:  # checked by ground() (or a cascade) before this
            self._count_grounding(ctx)
        if ctx.lookup is not None:
            stored = {k: v for k, v in body_usage.items() if k != "cost_usd"}
            self.cache_store(ctx, Entry({k: v for k, v in result.body.items() if k != "usage"}, None, stored,
                                        usd(ctx.cost), ctx.model, ctx.tier))
        body_usage["cost_usd"] = usd(ctx.total_cost)
        if g is not None and ctx.grounding is not None:
            apply_grounding(result.body, ctx.grounding, g)  # after caching: the cache holds the raw answer
        return body_usage["cost_usd"]

    async def ground(self, ctx: RequestContext, result: UpstreamResponse) -> None:
        """Check a complete answer (before it is metered and sent), unless a cascade already did."""
        g = ctx.grounding_request
        if g is not None and ctx.grounding is None and isinstance(result.body.get("choices"), list):
            ctx.grounding = await self._check(ctx, answer_text(result.body))

    async def ground_stream(self, ctx: RequestContext, content: str) -> dict[str, Any] | None:
        """A streamed answer's check, run on the assembled text; its result travels as a final chunk."""
        g = ctx.grounding_request
        if g is None:
            return None
        ctx.grounding = await self._check(ctx, content)  # after the usage chunk: the ledger sees its cost
        self._count_grounding(ctx)
        return None if g.action == "flag" else ctx.grounding.to_dict()

    def _charge_verifier(self, ctx: RequestContext, d: Deployment, body: dict[str, Any],
                         answer: UpstreamResponse) -> None:
        """The verifier's call is part of the request: its tokens and cost are metered under its own model
        and its cost is part of the request's (header, body, ledger and budgets)."""
        usage = self.meter.response_usage(d, "chat/completions", body, answer.body, answer.usage)
        cost = self.meter.cost(d, usage)
        ctx.verifier_cost += cost
        _count_usage(ctx, d.id, d.tier, usage, cost)

    async def _check(self, ctx: RequestContext, text: str) -> GroundingResult:
        """The CPU checker, then (if the route names one) the model verifier on its claims, in one call.
        A verifier that fails or answers nonsense leaves the checker's result, with a reason saying so."""
        g = ctx.grounding_request
        assert g is not None
        result = self.checker.check(text, g.documents, g.question, g.threshold)
        d = self.policy.deployments.get(g.verifier) if g.verifier else None
        if d is None:
            return result
        built = verifier.request_body(d.id, result, g.documents, g.question)
        if built is None:
            return result
        body, judged = built
        call = UpstreamCall(endpoint="chat/completions", body=body, stream=False, client_wants_usage=False,
                            request_id=ctx.request_id)
        try:
            answer = await self.upstreams.for_deployment(d).send(d, call)
            assert isinstance(answer, UpstreamResponse)
            self._charge_verifier(ctx, d, body, answer)
            return verifier.merge(result, judged, answer_text(answer.body), g.threshold)
        except (GatewayError, ValueError) as exc:
            metrics.GROUNDING_VERIFIER_ERRORS.labels(d.id).inc()
            log.warning("grounding verifier failed; the checker's result stands", extra={"fields": {
                "request_id": ctx.request_id, "verifier": d.id, "error": getattr(exc, "code", None) or str(exc)}})
            for c in result.claims:
                if "neutral" not in c.reasons:
                    c.reasons.append("verifier unavailable")
            return result

    def _count_grounding(self, ctx: RequestContext) -> None:
        assert ctx.grounding is not None
        verdict = "grounded" if ctx.grounding.grounded else "ungrounded"
        metrics.GROUNDING.labels(ctx.model, ctx.tier, verdict).inc()
        metrics.SUPPORT.labels(ctx.model, ctx.tier).observe(ctx.grounding.support_score)

    def stream_cost(self, ctx: RequestContext, usage: Usage) -> str:
        if ctx.cache == "hit" or ctx.deployment is None:
            return usd(ctx.verifier_cost)
        return usd(self.meter.cost(ctx.deployment, usage) + ctx.verifier_cost)

    def meter_stream(self, ctx: RequestContext, streamed_text: str, reported: Usage | None) -> Usage:
        if ctx.cache == "hit":
            ctx.usage, ctx.cost = reported or Usage(), ZERO
            return ctx.usage
        d = ctx.deployment
        assert d is not None and ctx.body is not None
        usage = self.meter.stream_usage(d, ctx.endpoint, ctx.body, streamed_text, reported)
        ctx.usage, ctx.cost = usage, self.meter.cost(d, usage)
        return usage

    def finish(self, ctx: RequestContext, status: int, error: str | None = None) -> None:
        """Once per request, after its last byte: metrics, the ledger record, the access log line."""
        elapsed = time.perf_counter() - ctx.started
        kind = ENDPOINT_KIND.get(ctx.endpoint, ctx.endpoint)
        usage, p = ctx.usage, ctx.principal
        metrics.REQUESTS.labels(kind, ctx.route, ctx.model, ctx.tier, str(status)).inc()
        metrics.REQUEST_LATENCY.labels(kind, ctx.route, ctx.model).observe(elapsed)
        if usage is not None:  # the answer's own; a verifier's calls were counted under its model
            _count_usage(ctx, ctx.model, ctx.tier, usage, ctx.cost or ZERO)
        if ctx.saved:
            metrics.CACHE_SAVED.labels(p.team if p else "-", ctx.model).inc(float(ctx.saved))
        if ctx.admission is not None and self.limits is not None and usage is not None and (
                ctx.cache != "hit" or ctx.verifier_cost):  # a hit still pays for its verifier
            tokens = usage.total_tokens if ctx.cache != "hit" else 0
            self._spawn(self.limits.charge(ctx.admission, ctx.total_cost, tokens))
        if ctx.lookup is not None:  # ended without storing an answer: release waiting identical requests
            lookup, ctx.lookup = ctx.lookup, None
            if self.cache is not None:
                self._spawn(self.cache.release(lookup))
        if self.ledger is not None and p is not None and kind != "models":
            self.ledger.append({
                "id": ctx.request_id, "ts": round(ctx.received_at, 3), "key_id": p.key_id, "team": p.team,
                "user": p.user or "", "route": ctx.route, "model": ctx.model, "tier": ctx.tier,
                "upstream_model": ctx.deployment.model if ctx.deployment else "", "endpoint": kind,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "cached_tokens": usage.cached_tokens if usage else 0,
                "reasoning_tokens": usage.reasoning_tokens if usage else 0,
                "estimated": int(bool(usage and usage.estimated)), "cost_usd": usd(ctx.total_cost),
                "saved_usd": usd(ctx.saved or ZERO), "cache": ctx.cache, "latency_ms": round(elapsed * 1000, 2),
                "status": status, "attempts": ctx.attempts, "stream": int(ctx.stream),
                "grounding_score": round(ctx.grounding.support_score, 4) if ctx.grounding is not None else None,
            })
        if log.isEnabledFor(logging.INFO):
            fields = {
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
                "estimated": usage.estimated if usage else None,
                "cost_usd": usd(ctx.total_cost) if ctx.cost is not None else None,
                "error": error,
            }
            if not logs.access(log.name, fields):
                log.info("request", extra={"fields": fields})


def _count_usage(ctx: RequestContext, model: str, tier: str, usage: Usage, cost: Decimal) -> None:
    """Tokens and cost metrics for one model's part of a request."""
    metrics.TOKENS.labels(model, tier, "prompt").inc(usage.prompt_tokens)
    metrics.TOKENS.labels(model, tier, "completion").inc(usage.completion_tokens)
    if cost:
        p = ctx.principal
        metrics.COST.labels(p.team if p else "-", model, tier, ctx.route).inc(float(cost))


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                           "total_tokens": usage.total_tokens}
    if usage.estimated:
        out["estimated"] = True
    return out


def answer_facts(result: UpstreamResponse, facts: RequestFacts) -> AnswerFacts:
    choices = result.body.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    content = message.get("content") or first.get("text") or ""
    valid_json = True
    if facts.json_mode:
        try:
            orjson.loads(content)
        except (orjson.JSONDecodeError, TypeError):
            valid_json = False
    return AnswerFacts(
        finish_reason=first.get("finish_reason"),
        non_empty=bool(content.strip()) or bool(message.get("tool_calls")),
        valid_json=valid_json,
        completion_tokens=result.usage.completion_tokens if result.usage else None,
    )


def _unstreamed(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out.pop("stream", None)
    out.pop("stream_options", None)
    return out


class _Released:
    """A stream that gives its deployment's concurrency slot back when it closes."""

    def __init__(self, inner: UpstreamStream, slots: Concurrency, model_id: str, limit: int | None) -> None:
        self._inner, self._slots, self._id, self._limit = inner, slots, model_id, limit
        self._open = limit is not None

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    def __aiter__(self):
        return self._inner.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._open:
                self._open = False
                self._slots.release(self._id, self._limit)
