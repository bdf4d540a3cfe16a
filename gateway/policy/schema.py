"""The policy file's schema: every key a policy may hold, refused if unknown.

This is the single source of `gateway policy schema` (JSON Schema for editors) and of the
loader's type checks. Runtime objects are built from it in `loader.py`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    timeout: TimeoutSpec = TimeoutSpec()
    max_concurrency: int | None = Field(default=None, ge=1)
    stream_usage: bool = Field(default=True, description="ask the upstream for usage on streams (stream_options.include_usage)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers sent upstream; values may use ${VAR}")


class MatchSpec(Strict):
    model: str | list[str] | None = Field(default=None, description="requested model name(s)")


class RouteSpec(Strict):
    name: str = Field(min_length=1)
    match: MatchSpec = MatchSpec()
    target: str = Field(description="a model id from `models:`")
    fallbacks: list[str] = Field(default_factory=list, description="model ids tried in order on upstream errors")


class PolicySpec(Strict):
    version: Literal[1] = 1
    models: dict[str, ModelSpec] = Field(min_length=1)
    routes: list[RouteSpec] = Field(min_length=1)


def json_schema() -> dict:
    schema = PolicySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "LLM gateway routing policy"
    return schema
