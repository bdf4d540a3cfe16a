"""A client that goes away makes the gateway cancel its upstream request."""

from __future__ import annotations

import time

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "tell me a long story"}]


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_mid_stream_cancels_upstream(gateway, api_key: str, fake_upstream) -> None:
    before = fake_upstream.stats()
    body = {"model": "gpt-test", "messages": MESSAGES, "stream": True,
            "fake_options": {"tps": 20, "words": 200}}  # ten seconds of answer if nobody stops it
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body,
                      headers={"authorization": f"Bearer {api_key}"}, timeout=10) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen == 3:
                break
    # closing the response closed the connection: the upstream must see its request cancelled, soon
    assert _wait_for(lambda: fake_upstream.stats()["cancelled"] > before["cancelled"], timeout=3.0)
    assert fake_upstream.stats()["completed"] == before["completed"]
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'gateway_client_disconnects_total{endpoint="chat"}' in metrics


def test_client_timeout_on_non_streaming_cancels_upstream(gateway, api_key: str, fake_upstream) -> None:
    before = fake_upstream.stats()["cancelled"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.base_url + "/chat/completions", timeout=0.5,
                   headers={"authorization": f"Bearer {api_key}"},
                   json={"model": "gpt-test", "messages": MESSAGES, "fake_options": {"latency": 5000}})
    assert _wait_for(lambda: fake_upstream.stats()["cancelled"] > before, timeout=3.0)
    assert _wait_for(lambda: '"status":499' in gateway.log_text(), timeout=3.0)
