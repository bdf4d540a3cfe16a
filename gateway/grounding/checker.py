"""The default grounding checker: CPU only, no model, milliseconds per answer.

For each claim (a sentence or list item of the answer) it finds the passages of the documents
that best support it and scores that support in [0, 1]:

  coverage   the IDF-weighted share of the claim's content words found in its best passage (a
             window of consecutive document sentences), or, a little discounted, across all the
             documents together (a claim can combine facts from two documents);
  numbers    every number, date or amount in the claim must appear in the documents; each one
             that does not costs most of the score;
  names      capitalised names the documents never mention cost heavily;
  negation   a claim that negates what its best passage affirms (or the reverse) loses half.

Claims that only hedge ("I don't know", "the passages do not say") or restate the question are
neutral: they cannot be hallucinations. The answer is grounded when every claim's score reaches
the threshold; its support score is the weakest claim's.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.grounding import text as T

# Conversation around the answer rather than claims in it: greetings, offers, headers, framing.
META = re.compile(
    r"^(sure|certainly|of course|great|hello|hi)\b|\bi hope (this|that) helps|\blet me know\b|"
    r"\b(feel free|happy to help|hope this)\b|^passage \d+\s*[:(]|^(document|source|passage|answer|summary)\s*\d*\s*:?$|"
    r"^(here (is|are)|below (is|are)|the following)\b.{0,80}:$|\bsummary of the (news|article|passages?|text)\b|"
    r"\b(i can|i will|i'll) (answer|help|summari[sz]e|provide)\b|^in (summary|conclusion),?$|^(overall|therefore),?$",
    re.I)
HEDGES = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|say|determine|find)|(is|are) not (mentioned|provided|specified|stated)|"
    r"(does|do) not (mention|provide|specify|say|state|contain|include)|no (information|mention|details?) "
    r"(is|are|was|about|on|of|regarding)|not enough information|unable to (determine|find|answer)|"
    r"based on the (provided|given) (passages?|documents?|information|context)|according to the (passages?|documents?)|"
    r"unable to (answer|provide|determine)|(does|do|did) not (provide|give|offer|include) (enough |any |specific |"
    r"sufficient )?(information|details|data)|not enough (information|details|context)|(provides?|contains?|gives?|has) "
    r"(the |all the )?(necessary|relevant|required|needed|sufficient|enough) information)",
    re.I)
# Advice and recommendations ("it's important to ...", "consult a professional"): guidance to the
# reader, not a claim about the world the documents could back or contradict.
ADVICE = re.compile(
    r"^(\w+, )?(it'?s|it is) (always )?(important|crucial|essential|recommended|advisable|a good idea|best) to\b|"
    r"\b(consult|seek (advice|guidance|help) from|talk to|speak (to|with)) (a|an|your|further|additional|"
    r"other|more) ", re.I)
# A claim followed by its own admission that the sources do not hold it.
ADMITTED = re.compile(
    r"[(\[,;-]\s*(but |though |although |this is )?(not|isn'?t|is not) (explicitly |directly |specifically )?"
    r"(mentioned|stated|provided|found|covered|included) in the (given |provided )?(passages?|documents?|"
    r"context|sources?|text)\s*[)\]]?", re.I)
# The words hedges are made of: a hedge built only from these (and the documents' words) asserts nothing.
HEDGE_WORDS = frozenset(T.content_tokens(
    "unable answer answering question questions based given provided passage passages document documents "
    "information enough sufficient therefore however unfortunately entirety specific details detailed "
    "context able determine find found mention mentioned provide necessary additional needed need text "
    "source sources sure clear explicitly directly fully complete completely relevant regarding"))
LIST_MARKER = re.compile(r"^\(?(\d{1,3}|[a-z])[.)]?$")
# How answers talk about their sources: not claims about the world, so not checked as such.
SOURCE_REFS = re.compile(
    r"\(?\b(as )?(mentioned|stated|described|noted|shown|indicated|explained|listed) (in|by) (the )?"
    r"(passages?|documents?|sources?|context)( \d+((,| and| &) ?\d+)*)?\)?|"
    r"\(?\b(passages?|documents?|sources?) \d+((,| and| &) ?\d+)*\)?|"
    r"^(based on|according to|from) (the )?(given |provided |above )?(passages?|documents?|information|context|"
    r"sources?)( \d+)?,?\s*",
    re.I)


@dataclass(slots=True)
class ClaimResult:
    text: str
    start: int
    end: int
    supported: bool
    support_score: float
    citations: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    coverage: float = 1.0  # how much of the claim's wording the documents hold, before any penalty

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end, "supported": self.supported,
                "support_score": round(self.support_score, 4), "citations": self.citations,
                "reasons": self.reasons}


@dataclass(slots=True)
class GroundingResult:
    grounded: bool
    support_score: float
    claims: list[ClaimResult]

    @classmethod
    def of(cls, claims: list[ClaimResult]) -> "GroundingResult":
        """Grounded when every claim is supported; the score is the weakest judged (not neutral) claim's."""
        judged = [c for c in claims if "neutral" not in c.reasons]
        return cls(all(c.supported for c in claims), min((c.support_score for c in judged), default=1.0), claims)

    def to_dict(self) -> dict[str, Any]:
        return {"grounded": self.grounded, "support_score": round(self.support_score, 4),
                "claims": [c.to_dict() for c in self.claims]}


@dataclass(slots=True)
class _Index:
    """One check's view of its documents: built per call, never kept on the (shared) checker."""

    passages: list["_Passage"]
    tokens: set[str]  # every answer word the documents hold
    numbers: set[str]
    names: set[str]
    attributes: list[tuple[frozenset[str], frozenset[str], bool]]
    idf: dict[str, float]
    postings: dict[str, list[int]]  # word -> the passages holding it


@dataclass(slots=True)
class _Passage:
    doc: str
    text: str
    tokens: frozenset[str]
    single: bool  # one sentence (used for the polarity check) or a window of several


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a document yields whatever the answer: its sentences, their tokens, its numbers and words."""

    sentences: tuple[str, ...]
    tokens: tuple[frozenset[str], ...]
    numbers: frozenset[str]
    words: frozenset[str]  # every word, lower-cased (names are looked up here)
    attributes: tuple[tuple[frozenset[str], frozenset[str], bool], ...]  # "Outdoor seating: no"


_PREPARED: OrderedDict[str, _Prepared] = OrderedDict()
_PREPARED_LOCK = threading.Lock()
_PREPARED_MAX = 512  # documents; the same ones come back across cascade steps, turns and agent loops


def _prepare(content: str) -> _Prepared:
    """Per-document work, kept in a small LRU shared by every check (immutable values, keyed by the text)."""
    with _PREPARED_LOCK:  # large checks run in worker threads
        hit = _PREPARED.get(content)
        if hit is not None:
            _PREPARED.move_to_end(content)
            return hit
    sentences = tuple(T.sentences(content)) or (content,)
    raw: set[str] = set()  # every word as written, filled by the tokenising pass
    tokens = tuple(T.token_set(s, raw) for s in sentences)
    words = frozenset(w.lower() for w in raw if not w[0].isdigit())
    plain = words.union(*(re.split(r"[-']", w) for w in words if "-" in w or "'" in w))  # "twenty-one"
    prepared = _Prepared(sentences, tokens, frozenset(T.numbers(content, plain)), words,
                         tuple(T.attributes(content)) if ":" in content else ())
    with _PREPARED_LOCK:
        _PREPARED[content] = prepared
        if len(_PREPARED) > _PREPARED_MAX:
            _PREPARED.popitem(last=False)
    return prepared


class Checker:
    def __init__(self, threshold: float = 0.35, window: int = 1, floor: float = 0.25) -> None:
        self.threshold = threshold
        self.window = window
        self.floor = floor

    def check(self, response: str, documents: list[dict[str, Any]], question: str | None = None,
              threshold: float | None = None) -> GroundingResult:
        threshold = self.threshold if threshold is None else threshold
        spans = T.split_claims(response)
        vocab = {t for span in spans for t in T.content_tokens(span.text)}
        index = self._index(documents, vocab)
        question_tokens = set(T.content_tokens(question or ""))
        if question:  # what the user said is given too: "tallahassee florida" in the question
            index.names |= {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'\-]*", question)}
            index.numbers |= T.numbers(question)
        claims = [self._claim(span, index, question_tokens, threshold) for span in spans]
        return GroundingResult.of(claims)

    def _index(self, documents: list[dict[str, Any]], vocab: set[str]) -> _Index:
        """Passages of the documents, keeping only the words the answer uses: nothing else is ever looked up."""
        passages: list[_Passage] = []
        df: Counter[str] = Counter()
        all_tokens: set[str] = set()
        all_numbers: set[str] = set()
        all_names: set[str] = set()
        attributes: list[tuple[frozenset[str], frozenset[str], bool]] = []
        for doc in documents:
            prepared = _prepare(str(doc.get("content", "")))
            doc_id = str(doc.get("id", ""))
            sentences = prepared.sentences
            token_sets = [tokens & vocab for tokens in prepared.tokens]
            for i, tokens in enumerate(token_sets):
                passages.append(_Passage(doc_id, sentences[i], tokens, True))
                df.update(tokens)
                all_tokens |= tokens
                for size in range(2, self.window + 1):
                    if i + size <= len(sentences):
                        window = frozenset().union(*token_sets[i:i + size])
                        passages.append(_Passage(doc_id, " ".join(sentences[i:i + size]), window, False))
            all_numbers |= prepared.numbers
            all_names |= prepared.words
            attributes += prepared.attributes
        n = max(1, len(passages))
        idf = {t: math.log(1 + n / (1 + c)) for t, c in df.items()}
        postings: dict[str, list[int]] = {}
        for i, p in enumerate(passages):
            for t in p.tokens:
                postings.setdefault(t, []).append(i)
        return _Index(passages, all_tokens, all_numbers, all_names, attributes, idf, postings)

    def _claim(self, span: T.Span, index: _Index, question_tokens: set[str], threshold: float) -> ClaimResult:
        passages, doc_tokens, idf, postings = index.passages, index.tokens, index.idf, index.postings
        claim = SOURCE_REFS.sub(" ", span.text).strip()  # "(Passage 2)", "Based on the passages, ..."
        claim_tokens = T.content_tokens(claim)
        unique = set(claim_tokens)
        stripped = span.text.strip()
        # introduces what follows: short, or made only of the question and talk about the sources
        lead_in = stripped.endswith(":") and (len(stripped.split()) <= 16
                                              or len(unique - question_tokens - HEDGE_WORDS) <= 2)
        list_marker = bool(LIST_MARKER.match(stripped))
        if ADMITTED.search(span.text) and not HEDGES.search(ADMITTED.sub(" ", span.text)):
            # a claim that says itself the documents do not back it: "... (not mentioned in the passages)"
            return ClaimResult(span.text, span.start, span.end, False, 0.0, [],
                               ["says itself the documents do not state it"], 0.0)
        if not unique or lead_in or list_marker or META.search(stripped) or ADVICE.search(stripped) or (
                HEDGES.search(span.text) and len(unique - doc_tokens - HEDGE_WORDS) <= 2):
            return ClaimResult(span.text, span.start, span.end, True, 1.0, [], ["neutral"])
        restates = bool(question_tokens) and unique <= question_tokens | {"answer", "question"}
        default_idf = math.log(1 + len(passages) + 1)
        weight = {t: idf.get(t, default_idf) for t in unique}
        total = sum(weight.values()) or 1.0
        # Score only passages that share one of the claim's rarer words (an inverted index, not a scan): a
        # passage holding only the claim's most common words cannot cover much of its IDF weight anyway.
        cap = max(40, len(passages) // 10)
        rare = [t for t in weight if 0 < len(postings.get(t, ())) <= cap]
        candidates: set[int] = set()
        for t in rare or weight:
            candidates.update(postings.get(t, ()))
        best, best_cov, sentence, sentence_cov = None, 0.0, None, 0.0
        held: dict[int, float] = dict.fromkeys(candidates, 0.0)  # the claim's weight each candidate holds
        for t, w in weight.items():
            for i in postings.get(t, ()):
                if i in held:
                    held[i] += w
        for i, w in held.items():
            p = passages[i]
            cov = w / total
            if cov > best_cov:
                best, best_cov = p, cov
            if p.single and cov > sentence_cov:
                sentence, sentence_cov = p, cov
        # what the best passage leaves out may come from another document (text split across documents)
        second, joint_cov = None, best_cov
        if best is not None and best_cov < 1.0:
            rest = {t: w for t, w in weight.items() if t not in best.tokens}
            gains: dict[int, float] = {}
            for t, w in rest.items():
                if len(postings.get(t, ())) > cap and len(rest) > 1:
                    continue  # common words alone never make a second citation
                for i in postings.get(t, ()):
                    if passages[i] is not best:
                        gains[i] = gains.get(i, 0.0) + w
            top = max(gains, key=gains.__getitem__, default=None)
            gain, second = (gains[top], passages[top]) if top is not None else (0.0, None)
            if second is not None and gain > 0:
                joint_cov = best_cov + gain / total
            else:
                second = None
        union_cov = sum(w for t, w in weight.items() if t in doc_tokens) / total
        coverage = max(joint_cov, 0.9 * union_cov)
        # Missing wording is weak evidence (paraphrase); a number, name or negation the documents
        # contradict is strong. So coverage moves the score between floor and 1, and penalties multiply.
        score = self.floor + (1 - self.floor) * coverage
        reasons: list[str] = []
        missing_numbers = T.numbers(claim) - index.numbers
        if missing_numbers:
            score *= 0.25 ** len(missing_numbers)
            reasons.append("numbers not in the documents: " + ", ".join(sorted(missing_numbers)))
        against = T.contradicted(claim, index.attributes)
        if against:
            score *= 0.25 ** len(against)
            reasons.append("contradicts the documents' attributes: " + "; ".join(against))
        missing_names = {n for n in T.names(claim) if n not in index.names}
        if missing_names:
            score *= 0.5 ** len(missing_names)
            reasons.append("names not in the documents: " + ", ".join(sorted(missing_names)))
        if sentence is not None and sentence_cov >= 0.7 and T.negated(claim) != T.negated(sentence.text):
            # the claim mirrors one passage closely but flips its polarity: "was" against "was not"
            score *= 0.5
            reasons.append("negation differs from the best passage")
        citations = []
        if best is not None and best_cov > 0:
            citations.append(best.doc)
            if second is not None and joint_cov >= best_cov + 0.1 and second.doc not in citations:
                citations.append(second.doc)
        score = max(0.0, min(1.0, score))
        if restates and score < threshold:  # only repeats the question: nothing asserted, nothing invented
            return ClaimResult(span.text, span.start, span.end, True, 1.0, [], ["neutral", "restates the question"])
        return ClaimResult(span.text, span.start, span.end, score >= threshold, score, citations, reasons, coverage)
