"""The compiled policy the engine reads: plain frozen objects, references already resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Literal

from gateway.catalog import Deployment
from gateway.policy.conditions import Cond

StepKind = Literal["primary", "cascade", "fallback"]


@dataclass(frozen=True, slots=True)
class Step:
    deployment: Deployment
    kind: StepKind
    origin: str  # where in the route it came from: "target", "split[1]", "cascade[0]", "fallbacks[0]"
    accept: Cond | None = None  # cascade steps: the answer must pass this, or the next step is tried


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool = True
    scope: str = "team"
    ttl_s: int = 3600
    max_ttl_s: int = 86400
    nondeterministic: bool = False


@dataclass(frozen=True, slots=True)
class GroundingPolicy:
    action: str = "annotate"
    threshold: float = 0.35
    tool_messages: bool = False
    verifier: str | None = None  # a deployment id: a model that judges the claims too


@dataclass(frozen=True, slots=True)
class Arm:
    weight: float
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    index: int
    position: str  # "policies/demo.yaml:12"
    match: Cond
    models: frozenset[str] | None  # model names the match requires (for the index); None: not indexable
    action: Literal["target", "split", "cascade"]
    steps: tuple[Step, ...]  # target: the target (a tier expands to its models); cascade: the cascade
    arms: tuple[Arm, ...] = ()  # split
    total_weight: float = 0.0
    sticky: str = "user"
    fallbacks: tuple[Step, ...] = ()
    max_attempts: int = 3
    cache: CachePolicy = CachePolicy()
    grounding: GroundingPolicy = GroundingPolicy()
    # Precomputed at load time for the engine's hot path:
    test: Callable[[Any], bool] = field(default=lambda f: True, repr=False)  # the compiled match
    orders: tuple[tuple[Step, ...], ...] = ()  # the steps to try, deduplicated: one order, or one per split arm
    floor: "CapabilityFloor | None" = None  # what every step can do, to skip per-step checks when it suffices


@dataclass(frozen=True, slots=True)
class CapabilityFloor:
    tools: bool
    json_mode: bool
    vision: bool
    context_window: int | None  # the smallest declared window, or None if no step declares one


@dataclass(frozen=True, slots=True)
class Settings:
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    limits_on_store_error: str = "open"


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    scope: str  # team, key, user
    ids: frozenset[str] | None  # None: each id on its own
    daily_usd: Decimal | None
    monthly_usd: Decimal | None
    on_exhausted: str  # reject, downgrade

    def applies(self, ident: str | None) -> bool:
        return ident is not None and (self.ids is None or ident in self.ids)


@dataclass(frozen=True, slots=True)
class RateLimit:
    scope: str  # team, key
    ids: frozenset[str] | None
    rpm: int | None
    tpm: int | None

    def applies(self, ident: str | None) -> bool:
        return ident is not None and (self.ids is None or ident in self.ids)


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    sha256: str
    deployments: dict[str, Deployment]
    routes: tuple[Route, ...]
    model_names: tuple[str, ...]  # the names an app may ask for (GET /v1/models)
    settings: Settings = Settings()
    by_model: dict[str, tuple[Route, ...]] = field(default_factory=dict)  # routes that can match each model
    generic: tuple[Route, ...] = ()  # routes for any other model name
    fields: frozenset[str] = frozenset()  # every fact some condition reads
    min_context_window: int | None = None
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()

    def candidates(self, model: str) -> tuple[Route, ...]:
        return self.by_model.get(model, self.generic)

    @property
    def needs_prompt_tokens(self) -> bool:
        return "prompt_tokens" in self.fields

    @property
    def needs_budget(self) -> bool:
        return any(f.startswith("budget.") for f in self.fields)
