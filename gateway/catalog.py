"""The model catalog's runtime objects: upstream deployments and their prices.

Shared by the policy engine (which picks deployments) and the upstream adapters (which call them),
so it sits below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.redact import Secret


@dataclass(frozen=True, slots=True)
class Pricing:
    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    tools: bool | None = None  # None: unknown, so never a reason to skip
    json_mode: bool | None = None
    vision: bool | None = None
    context_window: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Deployment:
    id: str
    tier: str
    provider: str
    model: str
    api_base: str | None
    api_key: Secret | None
    api_version: str | None
    base_model: str | None
    pricing: Pricing | None
    connect_timeout: float
    read_timeout: float
    max_concurrency: int | None
    stream_usage: bool
    headers: dict[str, str]
    openai_compatible: bool
    capabilities: Capabilities = Capabilities()
