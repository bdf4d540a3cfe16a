"""The decision function, table-driven: no servers, no I/O."""

from __future__ import annotations

import pytest

from gateway.policy import RequestFacts, decide, load_policy_text

POLICY = load_policy_text("""\
models:
  a: { tier: base, provider: vllm, model: a, api_base: "http://x/v1" }
  b: { tier: fine-tuned, provider: vllm, model: b, api_base: "http://x/v1" }
  c: { tier: distilled, provider: vllm, model: c, api_base: "http://x/v1" }
routes:
  - { name: one, match: { model: gpt-4o }, target: a }
  - { name: two, match: { model: [small, tiny] }, target: c, fallbacks: [b, a] }
  - { name: shadowed, match: { model: small }, target: a }
""", "p.yaml", {})

WITH_DEFAULT = load_policy_text("""\
models:
  a: { tier: base, provider: vllm, model: a, api_base: "http://x/v1" }
routes:
  - { name: exact, match: { model: x }, target: a }
  - { name: default, target: a }
""", "d.yaml", {})


@pytest.mark.parametrize("model,route,targets,trail", [
    ("gpt-4o", "one", ["a"], 0),
    ("small", "two", ["c", "b", "a"], 1),
    ("tiny", "two", ["c", "b", "a"], 1),
])
def test_first_matching_route_wins(model: str, route: str, targets: list[str], trail: int) -> None:
    plan = decide(RequestFacts(model=model), POLICY)
    assert plan is not None
    assert plan.route == route
    assert [t.id for t in plan.targets] == targets
    assert len(plan.trail) == trail


def test_no_match_is_none() -> None:
    assert decide(RequestFacts(model="unknown"), POLICY) is None


def test_trail_explains_earlier_rules() -> None:
    plan = decide(RequestFacts(model="tiny"), POLICY)
    assert plan.trail == ("one (p.yaml:6): model 'tiny' is not model in gpt-4o",)
    assert plan.position == "p.yaml:7"


def test_route_without_match_takes_everything() -> None:
    assert decide(RequestFacts(model="x"), WITH_DEFAULT).route == "exact"
    assert decide(RequestFacts(model="anything"), WITH_DEFAULT).route == "default"
    assert WITH_DEFAULT.model_names == ("x",)
