"""Project-level promises: the import layers hold, shipped policies are valid, the README's commands exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


SHIPPED = sorted(p for p in (ROOT / "policies").rglob("*.yaml") if not p.name.endswith(".tests.yaml"))


@pytest.mark.parametrize("policy", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_policies_pass_check(policy: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "VLLM_API_KEY": "x",
           "AZURE_OPENAI_API_KEY": "x"}
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "check", str(policy)], cwd=ROOT,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_policy_check_fails_on_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: { tier: base, model: x, provider: vllm }\nroutes:\n  - { name: r, target: n }\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "check", str(bad)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"routes[0].target at {bad}:4: no model 'n' in models:" in result.stderr
    assert f"models.m.api_base at {bad}:2: provider 'vllm' needs an api_base" in result.stderr


def test_policy_schema_is_json_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "policy", "schema"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    schema = json.loads(out)
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_readme_states_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[:3000]
    assert "make run" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_ruff_finds_nothing() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "gateway", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_policies_pass_their_own_policy_tests() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "test", "policies"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout and "FAIL" not in result.stdout
    # every shipped policy has a case file beside it (providers.yaml only shows declarations)
    tested = {p.name.replace(".tests.yaml", ".yaml") for p in (ROOT / "policies").rglob("*.tests.yaml")}
    assert {p.name for p in SHIPPED} - tested == {"providers.yaml"}


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text((ROOT / "policies" / "demo.yaml").read_text())
    (tmp_path / "p.tests.yaml").write_text(
        "policy: p.yaml\ncases:\n  - name: wrong\n    request: { model: auto, messages: [] }\n"
        "    expect: { target: demo-base }\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "test", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "first target is 'demo-distilled', expected 'demo-base'" in result.stdout
    (tmp_path / "p.tests.yaml").write_text("policy: p.yaml\ncases:\n  - name: x\n    reqest: {}\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "test", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "cases[0].reqest at" in result.stdout


def test_policy_explain_prints_plan_and_trail(tmp_path: Path) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"model": "support", "messages": [{"role": "user", "content": "hi"}]}))
    result = subprocess.run([sys.executable, "-m", "gateway", "policy", "explain", "--policy",
                             "policies/examples/canary.yaml", "--request", str(req), "--user", "user-12"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "route     support-canary  (policies/examples/canary.yaml:" in result.stdout
    assert "1. support-v2" in result.stdout
    assert "canary-testers (policies/examples/canary.yaml:" in result.stdout
    assert "metadata.canary is absent, not 'true'" in result.stdout
    as_json = subprocess.run([sys.executable, "-m", "gateway", "policy", "explain", "--policy",
                              "policies/examples/canary.yaml", "--request", str(req), "--user", "user-12", "--json"],
                             cwd=ROOT, capture_output=True, text=True)
    plan = json.loads(as_json.stdout)
    assert plan["action"] == "split" and plan["arm"] == 1
    assert [s["model"] for s in plan["steps"]] == ["support-v2", "support-v1", "base"]
