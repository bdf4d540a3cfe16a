"""Every error status the gateway gives, in OpenAI's error shape and the SDK's exception classes."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai import OpenAI

from support import assert_openai_shape

MESSAGES = [{"role": "user", "content": "hello"}]


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert_openai_shape(body, "ErrorResponse")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    return body["error"]


def _post(gateway, api_key: str | None, body=None, content: bytes | None = None, path="/chat/completions",
          headers: dict | None = None) -> httpx.Response:
    h = dict(headers or {})
    if api_key:
        h["authorization"] = f"Bearer {api_key}"
    if content is not None:
        return httpx.post(gateway.base_url + path, headers=h, content=content, timeout=30)
    return httpx.post(gateway.base_url + path, headers=h, json=body, timeout=30)


def test_401_missing_key(gateway) -> None:
    err = _error(_post(gateway, None, {"model": "gpt-test", "messages": MESSAGES}), 401)
    assert err["code"] == "missing_api_key"  # (the SDK refuses to send an empty key itself)
    r = _post(gateway, None, {"model": "gpt-test", "messages": MESSAGES}, headers={"authorization": "Basic"})
    _error(r, 401)


@pytest.mark.parametrize("bad", ["nonsense", "sk-gw-000000000000_" + "x" * 43, "sk-gw-short_x"])
def test_401_bad_key(gateway, bad: str) -> None:
    err = _error(_post(gateway, bad, {"model": "gpt-test", "messages": MESSAGES}), 401)
    assert err["code"] == "invalid_api_key"
    assert bad not in err["message"]
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=gateway.base_url, api_key=bad, max_retries=0).models.list()


def test_401_wrong_secret_for_real_key_id(gateway, api_key: str) -> None:
    key_id = api_key.split("_")[0]
    forged = key_id + "_" + "A" * 43
    _error(_post(gateway, forged, {"model": "gpt-test", "messages": MESSAGES}), 401)


def test_401_revoked_key(gateway) -> None:
    key = gateway.create_key(team="team-r")
    assert _post(gateway, key, {"model": "gpt-test", "messages": MESSAGES}).status_code == 200
    key_id = key[len("sk-gw-"):].split("_")[0]
    r = httpx.delete(f"{gateway.url}/admin/keys/{key_id}", headers={"authorization": f"Bearer {gateway.master_key}"})
    assert r.status_code == 200
    time.sleep(0.3)  # the test gateway caches key records for 0.2 s
    err = _error(_post(gateway, key, {"model": "gpt-test", "messages": MESSAGES}), 401)
    assert err["code"] == "revoked_api_key"


def test_404_unknown_model(client: OpenAI, gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, {"model": "no-such-model", "messages": MESSAGES}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_404_unknown_url_in_openai_shape(gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, {}, path="/no/such/path"), 404)
    assert err["code"] == "unknown_url"


def test_400_malformed_json(gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, content=b'{"model": "gpt-test", "messages": ['), 400)
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
    _error(_post(gateway, api_key, content=b"[1, 2]"), 400)
    _error(_post(gateway, api_key, content=b""), 400)


@pytest.mark.parametrize("body,param", [
    ({"messages": MESSAGES}, "model"),
    ({"model": "gpt-test"}, "messages"),
    ({"model": "gpt-test", "messages": []}, "messages"),
    ({"model": "gpt-test", "messages": [{"content": "no role"}]}, "messages[0]"),
    ({"model": 42, "messages": MESSAGES}, "model"),
    ({"model": "gpt-test", "messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"model": "gpt-test", "messages": MESSAGES, "n": 0}, "n"),
])
def test_400_missing_or_invalid_fields(gateway, api_key: str, body: dict, param: str) -> None:
    err = _error(_post(gateway, api_key, body), 400)
    assert err["param"] == param


def test_400_via_sdk_is_bad_request_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-test", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-test", input="x", encoding_format="hex")  # type: ignore[arg-type]


def test_413_body_too_large(gateway, api_key: str, client: OpenAI) -> None:
    big = [{"role": "user", "content": "x" * (300 * 1024)}]
    err = _error(_post(gateway, api_key, {"model": "gpt-test", "messages": big}), 413)
    assert err["code"] == "request_too_large"
    # also when the client streams the body without a Content-Length
    def chunks():
        yield b'{"model": "gpt-test", "messages": [{"role": "user", "content": "'
        for _ in range(300):
            yield b"y" * 1024
        yield b'"}]}'
    r = httpx.post(gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {api_key}"},
                   content=chunks())
    _error(r, 413)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-test", messages=big)
    assert info.value.status_code == 413


def test_429_from_upstream_carries_retry_after(gateway, api_key: str, client: OpenAI) -> None:
    body = {"model": "gpt-test", "messages": MESSAGES, "fake_options": {"status": 429, "retry_after": 3}}
    r = _post(gateway, api_key, body)
    err = _error(r, 429)
    assert err["code"] == "upstream_rate_limited"
    assert r.headers["retry-after"] == "3"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                       extra_body={"fake_options": {"status": 429}})


def test_429_retry_after_is_honoured_by_sdk_retries(gateway, api_key: str) -> None:
    c = OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=1)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                  extra_body={"fake_options": {"status": 429, "retry_after": 1}})
    assert time.monotonic() - started >= 0.9, "the SDK waited for Retry-After before its retry"


def test_502_when_upstream_fails(gateway, api_key: str, client: OpenAI) -> None:
    err = _error(_post(gateway, api_key, {"model": "doomed", "messages": MESSAGES}), 502)
    assert err["code"] == "upstream_error"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                       extra_body={"fake_options": {"status": 503}})
    assert info.value.status_code == 502


def test_502_on_malformed_upstream_json(gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, {"model": "gpt-test", "messages": MESSAGES,
                                          "fake_options": {"malformed": 1}}), 502)
    assert err["code"] == "upstream_malformed_response"


def test_502_when_upstream_drops_the_connection(gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, {"model": "gpt-test", "messages": MESSAGES,
                                          "fake_options": {"disconnect_after": 0}}), 502)
    assert err["type"] == "api_error"


def test_504_on_upstream_timeout(gateway, api_key: str, client: OpenAI) -> None:
    started = time.monotonic()
    err = _error(_post(gateway, api_key, {"model": "impatient", "messages": MESSAGES, "fake_options": {"hang": 1}}), 504)
    assert err["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="impatient", messages=MESSAGES, extra_body={"fake_options": {"hang": 1}})
    assert info.value.status_code == 504


def test_upstream_4xx_passes_through(gateway, api_key: str) -> None:
    err = _error(_post(gateway, api_key, {"model": "gpt-test", "messages": MESSAGES,
                                          "fake_options": {"status": 400}}), 400)
    assert "fake upstream error 400" in err["message"]


def test_mid_stream_upstream_failure_reaches_sdk_as_error(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                            extra_body={"fake_options": {"disconnect_after": 3}})
    received = 0
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            received += 1
    assert received == 3
    assert "broke off" in str(info.value.message)


def test_mid_stream_malformed_event_reaches_sdk_as_error(client: OpenAI) -> None:
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                            extra_body={"fake_options": {"malformed": 1}}))


def test_stream_that_fails_before_first_byte_is_a_proper_http_error(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="doomed", messages=MESSAGES, stream=True)
    assert info.value.status_code == 502


def test_405_wrong_method(gateway, api_key: str) -> None:
    r = httpx.get(gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {api_key}"})
    err = _error(r, 405)
    assert err["code"] == "method_not_allowed"
