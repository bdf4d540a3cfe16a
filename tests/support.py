"""Real processes for tests: the fake upstream and the gateway, on free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class FakeUpstream:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_fake/stats").json()

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(self.url + "/_fake/requests").json()

    def last_request(self) -> dict[str, Any]:
        return self.requests()[-1]

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_fake_upstream() -> FakeUpstream:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "fake-upstream", "--port", str(port)], cwd=ROOT)
    fake = FakeUpstream(port, proc)
    wait_http(fake.url + "/health", proc=proc)
    return fake


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen
    log_path: Path
    master_key: str
    env: dict[str, str]
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def create_key(self, team: str = "team-a", user: str | None = None, **extra: Any) -> str:
        r = httpx.post(self.url + "/admin/keys", json={"team": team, "user": user, **extra},
                       headers={"authorization": f"Bearer {self.master_key}"})
        r.raise_for_status()
        key = r.json()["key"]
        self.keys.append(key)
        return key

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(policy: Path, redis_url: str | None, prefix: str, tmp: Path, *,
                  extra_env: dict[str, str] | None = None, master_key: str = "sk-master-test-0123456789") -> Gateway:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_POLICY": str(policy),
        "GATEWAY_PORT": str(port),
        "GATEWAY_REDIS_PREFIX": prefix,
        "GATEWAY_MASTER_KEY": master_key,
        "GATEWAY_DATA_DIR": str(tmp / "data"),
        "GATEWAY_LOG_LEVEL": "debug",
    })
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"gateway-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    gw = Gateway(port, proc, log_path, master_key, env)
    try:
        wait_http(gw.url + "/healthz", timeout=30, proc=proc)
    except Exception:
        gw.stop()
        raise RuntimeError("gateway did not start:\n" + log_path.read_text(errors="replace")) from None
    return gw


@lru_cache(maxsize=1)
def _schemas() -> dict[str, Any]:
    return json.loads((ROOT / "tests" / "data" / "openai_schemas.json").read_text())


def assert_openai_shape(obj: Any, name: str) -> None:
    """Validate `obj` against OpenAI's own JSON Schema for `name` (e.g. CreateChatCompletionResponse)."""
    bundle = _schemas()
    schema = {"$schema": bundle["$schema"], "$ref": f"#/$defs/{name}", "$defs": bundle["$defs"]}
    jsonschema.Draft202012Validator(schema).validate(obj)


def sse_chat(base_url: str, key: str, body: dict[str, Any]) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    """Stream a chat completion; check it ends with [DONE] and every chunk has OpenAI's shape."""
    with httpx.stream("POST", base_url + "/chat/completions", json={**body, "stream": True},
                      headers={"authorization": f"Bearer {key}"}, timeout=30) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        headers = r.headers
    assert events and events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_openai_shape(chunk, "CreateChatCompletionStreamResponse")
    return headers, chunks


def module_gateway(policy_file: str, log_level: str = "warning"):
    """A module-scoped fixture: a gateway on tests/policies/<policy_file>, stopped after the module."""
    import pytest

    @pytest.fixture(scope="module")
    def fixture(redis_url, redis_prefix, upstream_env, tmp_path_factory):
        gw = start_gateway(ROOT / "tests" / "policies" / policy_file, redis_url, redis_prefix,
                           tmp_path_factory.mktemp(policy_file.split(".")[0]),
                           extra_env={**upstream_env, "GATEWAY_LOG_LEVEL": log_level})
        yield gw
        gw.stop()

    return fixture
