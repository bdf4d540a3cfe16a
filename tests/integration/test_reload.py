"""Hot reload: a valid policy swaps in atomically under load; an invalid one is refused and the old one serves."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
from openai import AsyncOpenAI, OpenAI

from support import start_gateway

POLICY = """\
models:
  ok-a: {{ tier: base, provider: vllm, model: fake-a, api_base: "${{FAKE_UPSTREAM}}" }}
  ok-b: {{ tier: fine-tuned, provider: vllm, model: "fake-b@latency=1", api_base: "${{FAKE_UPSTREAM}}" }}
routes:
  - name: live
    match: {{ model: live }}
    target: {target}
"""
MESSAGES = [{"role": "user", "content": "reload me"}]


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # how editors and ConfigMaps replace a file


def test_reload_under_load_fails_no_request(upstream_env, redis_url, redis_prefix, tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(target="ok-a"))
    gw = start_gateway(policy, redis_url, redis_prefix, tmp_path,
                       extra_env={**upstream_env, "GATEWAY_POLICY_POLL_S": "0.1", "GATEWAY_LOG_LEVEL": "info"})
    try:
        key = gw.create_key(team="reload")
        admin = {"authorization": f"Bearer {gw.master_key}"}

        async def load(stop: asyncio.Event, seen: list[str], failures: list[BaseException]) -> None:
            async with AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as c:
                while not stop.is_set():
                    try:
                        raw = await c.chat.completions.with_raw_response.create(model="live", messages=MESSAGES)
                        seen.append(raw.headers["x-gateway-model"])
                    except Exception as exc:  # any failure is a test failure
                        failures.append(exc)

        async def scenario() -> tuple[list[str], list[BaseException]]:
            stop = asyncio.Event()
            seen: list[str] = []
            failures: list[BaseException] = []
            workers = [asyncio.create_task(load(stop, seen, failures)) for _ in range(8)]
            for target, trigger in [("ok-b", "file"), ("ok-a", "sighup"), ("ok-b", "admin"), ("ok-a", "file"),
                                    ("ok-b", "file")]:
                await asyncio.sleep(0.6)
                _write(policy, POLICY.format(target=target))
                if trigger == "sighup":
                    os.kill(gw.proc.pid, signal.SIGHUP)
                elif trigger == "admin":
                    async with httpx.AsyncClient() as h:
                        r = await h.post(gw.url + "/admin/policy/reload", headers=admin)
                        assert r.status_code == 200 and r.json()["result"] in ("applied", "unchanged")
            await asyncio.sleep(0.6)
            stop.set()
            await asyncio.gather(*workers)
            return seen, failures

        seen, failures = asyncio.run(scenario())
        assert failures == [], failures[:3]
        assert len(seen) > 200
        assert set(seen) == {"ok-a", "ok-b"}, "every reload took effect"
        assert seen[-1] == "ok-b"
        changes = sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b)
        assert changes >= 5
        info = httpx.get(gw.url + "/admin/policy", headers=admin).json()
        assert info["last_reload_errors"] == []
        assert "gateway_policy_reloads_total{result=\"applied\"}" in httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()


def test_invalid_reload_keeps_the_old_policy_serving(upstream_env, redis_url, redis_prefix, tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(target="ok-a"))
    gw = start_gateway(policy, redis_url, redis_prefix, tmp_path,
                       extra_env={**upstream_env, "GATEWAY_POLICY_POLL_S": "0.1"})
    try:
        key = gw.create_key(team="reload")
        admin = {"authorization": f"Bearer {gw.master_key}"}
        c = OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
        before = httpx.get(gw.url + "/admin/policy", headers=admin).json()

        _write(policy, POLICY.format(target="ok-z") + "  - { name: broken, target: ok-a, extra: 1 }\n")
        r = httpx.post(gw.url + "/admin/policy/reload", headers=admin)
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "invalid_policy"
        assert f"routes[0].target at {policy}:7: no model 'ok-z' in models:" in err["message"]
        assert f"routes[1].extra at {policy}:8: unknown key 'extra'" in err["message"]

        for _ in range(20):  # the old policy keeps serving, through the watcher's own attempts too
            raw = c.chat.completions.with_raw_response.create(model="live", messages=MESSAGES)
            assert raw.headers["x-gateway-model"] == "ok-a"
            time.sleep(0.02)
        after = httpx.get(gw.url + "/admin/policy", headers=admin).json()
        assert after["sha256"] == before["sha256"] and after["loaded_at"] == before["loaded_at"]
        assert after["last_reload_errors"] and "ok-z" in after["last_reload_errors"][0]
        assert 'gateway_policy_reloads_total{result="rejected"}' in httpx.get(gw.url + "/metrics").text
        os.kill(gw.proc.pid, signal.SIGHUP)  # refused again, and still serving
        assert c.chat.completions.create(model="live", messages=MESSAGES).model == "fake-a"

        _write(policy, POLICY.format(target="ok-b"))  # a fixed file is picked up by the watcher
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if c.chat.completions.with_raw_response.create(model="live", messages=MESSAGES).headers[
                    "x-gateway-model"] == "ok-b":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the fixed policy was never applied")
    finally:
        gw.stop()
    log = gw.log_text()
    assert "policy reload rejected; the previous policy keeps serving" in log
    assert "no model 'ok-z' in models:" in log
