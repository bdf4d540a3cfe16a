"""The strict loader: every problem reported as `key.path at file:line: message`, nothing half-loaded."""

from __future__ import annotations

import textwrap

import pytest

from gateway.policy import PolicyError, load_policy, load_policy_text
from gateway.redact import Secret

GOOD = """\
version: 1
models:
  m1:
    tier: base
    provider: openai-compatible
    model: up-1
    api_base: ${UP:-http://127.0.0.1:1/v1}
    api_key: ${UP_KEY}
  m2:
    tier: distilled
    provider: vllm
    model: up-2
    api_base: http://127.0.0.1:2/v1
    pricing: { input_per_1m: 0.1, output_per_1m: 0.2 }
routes:
  - name: first
    match: { model: [a, b] }
    target: m1
    fallbacks: [m2]
  - name: catch-all
    target: m2
"""


def issues(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(textwrap.dedent(text), "policies/x.yaml", env or {})
    return [str(i) for i in info.value.issues]


def test_good_policy_loads_with_positions_and_env() -> None:
    policy = load_policy_text(GOOD, "policies/x.yaml", {"UP_KEY": "sk-live-abcdef"})
    assert [r.name for r in policy.routes] == ["first", "catch-all"]
    assert policy.routes[0].position == "policies/x.yaml:16"
    assert policy.routes[1].position == "policies/x.yaml:20"
    m1 = policy.deployments["m1"]
    assert m1.api_base == "http://127.0.0.1:1/v1"
    assert isinstance(m1.api_key, Secret) and m1.api_key.reveal() == "sk-live-abcdef"
    assert "sk-live" not in repr(m1)
    assert [s.deployment.id for s in policy.routes[0].steps + policy.routes[0].fallbacks] == ["m1", "m2"]
    assert policy.model_names == ("a", "b")
    assert str(policy.deployments["m2"].pricing.input_per_1m) == "0.1"


def test_unknown_key_names_path_file_line_and_suggests() -> None:
    text = GOOD.replace("    match: { model: [a, b] }", "    match: { model: [a, b], teem: x }")
    assert issues(text, {"UP_KEY": "k"}) == ["routes[0].match.teem at policies/x.yaml:17: unknown field 'teem' (did you mean 'team'?)"]
    text = GOOD.replace("    tier: distilled", "    tier: distilled\n    modle: x")
    assert issues(text, {"UP_KEY": "k"}) == [
        "models.m2.modle at policies/x.yaml:11: unknown key 'modle' (did you mean 'model'?)"]


def test_bad_reference_and_every_error_is_reported() -> None:
    assert "did you mean 'm2'" in issues(GOOD.replace("target: m2", "target: m22"), {"UP_KEY": "k"})[0]
    text = GOOD.replace("    target: m1", "    target: m3").replace("fallbacks: [m2]", "fallbacks: [m2, m9]")
    found = issues(text, {"UP_KEY": "k"})
    assert "routes[0].target at policies/x.yaml:18: no model 'm3' in models: (known: m1, m2)" in found
    assert any(i.startswith("routes[0].fallbacks[1] at policies/x.yaml:19: no model 'm9'") for i in found)


def test_type_errors_and_bad_values() -> None:
    text = GOOD.replace("tier: distilled", "tier: cheap").replace("input_per_1m: 0.1", "input_per_1m: -1")
    found = issues(text, {"UP_KEY": "k"})
    assert any(i.startswith("models.m2.tier at policies/x.yaml:10:") for i in found)
    assert any(i.startswith("models.m2.pricing.input_per_1m at policies/x.yaml:14:") for i in found)


def test_missing_env_var_is_an_error() -> None:
    assert issues(GOOD) == ["models.m1.api_key at policies/x.yaml:8: environment variable UP_KEY is not set "
                            "(write ${UP_KEY:-default} for a default)"]


def test_literal_api_key_is_refused() -> None:
    text = GOOD.replace("api_key: ${UP_KEY}", "api_key: sk-live-123456")
    found = issues(text)
    assert found == ["models.m1.api_key at policies/x.yaml:8: must be an environment reference like "
                     "${OPENAI_API_KEY}, never a literal key"]
    assert "sk-live-123456" not in " ".join(found)


def test_duplicate_keys_and_route_names() -> None:
    assert issues("version: 1\nversion: 1\n") == ["version at policies/x.yaml:2: duplicate key 'version'"]
    text = GOOD.replace("name: catch-all", "name: first")
    assert issues(text, {"UP_KEY": "k"}) == [
        "routes[1].name at policies/x.yaml:20: route name 'first' is already used by routes[0]"]


def test_not_yaml_and_not_a_mapping() -> None:
    assert issues("models: [unclosed\n")[0].startswith("(top level) at policies/x.yaml:")
    assert issues("- a\n- b\n") == ["(top level) at policies/x.yaml:1: a policy is a mapping with `models:` and `routes:`"]
    assert issues("version: 1\n") [0].startswith("models at policies/x.yaml:1: required key is missing")


def test_provider_requirements() -> None:
    text = GOOD.replace("    api_base: http://127.0.0.1:2/v1\n", "")
    assert issues(text, {"UP_KEY": "k"}) == ["models.m2.api_base at policies/x.yaml:9: provider 'vllm' needs an api_base"]


def test_load_policy_from_missing_file() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("/nonexistent/policy.yaml")
    assert "cannot read" in str(info.value)


ROUTES_BASE = """\
models:
  a: { tier: base, provider: vllm, model: a, api_base: "http://x/v1" }
  b: { tier: distilled, provider: vllm, model: b, api_base: "http://x/v1" }
routes:
"""


@pytest.mark.parametrize("route,expected", [
    ("  - { name: r, target: a, split: [{target: a, weight: 1}, {target: b, weight: 1}] }",
     "routes[0] at policies/x.yaml:5: Value error, a route needs exactly one of target, split, cascade (has target, split)"),
    ("  - { name: r }",
     "routes[0] at policies/x.yaml:5: Value error, a route needs exactly one of target, split, cascade"),
    ("  - { name: r, cascade: [{target: b}, {target: a}] }",
     "routes[0].cascade[0] at policies/x.yaml:5: every cascade step but the last needs an `accept:`"),
    ("  - { name: r, match: { team: { regx: x } }, target: a }",
     "routes[0].match.team.regx at policies/x.yaml:5: unknown operator 'regx' (did you mean 'regex'?)"),
    ("  - { name: r, match: { user: { regex: '(' } }, target: a }",
     "routes[0].match.user.regex at policies/x.yaml:5: bad regex: missing ), unterminated subpattern at position 0"),
    ("  - { name: r, match: { prompt_tokens: { gt: lots } }, target: a }",
     "routes[0].match.prompt_tokens.gt at policies/x.yaml:5: `gt` compares numbers; got 'lots'"),
    ("  - { name: r, target: { tier: fine-tuned } }",
     "routes[0].target at policies/x.yaml:5: no model of tier 'fine-tuned' in models:"),
    ("  - { name: r, split: [{target: a, weight: 1}, {target: a, weight: 2}] }",
     "routes[0].split at policies/x.yaml:5: a split names the same target twice"),
    ("  - { name: r, split: [{target: a, weight: 0}, {target: b, weight: 2}] }",
     "routes[0].split[0].weight at policies/x.yaml:5: Input should be greater than 0"),
    ("  - { name: r, cascade: [{target: b, accept: {score: 1}}, {target: a}] }",
     "routes[0].cascade[0].accept.score at policies/x.yaml:5: unknown field 'score' (fields: finish_reason, "
     "non_empty, valid_json, completion_tokens, support_score, grounded)"),
    ("  - { name: r, match: { any: [] }, target: a }",
     "routes[0].match.any at policies/x.yaml:5: `any` takes a non-empty list of conditions"),
])
def test_route_language_errors(route: str, expected: str) -> None:
    assert issues(ROUTES_BASE + route + "\n") == [expected]


def test_nested_condition_error_points_at_its_own_line() -> None:
    text = ROUTES_BASE + "  - name: r\n    match:\n      any:\n        - team: a\n        - usr: b\n    target: a\n"
    assert issues(text) == ["routes[0].match.any[1].usr at policies/x.yaml:9: unknown field 'usr' (did you mean 'user'?)"]
