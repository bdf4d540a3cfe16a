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

from gateway.policy import yamlpos
from gateway.catalog import Deployment, Pricing
from gateway.policy.model import Policy, Route
from gateway.policy.schema import OPENAI_COMPATIBLE, PolicySpec
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
        self.issues = issues
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
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([issue(tuple(e["loc"]), _explain(e, data)) for e in exc.errors()]) from None

    issues: list[Issue] = []
    deployments: dict[str, Deployment] = {}
    for model_id, m in spec.models.items():
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
        )

    routes: list[Route] = []
    seen_names: dict[str, int] = {}
    by_model: dict[str, int] = {}
    names: list[str] = []
    for i, r in enumerate(spec.routes):
        at = ("routes", i)
        if r.name in seen_names:
            issues.append(issue(at + ("name",), f"route name {r.name!r} is already used by routes[{seen_names[r.name]}]"))
        seen_names.setdefault(r.name, i)
        targets = []
        for path, ref in [(at + ("target",), r.target)] + [(at + ("fallbacks", j), f) for j, f in enumerate(r.fallbacks)]:
            if ref not in deployments:
                issues.append(issue(path, f"no model {ref!r} in models:{_did_you_mean(ref, deployments, True)}"))
            else:
                targets.append(deployments[ref])
        models = None
        if r.match.model is not None:
            models = frozenset([r.match.model] if isinstance(r.match.model, str) else r.match.model)
            for name in sorted(models):
                by_model.setdefault(name, i)
                if name not in names:
                    names.append(name)
        line = yamlpos.line_of(at, positions)
        routes.append(Route(r.name, i, f"{source}:{line}", models, tuple(targets)))

    if issues:
        raise PolicyError(issues)
    return Policy(
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        deployments=deployments,
        routes=tuple(routes),
        model_names=tuple(names),
        by_model=by_model,
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


def _explain(err: dict[str, Any], data: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
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
