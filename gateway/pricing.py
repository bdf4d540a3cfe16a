"""Prices per token, as exact decimals: the policy's `pricing:` first, else litellm's price map.

Money is never a float here: litellm's per-token floats are read through their shortest decimal
representation (1.5e-07 -> Decimal('1.5E-7')), and every cost is an exact Decimal product.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway import model_info
from gateway.catalog import Deployment
from gateway.usage import Usage

ZERO = Decimal(0)
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal  # USD per token
    output: Decimal
    cached_input: Decimal
    source: str  # "policy", "litellm" or "none"


UNPRICED = Price(ZERO, ZERO, ZERO, "none")


def _dec(value: object) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def price_for(d: Deployment) -> Price:
    if d.pricing is not None:
        p = d.pricing
        cached = p.cached_input_per_1m if p.cached_input_per_1m is not None else p.input_per_1m
        return Price(p.input_per_1m / MILLION, p.output_per_1m / MILLION, cached / MILLION, "policy")
    info = model_info.lookup(d.provider, d.model)
    if not info or "input_cost_per_token" not in info:
        return UNPRICED
    inp = _dec(info.get("input_cost_per_token", 0))
    out = _dec(info.get("output_cost_per_token", 0))
    cached = _dec(info["cache_read_input_token_cost"]) if info.get("cache_read_input_token_cost") is not None else inp
    return Price(inp, out, cached, "litellm")


def cost(usage: Usage, price: Price) -> Decimal:
    """Cached prompt tokens are billed at the cached rate; reasoning tokens are inside completion tokens."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return ((usage.prompt_tokens - cached) * price.input + cached * price.cached_input
            + usage.completion_tokens * price.output)


def usd(amount: Decimal) -> str:
    """A decimal string without exponent, trailing zeros trimmed: '0.000001575', '12.5', '0'."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
