"""Budgets and rate limits, shared by every replica through Redis, each step one atomic Lua script.

Before the upstream call, `admit()` makes one round trip that checks every rate limit that
applies (requests per minute, tokens per minute, by key and team) and reads every budget's spend
(per key, team and user, per day and month). The spend becomes `budget.*` facts for routing,
and an exhausted budget whose policy says `reject` answers 429. After the answer, `charge()`
adds its cost to the budgets and its tokens to the token limits, in one more round trip.

Rate limits use GCRA (one timestamp per limit: the theoretical arrival time), which gives an
exact Retry-After. Spend is counted in integer pico-dollars, exact for any price with up to six
decimals per million tokens.

The bound on overspend: a request is admitted only while its budgets are unspent, and is
charged when its answer is complete. So once a budget's spend crosses its limit, no new request
is admitted, and the spend past the limit is at most what the requests already admitted (in
flight) at that moment cost.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import metrics
from gateway.errors import RateLimited, ServiceUnavailable
from gateway.keys import Principal
from gateway.policy.model import Budget, Policy, RateLimit
from gateway.pricing import usd
from gateway.store import LeanClient

log = logging.getLogger("gateway.limits")

PICO = Decimal(10) ** 12

# KEYS: budget counters..., then rate-limit TAT keys. ARGV[1] now, ARGV[2] how many budget keys,
# then per rate limit: kind ('r' requests, 't' tokens), limit per minute.
_ADMIT = """
local now = tonumber(ARGV[1])
local nb = tonumber(ARGV[2])
local spent = {}
for i = 1, nb do spent[i] = redis.call('GET', KEYS[i]) or '0' end
local worst = 0
local worst_at = 0
local updates = {}
local j = 3
for k = nb + 1, #KEYS do
  local kind = ARGV[j]
  local limit = tonumber(ARGV[j + 1])
  j = j + 2
  local interval = 60.0 / limit
  local tat = tonumber(redis.call('GET', KEYS[k]) or '0')
  if tat < now then tat = now end
  local wait
  if kind == 'r' then
    wait = tat + interval - now - 60.0
  else
    wait = tat - now - 60.0 + interval
  end
  if wait > worst then worst = wait; worst_at = k - nb end
  if kind == 'r' then updates[#updates + 1] = {KEYS[k], tat + interval} end
end
if worst > 0 then return {0, tostring(worst), spent, worst_at} end
for _, u in ipairs(updates) do redis.call('SET', u[1], tostring(u[2]), 'EX', 180) end
return {1, '0', spent, 0}
"""

# KEYS: budget counters..., then token-limit TAT keys. ARGV[1] now, ARGV[2] pico-dollars,
# ARGV[3] tokens, ARGV[4] how many budget keys, then per budget key its TTL, then per token limit its tpm.
_CHARGE = """
local now = tonumber(ARGV[1])
local pico = ARGV[2]
local tokens = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
for i = 1, nb do
  redis.call('INCRBY', KEYS[i], pico)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 + i]))
end
for k = nb + 1, #KEYS do
  local tpm = tonumber(ARGV[4 + k])
  local tat = tonumber(redis.call('GET', KEYS[k]) or '0')
  if tat < now then tat = now end
  redis.call('SET', KEYS[k], tostring(tat + tokens * 60.0 / tpm), 'EX', 180 + math.ceil(tokens * 60.0 / tpm))
end
return 1
"""


@dataclass(slots=True)
class Admission:
    facts: dict[str, Any] = field(default_factory=dict)  # budget.<scope>.<field>
    budget_keys: list[tuple[str, int]] = field(default_factory=list)  # (counter key, ttl) to charge
    token_keys: list[tuple[str, int]] = field(default_factory=list)  # (tat key, tpm) to charge


def _ident(scope: str, p: Principal) -> str | None:
    return {"team": p.team, "key": p.key_id, "user": p.user}.get(scope)


class Limits:
    def __init__(self, redis: aioredis.Redis | LeanClient, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._charge = redis.register_script(_CHARGE)

    async def admit(self, policy: Policy, p: Principal, now: float | None = None) -> Admission:
        if not policy.budgets and not policy.rate_limits:
            return Admission()
        now = time.time() if now is None else now
        day, month = _periods(now)
        periods: list[tuple[Budget, str, str, Decimal, int]] = []
        for b in policy.budgets:
            ident = _ident(b.scope, p)
            if not b.applies(ident):
                continue
            if b.daily_usd is not None:
                periods.append((b, "daily", f"{self.prefix}budget:{b.scope}:{ident}:d:{day}", b.daily_usd, 2 * 86400))
            if b.monthly_usd is not None:
                periods.append((b, "monthly", f"{self.prefix}budget:{b.scope}:{ident}:m:{month}", b.monthly_usd,
                                40 * 86400))
        limits: list[tuple[RateLimit, str, str, int]] = []
        for r in policy.rate_limits:
            ident = _ident(r.scope, p)
            if not r.applies(ident):
                continue
            if r.rpm:
                limits.append((r, "r", f"{self.prefix}rl:{r.scope}:{ident}:rpm", r.rpm))
            if r.tpm:
                limits.append((r, "t", f"{self.prefix}rl:{r.scope}:{ident}:tpm", r.tpm))
        if not periods and not limits:
            return Admission()
        args: list[Any] = [repr(now), len(periods)]
        for _, kind, _, limit in limits:
            args.extend((kind, limit))
        try:
            ok, wait, spent, over = await self._admit(keys=[k for *_, k, _, _ in periods] + [k for *_, k, _ in limits],
                                                args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.STORE_ERRORS.labels("limits").inc()
            if policy.settings.limits_on_store_error == "closed":
                raise ServiceUnavailable("Budgets and rate limits cannot be checked right now; try again shortly.",
                                         retry_after=1.0) from None
            log.warning("limits store unreachable; serving without budget and rate-limit checks",
                        extra={"fields": {"error": type(exc).__name__}})
            return Admission()
        if not int(ok):
            r, kind, _, _ = limits[int(over) - 1]  # the limit with the longest wait, as the script found it
            per = "requests" if kind == "r" else "tokens"
            raise RateLimited(f"Rate limit reached for {r.scope} {_ident(r.scope, p)!r}: "
                              f"{r.rpm if kind == 'r' else r.tpm} {per} per minute.", retry_after=float(wait))
        admission = Admission(token_keys=[(k, limit) for _, kind, k, limit in limits if kind == "t"],
                              budget_keys=[(k, ttl) for _, _, k, _, ttl in periods])
        self._budget_facts(periods, spent, p, now, admission.facts)
        return admission

    @staticmethod
    def _budget_facts(periods: list, spent: list, p: Principal, now: float, facts: dict[str, Any]) -> None:
        for (b, period, _, limit, _), raw in zip(periods, spent, strict=True):
            used = Decimal(int(raw)) / PICO
            remaining_pct = float(max(Decimal(0), (limit - used) / limit * 100))
            exhausted = used >= limit
            scope = facts.setdefault(b.scope, {})
            scope[period] = {"spent_usd": float(used), "limit_usd": float(limit), "remaining_pct": remaining_pct,
                             "exhausted": exhausted}
            if "remaining_pct" not in scope or remaining_pct < scope["remaining_pct"]:
                scope.update(spent_usd=float(used), limit_usd=float(limit), remaining_pct=remaining_pct,
                             exhausted=exhausted or scope.get("exhausted", False))
            if exhausted and b.on_exhausted == "reject":
                reset = _reset_in(period, now)
                raise RateLimited(
                    f"The {period} budget of {b.scope} {_ident(b.scope, p)!r} ({b.name}) is exhausted: "
                    f"${usd(used)} spent of ${usd(limit)}. It resets in {int(reset // 3600)}h{int(reset % 3600 // 60):02d}m "
                    f"(UTC).", code="budget_exceeded", retry_after=reset)

    async def charge(self, admission: Admission, cost: Decimal, tokens: int, now: float | None = None) -> None:
        if not admission.budget_keys and not admission.token_keys:
            return
        now = time.time() if now is None else now
        pico = int((cost * PICO).to_integral_value(rounding="ROUND_CEILING"))
        keys = [k for k, _ in admission.budget_keys] + [k for k, _ in admission.token_keys]
        args: list[Any] = [repr(now), pico, tokens, len(admission.budget_keys)]
        args += [ttl for _, ttl in admission.budget_keys] + [tpm for _, tpm in admission.token_keys]
        try:
            await self._charge(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.STORE_ERRORS.labels("limits_charge").inc()
            log.warning("could not charge budgets and token limits", extra={"fields": {
                "error": type(exc).__name__, "cost_usd": usd(cost)}})


def _periods(now: float) -> tuple[str, str]:
    t = datetime.fromtimestamp(now, timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%Y%m")


def _reset_in(period: str, now: float) -> float:
    t = datetime.fromtimestamp(now, timezone.utc)
    if period == "daily":
        nxt = t.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() + 86400
    else:
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        nxt = t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    return max(1.0, math.ceil(nxt - now))
