"""What the gateway does with a grounding result, per the route's `grounding.action`.

    annotate  attach the result to the answer as a `grounding` object (the default)
    cite      also put citation markers [n] after supported sentences, with a sources list
    flag      headers and metrics only; the body is left as it came
    block     replace an ungrounded answer with an OpenAI-shaped refusal that says why (not streams)
    escalate  in a cascade, an ungrounded answer goes to the next target before anyone sees it;
              the answer finally returned is annotated
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.grounding.checker import GroundingResult

ACTIONS = ("annotate", "cite", "flag", "block", "escalate")
_STRICTNESS = {"flag": 0, "annotate": 1, "cite": 1, "escalate": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class GroundingRequest:
    documents: list[dict[str, Any]]
    question: str | None
    action: str
    threshold: float
    verifier: str | None = None  # a deployment id: a model that judges the claims too


def grounding_request(body: dict[str, Any], action: str = "annotate", threshold: float = 0.35,
                      tool_messages: bool = False, verifier: str | None = None) -> GroundingRequest | None:
    """The documents to check against, and how: None when the request brings none (then no check runs)."""
    ext = body.get("grounding") if isinstance(body.get("grounding"), dict) else {}
    documents = [dict(d, id=str(d.get("id", i))) for i, d in enumerate(ext.get("documents") or [])
                 if isinstance(d, dict) and isinstance(d.get("content"), str)]
    messages = body.get("messages") or []
    if tool_messages:
        for i, m in enumerate(messages):
            if isinstance(m, dict) and m.get("role") == "tool" and isinstance(m.get("content"), str):
                documents.append({"id": str(m.get("tool_call_id") or f"tool-{i}"), "content": m["content"]})
    if not documents:
        return None
    route_action = action
    asked = ext.get("action")
    # a request may choose its action, but never a weaker one than a blocking route's
    if asked in ACTIONS and not (route_action == "block" and _STRICTNESS[asked] < _STRICTNESS["block"]):
        action = asked
    asked_threshold = ext.get("threshold")
    if isinstance(asked_threshold, (int, float)) and 0 <= asked_threshold <= 1:
        threshold = asked_threshold
    question = next((m.get("content") for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"
                     and isinstance(m.get("content"), str)), None)
    return GroundingRequest(documents, question, action, float(threshold), verifier)


def answer_text(completion: dict[str, Any]) -> str:
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def apply(completion: dict[str, Any], result: GroundingResult, g: GroundingRequest) -> None:
    """Change the answer in place as the action says."""
    if g.action == "flag":
        return
    report = result.to_dict()
    if g.action == "block" and not result.grounded:
        weakest = min(result.claims, key=lambda c: c.support_score, default=None)
        why = f" The weakest claim: \"{weakest.text[:200]}\"." if weakest is not None else ""
        refusal = (f"This answer was withheld: it is not supported by the documents provided (support "
                   f"{result.support_score:.2f}, below the required {g.threshold:.2f}).{why}")
        for choice in completion.get("choices") or []:
            choice["message"] = {"role": "assistant", "content": None, "refusal": refusal}
            choice["finish_reason"] = "content_filter"
        report["blocked"] = True
    elif g.action == "cite":
        cite(completion, result, g.documents)
    completion["grounding"] = report


def cite(completion: dict[str, Any], result: GroundingResult, documents: list[dict[str, Any]]) -> None:
    choices = completion.get("choices") or []
    if not choices or not isinstance(choices[0].get("message"), dict):
        return
    text = answer_text(completion)
    order: list[str] = []
    for claim in result.claims:
        for doc in claim.citations:
            if doc not in order:
                order.append(doc)
    if not order:
        return
    number = {doc: i + 1 for i, doc in enumerate(order)}
    for claim in sorted((c for c in result.claims if c.supported and c.citations), key=lambda c: c.end,
                        reverse=True):
        marks = "".join(f"[{number[d]}]" for d in claim.citations)
        text = text[:claim.end] + " " + marks + text[claim.end:]
    by_id = {str(d.get("id")): d for d in documents}
    lines = []
    for doc in order:
        d = by_id.get(doc, {})
        label = d.get("title") or doc
        lines.append(f"[{number[doc]}] {label}" + (f" ({d['url']})" if d.get("url") else ""))
    choices[0]["message"]["content"] = text + "\n\nSources:\n" + "\n".join(lines)
