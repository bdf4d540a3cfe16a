"""The model verifier: a model from the policy's catalog judges the CPU checker's claims, all of an
answer's claims in one call. Pure: builds the request, reads the verdict, merges it; the pipeline
does the call.

The judge sees the documents and the numbered claims, and answers JSON:
`{"verdicts": [{"claim": 1, "supported": true, "score": 0.9, "citations": ["doc-id"]}, ...]}`.
Its verdict decides each claim it judged (a small distilled verifier is the intended judge); claims
it skipped, and neutral ones (hedges, framing), keep the checker's result.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.grounding.checker import GroundingResult

INSTRUCTIONS = (
    "You check whether claims are supported by documents. For each numbered claim, decide whether "
    "the documents state or directly imply it. Numbers, names, dates and negations must match. "
    'Answer with JSON only: {"verdicts": [{"claim": <number>, "supported": <true|false>, '
    '"score": <0..1 support>, "citations": [<ids of supporting documents>]}]}.'
)
MAX_DOCUMENT_CHARS = 20_000  # per document: the judge's context is finite


def request_body(model: str, result: GroundingResult, documents: list[dict[str, Any]],
                 question: str | None) -> tuple[dict[str, Any], list[int]] | None:
    """The chat completion body asking the judge, and which claims (indexes) it judges; None if no claim
    needs judging."""
    judged = [i for i, c in enumerate(result.claims) if "neutral" not in c.reasons]
    if not judged:
        return None
    docs = "\n\n".join(f"[{d.get('id', i)}] {str(d.get('content', ''))[:MAX_DOCUMENT_CHARS]}"
                       for i, d in enumerate(documents))
    claims = "\n".join(f"CLAIM {n}: {result.claims[i].text}" for n, i in enumerate(judged, 1))
    user = (f"DOCUMENTS:\n{docs}\n\n" + (f"QUESTION: {question}\n\n" if question else "") + f"CLAIMS:\n{claims}")
    body = {"model": model, "temperature": 0, "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]}
    return body, judged


def merge(result: GroundingResult, judged: list[int], answer: str, threshold: float) -> GroundingResult:
    """The checker's result with the judge's verdicts applied. Raises ValueError for an unreadable verdict."""
    try:
        verdicts = orjson.loads(answer).get("verdicts")
    except (orjson.JSONDecodeError, AttributeError):
        raise ValueError("the verifier did not answer with a JSON object") from None
    if not isinstance(verdicts, list):
        raise ValueError("the verifier's answer has no 'verdicts' list")
    for v in verdicts:
        if not isinstance(v, dict) or not isinstance(v.get("claim"), int) or not 1 <= v["claim"] <= len(judged):
            continue
        claim = result.claims[judged[v["claim"] - 1]]
        supported = bool(v.get("supported"))
        score = v.get("score")
        score = float(score) if isinstance(score, (int, float)) and 0 <= score <= 1 else (1.0 if supported else 0.0)
        if supported != (score >= threshold):  # the verdict decides; keep the score consistent with it
            score = threshold if supported else min(score, threshold * 0.99)
        claim.supported, claim.support_score = supported, score
        cites = v.get("citations")
        if isinstance(cites, list) and all(isinstance(c, str) for c in cites):
            claim.citations = cites
        claim.reasons.append("verifier: " + ("supported" if supported else "not supported"))
    return GroundingResult.of(result.claims)
