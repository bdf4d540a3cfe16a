"""The policy file's schema: every key a policy may hold, refused if unknown.

This is the single source of `gateway policy schema` (JSON Schema for editors) and of the
loader's type checks. Runtime objects are built from it in `loader.py`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Tier = Literal["base", "fine-tuned", "distilled"]

# Providers spoken to directly over OpenAI's HTTP protocol; anything else goes through litellm.
OPENAI_COMPATIBLE = frozenset({"openai", "azure", "vllm", "ollama", "tgi", "openai-compatible", "fake"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PricingSpec(Strict):
    """USD per million tokens. Overrides litellm's price map; self-hosted models set their GPU cost here."""

    input_per_1m: Decimal = Field(ge=0)
    output_per_1m: Decimal = Field(ge=0)
    cached_input_per_1m: Decimal | None = Field(default=None, ge=0)


class TimeoutSpec(Strict):
    connect: float = Field(default=5.0, gt=0, description="seconds to open a connection")
    read: float = Field(default=120.0, gt=0, description="seconds to wait for each read (first byte, next chunk)")


class CapabilitiesSpec(Strict):
    """What a deployment can do. Unset fields default from litellm's model map for hosted models;
    unknown stays unknown (not skipped)."""

    tools: bool | None = None
    json_mode: bool | None = None
    vision: bool | None = None
    context_window: int | None = Field(default=None, ge=1, description="prompt + completion tokens")


class ModelSpec(Strict):
    """One upstream deployment the gateway can send requests to."""

    tier: Tier
    provider: str = Field(default="openai", description="openai, azure, vllm, ollama, tgi, openai-compatible, fake: "
                          "spoken to directly; any other litellm provider (anthropic, bedrock, vertex_ai, ...) via litellm")
    model: str = Field(min_length=1, description="the model name the upstream knows")
    api_base: str | None = Field(default=None, description="base URL including /v1; ${VAR} and ${VAR:-default} expand")
    api_key: str | None = Field(default=None, description="an environment reference such as ${OPENAI_API_KEY}; never a literal")
    api_version: str | None = Field(default=None, description="Azure OpenAI api-version")
    base_model: str | None = Field(default=None, description="for adapters: the base model they were trained from")
    pricing: PricingSpec | None = None
    capabilities: CapabilitiesSpec = CapabilitiesSpec()
    timeout: TimeoutSpec = TimeoutSpec()
    max_concurrency: int | None = Field(default=None, ge=1)
    stream_usage: bool = Field(default=True, description="ask the upstream for usage on streams (stream_options.include_usage)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers sent upstream; values may use ${VAR}")


class TierRef(Strict):
    tier: Tier


TargetRef = str | TierRef

_MATCH_DOC = ("conditions, all of which must hold: field: value | [values] | {eq, ne, in, not_in, gt, gte, lt, "
              "lte, regex, exists}, and all/any/not. Fields: model, endpoint, team, user, key, stream, tools, "
              "documents, json_mode, vision, prompt_tokens, max_tokens, headers.<name>, metadata.<name>, "
              "budget.<scope>.<field>")
_ACCEPT_DOC = ("conditions on the answer: finish_reason, non_empty, valid_json, completion_tokens, support_score, "
               "grounded (grounding fields hold when no grounding check ran)")


class SplitArm(Strict):
    target: TargetRef
    weight: float = Field(gt=0)


class CascadeStep(Strict):
    target: TargetRef
    accept: dict[str, Any] | None = Field(default=None, description=_ACCEPT_DOC)


class RouteSpec(Strict):
    name: str = Field(min_length=1)
    match: dict[str, Any] | None = Field(default=None, description=_MATCH_DOC)
    target: TargetRef | None = Field(default=None, description="a model id from `models:`, or {tier: ...}")
    split: list[SplitArm] | None = Field(default=None, min_length=2, description="weighted targets")
    sticky: Literal["user", "key"] = Field(default="user", description="split: who keeps the same arm "
                                           "(user falls back to key when the key has no user)")
    cascade: list[CascadeStep] | None = Field(default=None, min_length=2,
                                              description="cheapest first; escalate when `accept` fails")
    fallbacks: list[TargetRef] = Field(default_factory=list, description="tried in order on upstream errors")
    max_attempts: int | None = Field(default=None, ge=1, le=20, description="retry budget for this route")
    cache: CacheSpec | None = None
    grounding: GroundingSpec | None = None

    @model_validator(mode="after")
    def _one_action(self) -> "RouteSpec":
        actions = [a for a in ("target", "split", "cascade") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError("a route needs exactly one of target, split, cascade"
                             + (f" (has {', '.join(actions)})" if actions else ""))
        return self


class BreakerSpec(Strict):
    failures: int = Field(default=5, ge=1, description="consecutive failures that open a model's circuit")
    cooldown_s: float = Field(default=30.0, gt=0, description="seconds before an open circuit lets a trial through")


class CacheSpec(Strict):
    """Response caching; in `settings:` the defaults, on a route an override of any of them."""

    enabled: bool | None = Field(default=None, description="cache this route's answers (default true)")
    scope: Literal["team", "key", "global"] | None = Field(
        default=None, description="who shares entries: team (default), key, or global for public content")
    ttl_s: int | None = Field(default=None, ge=1, description="entry lifetime (default 3600)")
    max_ttl_s: int | None = Field(default=None, ge=1, description="the most x-gateway-cache-ttl may ask (default 86400)")
    nondeterministic: bool | None = Field(
        default=None, description="also cache requests that are not deterministic (no temperature 0, no seed)")


class GroundingSpec(Strict):
    """Post-hoc grounding checks; in `settings:` the defaults, on a route an override."""

    action: Literal["annotate", "cite", "flag", "block", "escalate"] | None = Field(
        default=None, description="annotate (default): attach the result; cite: also insert [n] markers and "
        "sources; flag: headers and metrics only; block: refuse an ungrounded answer (not streams); escalate: "
        "in a cascade, an ungrounded answer goes to the next target")
    threshold: float | None = Field(default=None, ge=0, le=1, description="claim support needed (default 0.35)")
    tool_messages: bool | None = Field(default=None, description="also treat `tool` role messages as documents")
    verifier: str | None = Field(default=None, description="a model from `models:` that judges the claims too "
                                 "(one call per answer, after the CPU checker); its verdict decides")


class SettingsSpec(Strict):
    max_attempts: int = Field(default=3, ge=1, le=20, description="upstream calls one request may make, in all")
    circuit_breaker: BreakerSpec = BreakerSpec()
    cache: CacheSpec = CacheSpec()
    grounding: GroundingSpec = GroundingSpec()
    limits_on_store_error: Literal["open", "closed"] = Field(
        default="open", description="budgets and rate limits when Redis is unreachable: serve (open) or 503 (closed)")


class BudgetSpec(Strict):
    name: str | None = None
    scope: Literal["team", "key", "user"]
    match: str | list[str] = Field(default="*", description="the ids it applies to; '*': each one on its own")
    daily_usd: Decimal | None = Field(default=None, gt=0)
    monthly_usd: Decimal | None = Field(default=None, gt=0)
    on_exhausted: Literal["reject", "downgrade"] = Field(
        default="reject", description="reject: 429 naming the budget; downgrade: keep serving and let routes "
                                      "that match budget.<scope>.exhausted pick a cheaper tier")

    @model_validator(mode="after")
    def _some_limit(self) -> "BudgetSpec":
        if self.daily_usd is None and self.monthly_usd is None:
            raise ValueError("a budget needs daily_usd, monthly_usd or both")
        return self


class RateLimitSpec(Strict):
    scope: Literal["team", "key"]
    match: str | list[str] = Field(default="*", description="the ids it applies to; '*': each one on its own")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="tokens (prompt + completion) per minute")

    @model_validator(mode="after")
    def _some_limit(self) -> "RateLimitSpec":
        if self.rpm is None and self.tpm is None:
            raise ValueError("a rate limit needs rpm, tpm or both")
        return self


class PolicySpec(Strict):
    version: Literal[1] = 1
    settings: SettingsSpec = SettingsSpec()
    models: dict[str, ModelSpec] = Field(min_length=1)
    routes: list[RouteSpec] = Field(min_length=1)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    rate_limits: list[RateLimitSpec] = Field(default_factory=list)


class PolicyShell(Strict):
    """The top level alone, so that each model and route can be validated (and reported) on its own."""

    version: Literal[1] = 1
    settings: SettingsSpec = SettingsSpec()
    models: dict[str, Any] = Field(min_length=1)
    routes: list[Any] = Field(min_length=1)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    rate_limits: list[RateLimitSpec] = Field(default_factory=list)


def json_schema() -> dict:
    schema = PolicySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "LLM gateway routing policy"
    for spec in schema.get("$defs", {}).values():
        if spec.get("title") == "RouteSpec":
            spec["properties"]["match"] = {"description": _MATCH_DOC, "anyOf": [{"type": "object"}, {"type": "null"}]}
    return schema
