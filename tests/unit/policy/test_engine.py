"""The decision function, table-driven: no servers, no I/O, thousands of cases in well under a second."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.policy import RequestFacts, decide, load_policy_text

POLICY_TEXT = """\
settings: { max_attempts: 4 }
models:
  base-a: { tier: base, provider: vllm, model: a, api_base: "http://x/v1",
            capabilities: { tools: true, json_mode: true, vision: true, context_window: 128000 } }
  base-b: { tier: base, provider: vllm, model: b, api_base: "http://x/v1" }
  ft-v1: { tier: fine-tuned, provider: vllm, model: ft1, api_base: "http://x/v1",
           capabilities: { tools: false, context_window: 8192 } }
  ft-v2: { tier: fine-tuned, provider: vllm, model: ft2, api_base: "http://x/v1",
           capabilities: { tools: false, context_window: 8192 } }
  student: { tier: distilled, provider: vllm, model: s, api_base: "http://x/v1",
             capabilities: { tools: false, json_mode: false, vision: false, context_window: 4096 } }
routes:
  - name: bots-blocked-to-student
    match: { user: { regex: "^bot-" } }
    target: student
  - name: vip-header
    match: { headers.x-priority: [high, urgent], model: [chat, auto] }
    target: base-a
  - name: prod-metadata
    match: { metadata.env: prod, model: auto }
    target: { tier: fine-tuned }
    fallbacks: [base-a]
  - name: budget-low
    match: { team: [search, ads], budget.team.remaining_pct: { lt: 20 } }
    target: { tier: distilled }
  - name: long-prompts
    match: { prompt_tokens: { gt: 3000 }, model: [chat, auto] }
    target: base-a
  - name: tools-or-json
    match: { any: [ { tools: true }, { json_mode: true } ], model: auto }
    target: base-a
  - name: canary
    match: { model: support }
    split: [ { target: ft-v2, weight: 10 }, { target: ft-v1, weight: 90 } ]
    fallbacks: [base-a]
  - name: canary-by-key
    match: { model: support-k }
    sticky: key
    split: [ { target: ft-v2, weight: 50 }, { target: ft-v1, weight: 50 } ]
  - name: cost-first
    match: { model: auto, not: { stream: true } }
    cascade:
      - { target: student, accept: { finish_reason: stop, non_empty: true } }
      - { target: ft-v1, accept: { support_score: { gte: 0.7 } } }
      - { target: base-a }
    fallbacks: [base-b]
  - name: auto-stream
    match: { model: auto }
    target: student
    fallbacks: [ft-v1, base-a]
  - name: embeddings
    match: { endpoint: embeddings }
    target: base-b
  - name: default
    match: { model: { regex: "^(chat|gpt-.*)$" } }
    target: base-b
"""
POLICY = load_policy_text(POLICY_TEXT, "p.yaml", {})


def line_of(route: str) -> int:
    lines = POLICY_TEXT.splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip() == f"- name: {route}")


def ids(plan) -> list[str]:
    return [s.deployment.id for s in plan.steps]


CASES = [
    # (description, facts, expected route, expected targets in order)
    ("regex on user wins first", dict(model="auto", user="bot-7"), "bots-blocked-to-student", ["student"]),
    ("header list match", dict(model="chat", headers={"x-priority": "urgent"}), "vip-header", ["base-a"]),
    ("header other value", dict(model="chat", headers={"x-priority": "low"}), "default", ["base-b"]),
    ("metadata + tier target expands in catalog order", dict(model="auto", metadata={"env": "prod"}),
     "prod-metadata", ["ft-v1", "ft-v2", "base-a"]),
    ("budget fact downgrades a team", dict(model="chat", team="search",
                                           budget={"team": {"remaining_pct": 12.5}}), "budget-low", ["student"]),
    ("budget fine", dict(model="chat", team="search", budget={"team": {"remaining_pct": 80}}), "default", ["base-b"]),
    ("budget absent never matches lt", dict(model="chat", team="search"), "default", ["base-b"]),
    ("prompt size", dict(model="chat", prompt_tokens=5000), "long-prompts", ["base-a"]),
    ("prompt size below", dict(model="chat", prompt_tokens=100), "default", ["base-b"]),
    ("any: tools", dict(model="auto", tools=True), "tools-or-json", ["base-a"]),
    ("any: json", dict(model="auto", json_mode=True), "tools-or-json", ["base-a"]),
    ("cascade then fallbacks", dict(model="auto"), "cost-first", ["student", "ft-v1", "base-a", "base-b"]),
    ("not: stream goes elsewhere", dict(model="auto", stream=True), "auto-stream", ["student", "ft-v1", "base-a"]),
    ("endpoint", dict(model="whatever", endpoint="embeddings"), "embeddings", ["base-b"]),
    ("regex on model", dict(model="gpt-4o"), "default", ["base-b"]),
]


@pytest.mark.parametrize("what,facts,route,targets", CASES, ids=[c[0] for c in CASES])
def test_routing_table(what: str, facts: dict, route: str, targets: list[str]) -> None:
    plan = decide(RequestFacts(**facts), POLICY)
    assert plan is not None, what
    assert (plan.route, ids(plan)) == (route, targets), what
    traced = decide(RequestFacts(**facts), POLICY, trace=True)
    assert (traced.route, ids(traced)) == (route, targets), "the index never changes which route wins"


def test_no_route_is_none() -> None:
    assert decide(RequestFacts(model="unknown-model"), POLICY) is None


def test_trail_says_why_each_earlier_route_did_not_match() -> None:
    plan = decide(RequestFacts(model="chat", user="alice", headers={"x-priority": "low"}), POLICY, trace=True)
    assert plan.route == "default" and plan.position == f"p.yaml:{line_of('default')}"
    bots, vip, prod = line_of("bots-blocked-to-student"), line_of("vip-header"), line_of("prod-metadata")
    assert plan.trail[0] == f"bots-blocked-to-student (p.yaml:{bots}): user is 'alice', not matching '^bot-'"
    assert plan.trail[1] == f"vip-header (p.yaml:{vip}): headers.x-priority is 'low', not one of ['high', 'urgent']"
    assert plan.trail[2].startswith(f"prod-metadata (p.yaml:{prod}): metadata.env is absent")
    assert len(plan.trail) == 11


@pytest.mark.parametrize("facts,skipped,targets", [
    (dict(model="auto", metadata={"env": "prod"}, tools=True), [("ft-v1", "does not support tools"),
                                                                ("ft-v2", "does not support tools")], ["base-a"]),
    (dict(model="auto", metadata={"env": "prod"}, prompt_tokens=6000, max_tokens=4000),
     [("ft-v1", "context window 8192 is smaller than the 10000 tokens needed"),
      ("ft-v2", "context window 8192 is smaller than the 10000 tokens needed")], ["base-a"]),
    (dict(model="auto", user="bot-1", json_mode=True), [("student", "does not support JSON mode")], []),
    (dict(model="auto", user="bot-1", vision=True), [("student", "does not support images")], []),
])
def test_capability_skips(facts: dict, skipped: list, targets: list[str]) -> None:
    plan = decide(RequestFacts(**facts), POLICY)
    assert list(plan.skipped) == skipped
    assert ids(plan) == targets


def test_unknown_capability_is_not_a_reason_to_skip() -> None:
    plan = decide(RequestFacts(model="gpt-4o", tools=True, json_mode=True, vision=True, prompt_tokens=10**6), POLICY)
    assert ids(plan) == ["base-b"]  # base-b declares nothing, so nothing rules it out


def test_open_circuits_are_skipped_unless_nothing_else_is_left() -> None:
    plan = decide(RequestFacts(model="auto"), POLICY, unhealthy=frozenset({"student", "ft-v1"}))
    assert ids(plan) == ["base-a", "base-b"]
    assert ("student", "circuit open") in plan.skipped
    every = frozenset(POLICY.deployments)
    assert ids(decide(RequestFacts(model="auto"), POLICY, unhealthy=every)) == ["student", "ft-v1", "base-a", "base-b"]


def test_split_proportions_and_stickiness() -> None:
    arms = Counter()
    for i in range(10_000):
        plan = decide(RequestFacts(model="support", user=f"user-{i}"), POLICY)
        arms[ids(plan)[0]] += 1
        assert ids(plan)[1:] == (["ft-v1", "base-a"] if ids(plan)[0] == "ft-v2" else ["ft-v2", "base-a"])
    assert 0.085 < arms["ft-v2"] / 10_000 < 0.115
    for i in range(200):
        first = ids(decide(RequestFacts(model="support", user=f"u{i}", key="k1"), POLICY))[0]
        for key in ("k2", "k3"):
            assert ids(decide(RequestFacts(model="support", user=f"u{i}", key=key), POLICY))[0] == first


def test_split_sticky_by_key() -> None:
    seen = {ids(decide(RequestFacts(model="support-k", key="key-1", user=f"u{i}"), POLICY))[0] for i in range(50)}
    assert len(seen) == 1
    arms = Counter(ids(decide(RequestFacts(model="support-k", key=f"key-{i}"), POLICY))[0] for i in range(2000))
    assert 0.45 < arms["ft-v2"] / 2000 < 0.55


def test_cascade_steps_carry_accept_conditions() -> None:
    plan = decide(RequestFacts(model="auto"), POLICY)
    kinds = [(s.deployment.id, s.kind, s.accept is not None) for s in plan.steps]
    assert kinds == [("student", "cascade", True), ("ft-v1", "cascade", True), ("base-a", "cascade", False),
                     ("base-b", "fallback", False)]
    assert plan.max_attempts == 4


def test_model_names_and_index() -> None:
    assert set(POLICY.model_names) == {"chat", "auto", "support", "support-k"}
    assert POLICY.needs_prompt_tokens and POLICY.needs_budget
