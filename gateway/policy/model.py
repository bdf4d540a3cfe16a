"""The compiled policy the engine reads: plain frozen objects, references already resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from gateway.catalog import Deployment


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    index: int
    position: str  # "policies/demo.yaml:12"
    models: frozenset[str] | None  # requested model names this route matches; None: any
    targets: tuple[Deployment, ...]  # the target, then its fallbacks

    def describe_match(self) -> str:
        if self.models is None:
            return "any request"
        return "model in " + ", ".join(sorted(self.models))


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    sha256: str
    deployments: dict[str, Deployment]
    routes: tuple[Route, ...]
    model_names: tuple[str, ...]  # the names an app may ask for (GET /v1/models)
    by_model: dict[str, int] = field(default_factory=dict)  # first route index that names each model
