"""POST /v1/grounding/check through the real gateway."""

from __future__ import annotations

import httpx

DOCS = [{"id": "a", "content": "The Eiffel Tower is 330 metres tall and stands in Paris."},
        {"id": "b", "content": "It was completed in 1889 for the World's Fair."}]


def test_grounding_check_endpoint(gateway, api_key: str) -> None:
    r = httpx.post(gateway.base_url + "/grounding/check", headers={"authorization": f"Bearer {api_key}"},
                   json={"response": "The Eiffel Tower in Paris is 330 metres tall. It was completed in 1925.",
                         "documents": DOCS, "question": "How tall is the Eiffel Tower?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounded"] is False and 0 <= body["support_score"] < 0.35
    assert r.headers["x-gateway-grounded"] == "false"
    first, second = body["claims"]
    text = "The Eiffel Tower in Paris is 330 metres tall. It was completed in 1925."
    assert text[first["start"]:first["end"]] == first["text"] and first["supported"] and first["citations"] == ["a"]
    assert not second["supported"] and any("1925" in reason for reason in second["reasons"])


def test_grounding_check_needs_a_key_and_valid_input(gateway, api_key: str) -> None:
    assert httpx.post(gateway.base_url + "/grounding/check", json={"response": "x", "documents": DOCS}).status_code == 401
    bad = httpx.post(gateway.base_url + "/grounding/check", headers={"authorization": f"Bearer {api_key}"},
                     json={"response": "x", "documents": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents"
