"""Load a policy file completely or not at all.

Every problem is collected (not just the first) and reported as
`routes[2].match.team at policies/prod.yaml:14: unknown key 'team'`, the line an ops person
needs. Environment references (`${VAR}`, `${VAR:-default}`) are expanded here, once.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Mapping

from pydantic import ValidationError

from gateway import model_info
from gateway.catalog import Capabilities, Deployment, Pricing
from gateway.policy import conditions, yamlpos
from gateway.policy.conditions import Cond
from gateway.policy.model import Arm, Budget, CachePolicy, GroundingPolicy, CapabilityFloor, Policy, RateLimit, Route, Settings, Step
from gateway.policy.schema import OPENAI_COMPATIBLE, ModelSpec, PolicyShell, RouteSpec
from gateway.redact import Secret

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENV_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")


@dataclass(frozen=True)
class Issue:
    path: str
    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{self.path} at {where}: {self.message}"


class PolicyError(Exception):
    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.source, i.line or 0))
        super().__init__("\n".join(str(i) for i in issues))


def load_policy(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Policy:
    p = FsPath(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Issue("(file)", str(path), None, f"cannot read: {exc.strerror}")]) from None
    return load_policy_text(text, str(path), env)


def load_policy_text(text: str, source: str = "<policy>", env: Mapping[str, str] | None = None) -> Policy:
    env = os.environ if env is None else env
    try:
        data, positions = yamlpos.parse(text)
    except yamlpos.YamlProblem as exc:
        raise PolicyError([Issue(yamlpos.format_path(exc.path), source, exc.line, exc.message)]) from None

    def issue(path: tuple, message: str) -> Issue:
        return Issue(yamlpos.format_path(path), source, yamlpos.line_of(path, positions), message)

    if not isinstance(data, dict):
        raise PolicyError([issue((), "a policy is a mapping with `models:` and `routes:`")])
    issues: list[Issue] = []

    def validated(model: Any, value: Any, at: tuple) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            issues.extend(issue(at + tuple(e["loc"]), _explain(e, data, at)) for e in exc.errors())
            return None

    shell = validated(PolicyShell, data, ())
    if shell is None:
        raise PolicyError(issues)
    model_specs = {k: v for k, v in ((k, validated(ModelSpec, v, ("models", k))) for k, v in shell.models.items())
                   if v is not None}
    broken_models = set(shell.models) - set(model_specs)
    route_specs = [(i, validated(RouteSpec, r, ("routes", i))) for i, r in enumerate(shell.routes)]

    deployments: dict[str, Deployment] = {}
    for model_id, m in model_specs.items():
        at = ("models", model_id)
        api_key = None
        if m.api_key is not None:
            if not _ENV_ONLY.match(m.api_key):
                issues.append(issue(at + ("api_key",), "must be an environment reference like ${OPENAI_API_KEY}, "
                                    "never a literal key"))
            else:
                value = _expand(m.api_key, env, issues, lambda msg, at=at: issue(at + ("api_key",), msg))
                api_key = Secret(value) if value else None
        api_base = _expand(m.api_base, env, issues, lambda msg, at=at: issue(at + ("api_base",), msg)) if m.api_base else None
        if api_base is None and m.provider in OPENAI_COMPATIBLE and m.provider not in ("openai", "azure"):
            issues.append(issue(at + ("api_base",), f"provider {m.provider!r} needs an api_base"))
        if m.provider == "azure" and not m.api_version:
            issues.append(issue(at + ("api_version",), "provider 'azure' needs an api_version"))
        headers = {k: _expand(v, env, issues, lambda msg, k=k, at=at: issue(at + ("headers", k), msg)) or ""
                   for k, v in m.headers.items()}
        pricing = None
        if m.pricing is not None:
            pricing = Pricing(m.pricing.input_per_1m, m.pricing.output_per_1m, m.pricing.cached_input_per_1m)
        deployments[model_id] = Deployment(
            id=model_id,
            tier=m.tier,
            provider=m.provider,
            model=m.model,
            api_base=(api_base or _default_base(m.provider) or "").rstrip("/") or None,
            api_key=api_key,
            api_version=m.api_version,
            base_model=m.base_model,
            pricing=pricing,
            connect_timeout=m.timeout.connect,
            read_timeout=m.timeout.read,
            max_concurrency=m.max_concurrency,
            stream_usage=m.stream_usage,
            headers=headers,
            openai_compatible=m.provider in OPENAI_COMPATIBLE,
            capabilities=_capabilities(m),
        )

    def compile_cond(spec: Any, at: tuple, table: Any) -> Cond:
        problems: list[conditions.Problem] = []
        cond = conditions.compile_condition(spec, table, problems)
        issues.extend(issue(at + sub, msg) for sub, msg in problems)
        return cond

    def resolve(ref: Any, at: tuple, kind: str, origin: str, accept: Cond | None = None) -> tuple[Step, ...]:
        if isinstance(ref, str):
            if ref in broken_models:
                return ()  # already reported where the model is declared
            if ref not in deployments:
                issues.append(issue(at, f"no model {ref!r} in models:{_did_you_mean(ref, deployments, True)}"))
                return ()
            return (Step(deployments[ref], kind, origin, accept),)
        tier = ref.tier
        of_tier = [d for d in deployments.values() if d.tier == tier]
        if not of_tier:
            issues.append(issue(at, f"no model of tier {tier!r} in models:"))
        return tuple(Step(d, kind, f"{origin} (tier {tier})", accept) for d in of_tier)

    routes: list[Route] = []
    seen_names: dict[str, int] = {}
    names: list[str] = []
    fields: set[str] = set()
    for i, r in route_specs:
        if r is None:
            continue
        at = ("routes", i)
        if r.name in seen_names:
            issues.append(issue(at + ("name",), f"route name {r.name!r} is already used by routes[{seen_names[r.name]}]"))
        seen_names.setdefault(r.name, i)
        match = compile_cond(r.match, at + ("match",), conditions.MATCH_FIELDS)
        fields |= match.fields()
        steps: tuple[Step, ...] = ()
        arms: list[Arm] = []
        if r.target is not None:
            steps = resolve(r.target, at + ("target",), "primary", "target")
        elif r.split is not None:
            targets = [a.target if isinstance(a.target, str) else f"tier {a.target.tier}" for a in r.split]
            if len(set(targets)) != len(targets):
                issues.append(issue(at + ("split",), "a split names the same target twice"))
            for j, a in enumerate(r.split):
                arm_steps = resolve(a.target, at + ("split", j, "target"), "primary", f"split[{j}]")
                arms.append(Arm(a.weight, arm_steps))
        else:
            assert r.cascade is not None
            cascade: list[Step] = []
            for j, c in enumerate(r.cascade):
                accept = None
                if c.accept is not None:
                    accept = compile_cond(c.accept, at + ("cascade", j, "accept"), conditions.ACCEPT_FIELDS)
                elif j < len(r.cascade) - 1:
                    issues.append(issue(at + ("cascade", j), "every cascade step but the last needs an `accept:`"))
                cascade.extend(resolve(c.target, at + ("cascade", j, "target"), "cascade", f"cascade[{j}]", accept))
            steps = tuple(cascade)
        fallbacks = tuple(s for j, f in enumerate(r.fallbacks)
                          for s in resolve(f, at + ("fallbacks", j), "fallback", f"fallbacks[{j}]"))
        models = _required_models(match)
        for name in sorted(models or ()):
            if name not in names:
                names.append(name)
        line = yamlpos.line_of(at, positions)
        if arms:
            orders = tuple(_dedupe(arms[k].steps + tuple(st for j, a in enumerate(arms) if j != k for st in a.steps)
                                   + fallbacks) for k in range(len(arms)))
        else:
            orders = (_dedupe(steps + fallbacks),)
        grounding = _merged(GroundingPolicy, shell.settings.grounding, r.grounding)
        if grounding.verifier is not None and grounding.verifier not in deployments:
            where = at + ("grounding", "verifier") if r.grounding and r.grounding.verifier else (
                "settings", "grounding", "verifier")
            issues.append(issue(where, f"no model {grounding.verifier!r} in models:"
                                       f"{_did_you_mean(grounding.verifier, deployments, True)}"))
        routes.append(Route(
            test=match.test, orders=orders, floor=_floor(orders[0]), cache=_merged(CachePolicy, shell.settings.cache, r.cache),
            grounding=grounding,
            name=r.name, index=i, position=f"{source}:{line}", match=match, models=models, action=(
                "target" if r.target is not None else "split" if r.split is not None else "cascade"),
            steps=steps, arms=tuple(arms), total_weight=sum(a.weight for a in arms), sticky=r.sticky,
            fallbacks=fallbacks, max_attempts=r.max_attempts or shell.settings.max_attempts,
        ))

    budgets = []
    for i, b in enumerate(shell.budgets):
        if b.on_exhausted == "downgrade" and not any(f.startswith(f"budget.{b.scope}.") for f in fields):
            issues.append(issue(("budgets", i, "on_exhausted"), f"downgrade needs a route that matches "
                                f"budget.{b.scope}.* (for example budget.{b.scope}.exhausted: true)"))
        ids = None if b.match == "*" else frozenset([b.match] if isinstance(b.match, str) else b.match)
        budgets.append(Budget(b.name or f"{b.scope} budget", b.scope, ids, b.daily_usd, b.monthly_usd,
                              b.on_exhausted))
    rate_limits = [RateLimit(r.scope, None if r.match == "*" else frozenset(
        [r.match] if isinstance(r.match, str) else r.match), r.rpm, r.tpm) for r in shell.rate_limits]

    if issues:
        raise PolicyError(issues)
    by_model = {name: tuple(r for r in routes if r.models is None or name in r.models) for name in names}
    windows = [d.capabilities.context_window for d in deployments.values() if d.capabilities.context_window]
    breaker = shell.settings.circuit_breaker
    return Policy(
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        deployments=deployments,
        routes=tuple(routes),
        model_names=tuple(names),
        settings=Settings(shell.settings.max_attempts, breaker.failures, breaker.cooldown_s,
                          shell.settings.limits_on_store_error),
        budgets=tuple(budgets),
        rate_limits=tuple(rate_limits),
        by_model=by_model,
        generic=tuple(r for r in routes if r.models is None),
        fields=frozenset(fields),
        min_context_window=min(windows) if windows else None,
    )


def _merged(kind: Any, defaults: Any, override: Any) -> Any:
    """A route's settings: the policy-wide defaults, overridden key by key by the route's own."""
    merged = {}
    for spec in (defaults, override):
        if spec is not None:
            merged.update({k: v for k, v in spec.model_dump().items() if v is not None})
    return kind(**merged)


def _dedupe(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    seen: set[str] = set()
    out = []
    for step in steps:
        if step.deployment.id not in seen:
            seen.add(step.deployment.id)
            out.append(step)
    return tuple(out)


def _floor(steps: tuple[Step, ...]) -> CapabilityFloor:
    caps = [s.deployment.capabilities for s in steps]
    windows = [c.context_window for c in caps if c.context_window is not None]
    return CapabilityFloor(
        tools=all(c.tools is not False for c in caps),
        json_mode=all(c.json_mode is not False for c in caps),
        vision=all(c.vision is not False for c in caps),
        context_window=min(windows) if windows else None,
    )


def _required_models(match: Cond) -> frozenset[str] | None:
    """The model names a match requires at its top level (model: x or model: [x, y]), for the index."""
    parts = match.parts if isinstance(match, conditions.AllCond) and not isinstance(match, conditions.AnyCond) \
        else (match,)
    for part in parts:
        if isinstance(part, conditions.FieldCond) and part.name == "model":
            if part.op == "eq" and isinstance(part.value, str):
                return frozenset([part.value])
            if part.op == "in" and all(isinstance(v, str) for v in part.value):
                return frozenset(part.value)
    return None


def _capabilities(m: Any) -> Capabilities:
    c = m.capabilities
    info = model_info.lookup(m.provider, m.model) if None in (c.tools, c.json_mode, c.vision, c.context_window) \
        else None
    info = info or {}

    def pick(explicit: Any, key: str) -> Any:
        return explicit if explicit is not None else info.get(key)

    return Capabilities(
        tools=pick(c.tools, "supports_function_calling"),
        json_mode=pick(c.json_mode, "supports_response_schema"),
        vision=pick(c.vision, "supports_vision"),
        context_window=pick(c.context_window, "max_input_tokens"),
    )


def _expand(value: str | None, env: Mapping[str, str], issues: list[Issue], make_issue) -> str | None:
    if value is None:
        return None

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        issues.append(make_issue(f"environment variable {name} is not set (write ${{{name}:-default}} for a default)"))
        return ""

    return _ENV_REF.sub(sub, value)


def _default_base(provider: str) -> str | None:
    return "https://api.openai.com/v1" if provider == "openai" else None


def _did_you_mean(word: str, options: Any, list_known: bool = False) -> str:
    names = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if list_known and names:
        return " (known: " + ", ".join(sorted(names)[:12]) + ("" if len(names) <= 12 else ", ...") + ")"
    return ""


def _explain(err: dict[str, Any], data: Any, at: tuple = ()) -> str:
    kind = err["type"]
    loc = tuple(at) + tuple(err["loc"])
    if kind == "extra_forbidden":
        key = loc[-1]
        parent: Any = data
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(key, allowed) if allowed else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    return err["msg"]


def _allowed_keys(loc: tuple) -> list[str]:
    from gateway.policy import schema as s

    model: Any = s.PolicySpec
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        if part not in fields:
            # a key of a dict field (models.<id>): the value type is the next model
            continue
        ann = fields[part].annotation
        model = _inner_model(ann)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}).keys())


def _inner_model(ann: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
