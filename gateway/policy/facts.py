"""Request facts from a request body, the caller's principal and headers: what `match:` reads.

Pure and shared: the pipeline builds facts with it for every request, and `gateway policy
explain` and `gateway policy test` build them the same way from a saved request. Expensive facts
(prompt tokens, headers, metadata) are gathered only when the policy reads them.
"""

from __future__ import annotations

from typing import Any, Mapping

from gateway import tokens
from gateway.policy.engine import RequestFacts
from gateway.policy.model import Policy

ENDPOINT_KIND = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}
_JSON_FORMATS = ("json_object", "json_schema")
METADATA_HEADER = "x-gateway-metadata-"


def request_facts(body: dict[str, Any], policy: Policy, *, endpoint: str = "chat", key: str | None = None,
                  team: str | None = None, user: str | None = None, headers: Mapping[str, str] | None = None,
                  budget: dict[str, Any] | None = None) -> RequestFacts:
    wanted = policy.fields
    fmt = body.get("response_format")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    max_tokens = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
    prompt_tokens = None
    if policy.needs_prompt_tokens or (
            policy.min_context_window is not None
            and tokens.prompt_chars(body) + (max_tokens or 0) > policy.min_context_window):
        prompt_tokens = tokens.count_request(body, str(body.get("model", "")))
    lowered: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    if headers and any(f.startswith(("headers.", "metadata.")) for f in wanted):
        lowered = {k.lower(): v for k, v in headers.items()}
    if any(f.startswith("metadata.") for f in wanted):
        meta = body.get("metadata")
        metadata = dict(meta) if isinstance(meta, dict) else {}
        for k, v in lowered.items():
            if k.startswith(METADATA_HEADER):
                metadata.setdefault(k[len(METADATA_HEADER):], v)
    grounding = body.get("grounding")
    body_user = body.get("user")
    return RequestFacts(
        model=str(body.get("model", "")),
        endpoint=ENDPOINT_KIND.get(endpoint, endpoint),
        key=key,
        team=team,
        user=user or (body_user if isinstance(body_user, str) else None),
        stream=bool(body.get("stream")),
        tools=bool(body.get("tools")),
        documents=bool(isinstance(grounding, dict) and grounding.get("documents")),
        json_mode=isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS,
        vision=_has_images(body),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        headers=lowered,
        metadata=metadata,
        budget=budget or {},
    )


def _has_images(body: dict[str, Any]) -> bool:
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            return True
    return False
