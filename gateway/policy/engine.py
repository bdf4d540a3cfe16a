"""The decision function: request facts and a policy in, a route plan out. No I/O, no clocks.

    decide(facts, policy, unhealthy) -> RoutePlan | None

Routes are tried top to bottom and the first whose `match` holds wins. (An index by requested
model name skips routes that cannot match, without changing which one wins.) The plan lists the
upstream calls to try in order: the target (or the chosen split arm, or the cascade), then the
fallbacks. Targets that lack a capability the request needs are removed; targets whose circuit
is open are removed too unless that would leave nothing to try. With `trace=True` the plan also
says why each earlier route did not match, which is what `gateway policy explain` prints.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import Deployment
from gateway.policy.model import CachePolicy, GroundingPolicy, Policy, Route, Step


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str
    endpoint: str = "chat"  # chat, completions, embeddings
    key: str | None = None  # the virtual key's id
    team: str | None = None
    user: str | None = None
    stream: bool = False
    tools: bool = False
    documents: bool = False
    json_mode: bool = False
    vision: bool = False
    prompt_tokens: int | None = None  # None: not counted (the policy did not need it)
    max_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    metadata: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # {"team": {"remaining_pct": 12.5, "exhausted": False}, ...}


@dataclass(slots=True)  # not frozen: built once per request, and frozen __init__ costs a setattr per field
class RoutePlan:
    route: str
    position: str
    action: str
    steps: tuple[Step, ...]
    max_attempts: int
    skipped: tuple[tuple[str, str], ...] = ()  # (model id, why it was left out)
    arm: int | None = None  # split: the arm chosen for this user or key
    trail: tuple[str, ...] = ()  # with trace=True: why each earlier route did not match
    cache: CachePolicy = CachePolicy()
    grounding: GroundingPolicy = GroundingPolicy()

    @property
    def targets(self) -> tuple[Deployment, ...]:
        return tuple(s.deployment for s in self.steps)


def decide(facts: RequestFacts, policy: Policy, unhealthy: frozenset[str] = frozenset(),
           trace: bool = False) -> RoutePlan | None:
    routes = policy.routes if trace else policy.by_model.get(facts.model, policy.generic)
    trail: list[str] = []
    for route in routes:
        if route.test(facts):
            return _plan(route, facts, unhealthy, tuple(trail))
        if trace:
            trail.append(f"{route.name} ({route.position}): {route.match.why_not(facts)}")
    return None


def why_no_route(facts: RequestFacts, policy: Policy) -> list[str]:
    """For a request no route takes: why each route did not match."""
    return [f"{r.name} ({r.position}): {r.match.why_not(facts)}" for r in policy.routes]


def _plan(route: Route, facts: RequestFacts, unhealthy: frozenset[str], trail: tuple[str, ...]) -> RoutePlan:
    arm = None
    if route.action == "split":
        arm = _pick_arm(route, facts)
        wanted = route.orders[arm]
    else:
        wanted = route.orders[0]
    floor = route.floor
    skipped: list[tuple[str, str]] = []
    if floor is not None and (not facts.tools or floor.tools) and (not facts.json_mode or floor.json_mode) \
            and (not facts.vision or floor.vision) and (
            floor.context_window is None or facts.prompt_tokens is None
            or facts.prompt_tokens + (facts.max_tokens or 0) <= floor.context_window):
        steps = wanted  # every step can serve this request: nothing to check one by one
    else:
        kept = []
        for step in wanted:
            reason = _incapable(step.deployment, facts)
            if reason is None:
                kept.append(step)
            else:
                skipped.append((step.deployment.id, reason))
        steps = tuple(kept)
    if unhealthy and steps:
        healthy = tuple(s for s in steps if s.deployment.id not in unhealthy)
        if healthy:
            skipped.extend((s.deployment.id, "circuit open") for s in steps if s.deployment.id in unhealthy)
            steps = healthy
    return RoutePlan(route.name, route.position, route.action, steps, route.max_attempts, tuple(skipped),
                     arm, trail, route.cache, route.grounding)


def _pick_arm(route: Route, facts: RequestFacts) -> int:
    sticky = (facts.user or facts.key or "") if route.sticky == "user" else (facts.key or facts.user or "")
    point = (zlib.crc32(f"{route.name}\x00{sticky}".encode()) / 0xFFFFFFFF) * route.total_weight
    for i, arm in enumerate(route.arms):
        point -= arm.weight
        if point < 0:
            return i
    return len(route.arms) - 1


def _incapable(d: Deployment, facts: RequestFacts) -> str | None:
    c = d.capabilities
    if facts.tools and c.tools is False:
        return "does not support tools"
    if facts.json_mode and c.json_mode is False:
        return "does not support JSON mode"
    if facts.vision and c.vision is False:
        return "does not support images"
    if c.context_window is not None and facts.prompt_tokens is not None:
        need = facts.prompt_tokens + (facts.max_tokens or 0)
        if need > c.context_window:
            return f"context window {c.context_window} is smaller than the {need} tokens needed"
    return None
