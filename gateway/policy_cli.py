"""`gateway policy explain` and `gateway policy test`: the policy engine from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.policy import PolicyError, decide, load_policy
from gateway.policy.cases import run_case_file
from gateway.policy.engine import why_no_route
from gateway.policy.facts import request_facts


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"gateway: {what} wants NAME=VALUE, got {item!r}")
        out[k] = v
    return out


def explain(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"gateway: the policy {args.policy} is invalid:\n" + "\n".join(f"  {i}" for i in exc.issues),
              file=sys.stderr)
        return 2
    raw = sys.stdin.read() if args.request == "-" else Path(args.request).read_text()
    body = json.loads(raw)
    budget: dict[str, Any] = {}
    for path, value in _pairs(args.budget, "--budget").items():
        scope, _, name = path.partition(".")
        budget.setdefault(scope, {})[name] = float(value) if value.replace(".", "", 1).isdigit() else value
    facts = request_facts(body, policy, endpoint=args.endpoint, key=args.key, team=args.team, user=args.user,
                          headers=_pairs(args.header, "--header"), budget=budget)
    plan = decide(facts, policy, frozenset(args.unhealthy), trace=True)
    if args.json:
        print(json.dumps(None if plan is None else {
            "route": plan.route, "position": plan.position, "action": plan.action, "arm": plan.arm,
            "max_attempts": plan.max_attempts,
            "steps": [{"model": s.deployment.id, "tier": s.deployment.tier, "kind": s.kind, "origin": s.origin,
                       "accept": s.accept is not None} for s in plan.steps],
            "skipped": [{"model": m, "reason": r} for m, r in plan.skipped],
            "trail": list(plan.trail)}, indent=2))
        return 0 if plan else 1
    if plan is None:
        print(f"no route matches model {facts.model!r}: the gateway answers 404 model_not_found")
        for line in why_no_route(facts, policy):
            print(f"  {line}")
        return 1
    print(f"route     {plan.route}  ({plan.position})")
    print(f"action    {plan.action}" + (f", arm {plan.arm}" if plan.arm is not None else ""))
    print(f"attempts  at most {plan.max_attempts}")
    print("tries, in order:")
    for n, s in enumerate(plan.steps, 1):
        accept = "  (must pass accept:)" if s.accept is not None else ""
        print(f"  {n}. {s.deployment.id:<24} {s.deployment.tier:<11} {s.kind:<9} from {s.origin}{accept}")
    if not plan.steps:
        print("  (none: the gateway answers 400 no_capable_model)")
    for m, why in plan.skipped:
        print(f"  skipped {m}: {why}")
    if plan.trail:
        print("earlier routes that did not match:")
        for line in plan.trail:
            print(f"  {line}")
    return 0


def run_tests(paths: list[str]) -> int:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.tests.yaml")) if p.is_dir() else [p])
    if not files:
        print("gateway: no *.tests.yaml files found", file=sys.stderr)
        return 1
    passed = failed = 0
    for f in files:
        try:
            outcomes = run_case_file(f)
        except PolicyError as exc:
            failed += 1
            print(f"ERROR {f}:\n" + "\n".join(f"  {i}" for i in exc.issues))
            continue
        for o in outcomes:
            if o.ok:
                passed += 1
                print(f"ok    {f}: {o.case}")
            else:
                failed += 1
                print(f"FAIL  {f}: {o.case}\n" + "\n".join(f"      {line}" for line in o.detail.splitlines()))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1
