"""Policy unit tests that ops teams keep beside their policies: `gateway policy test`.

A case file (`<name>.tests.yaml`) names the policy it tests and lists cases: a request, who
sends it, and what must be decided. It is read as strictly as a policy.

    policy: cost-cascade.yaml            # relative to this file
    cases:
      - name: plain chat starts on the distilled tier
        request: { model: auto, messages: [{ role: user, content: hi }] }
        principal: { team: search, user: u1 }   # optional; key too
        headers: { x-priority: high }           # optional
        budget: { team: { remaining_pct: 10 } } # optional: budget facts
        unhealthy: [student-1]                  # optional: models whose circuit is open
        expect:
          route: cost-first
          target: student-1                     # the first model tried
          targets: [student-1, ft-1, base-1]    # optional: the whole order
          skipped: [ft-2]                       # optional: models left out (capability, circuit)
          # or: error: no_route | no_capable_model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.policy import yamlpos
from gateway.policy.engine import decide
from gateway.policy.facts import request_facts
from gateway.policy.loader import Issue, PolicyError, load_policy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Principal(_Strict):
    team: str | None = None
    user: str | None = None
    key: str | None = None


class Expect(_Strict):
    route: str | None = None
    target: str | None = None
    targets: list[str] | None = None
    skipped: list[str] | None = None
    error: Literal["no_route", "no_capable_model"] | None = None


class Case(_Strict):
    name: str
    request: dict[str, Any]
    endpoint: Literal["chat", "completions", "embeddings"] = "chat"
    principal: Principal = Principal()
    headers: dict[str, str] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)
    unhealthy: list[str] = Field(default_factory=list)
    expect: Expect


class CaseFile(_Strict):
    policy: str
    cases: list[Case] = Field(min_length=1)


@dataclass
class Outcome:
    file: str
    case: str
    ok: bool
    detail: str = ""


def run_case_file(path: Path) -> list[Outcome]:
    text = path.read_text(encoding="utf-8")
    try:
        data, positions = yamlpos.parse(text)
        spec = CaseFile.model_validate(data)
    except yamlpos.YamlProblem as exc:
        raise PolicyError([Issue(yamlpos.format_path(exc.path), str(path), exc.line, exc.message)]) from None
    except ValidationError as exc:
        raise PolicyError([Issue(yamlpos.format_path(tuple(e["loc"])), str(path),
                                 yamlpos.line_of(tuple(e["loc"]), positions), e["msg"])
                           for e in exc.errors()]) from None
    policy = load_policy(path.parent / spec.policy)
    out: list[Outcome] = []
    for case in spec.cases:
        out.append(_run(policy, case, str(path)))
    return out


def _run(policy: Any, case: Case, file: str) -> Outcome:
    body = dict(case.request)
    facts = request_facts(body, policy, endpoint=case.endpoint, key=case.principal.key, team=case.principal.team,
                          user=case.principal.user, headers=case.headers, budget=case.budget)
    plan = decide(facts, policy, frozenset(case.unhealthy), trace=True)
    e = case.expect
    problems: list[str] = []
    if plan is None:
        if e.error != "no_route":
            problems.append("no route matched")
    elif e.error == "no_route":
        problems.append(f"expected no route, got route {plan.route!r}")
    else:
        got = [s.deployment.id for s in plan.steps]
        if e.error == "no_capable_model" and got:
            problems.append(f"expected no capable model, got {got}")
        if e.route is not None and plan.route != e.route:
            problems.append(f"route is {plan.route!r}, expected {e.route!r}")
        if e.target is not None and (got[:1] != [e.target]):
            problems.append(f"first target is {got[0] if got else None!r}, expected {e.target!r}")
        if e.targets is not None and got != e.targets:
            problems.append(f"targets are {got}, expected {e.targets}")
        if e.skipped is not None and [m for m, _ in plan.skipped] != e.skipped:
            problems.append(f"skipped {[m for m, _ in plan.skipped]}, expected {e.skipped}")
        if problems:
            problems.extend("  " + t for t in plan.trail)
    return Outcome(file, case.name, not problems, "\n".join(problems))
