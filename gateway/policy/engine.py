"""The decision function: request facts and a policy in, a route plan out. No I/O, no clocks."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.policy.model import Deployment, Policy


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str
    endpoint: str = "chat"  # chat, completions, embeddings
    key_id: str | None = None
    team: str | None = None
    user: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class RoutePlan:
    route: str
    position: str
    targets: tuple[Deployment, ...]
    trail: tuple[str, ...] = field(default=())  # why each earlier route did not match


def decide(facts: RequestFacts, policy: Policy) -> RoutePlan | None:
    """First matching route, top to bottom; None when no route takes the request."""
    trail: list[str] = []
    for route in policy.routes:
        if route.models is None or facts.model in route.models:
            return RoutePlan(route.name, route.position, route.targets, tuple(trail))
        trail.append(f"{route.name} ({route.position}): model {facts.model!r} is not {route.describe_match()}")
    return None
