"""Text handling for the grounding checker: claims with offsets, tokens, numbers, names, negations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

STOPWORDS = frozenset("""a an the and or but if then else of to in on at by for with from as is are was were be been
being this that these those it its it's he she they them their his her we our you your i me my do does did done
has have had having will would can could should may might must shall so such than too very also into about over
under after before between during while which who whom whose what when where why how all any both each few more
most other some only own same just there here out up down off again further once because until against through
per via s t""".split())
NEGATIONS = frozenset("not no never none nor neither cannot without n't nothing nobody nowhere".split())
NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                "thirteen": "13", "fourteen": "14", "fifteen": "15", "twenty": "20", "thirty": "30",
                "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000",
                "billion": "1000000000", "half": "0.5"}  # not ordinals: "first, check..." states no number

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,:]\d+)*")
_ALNUM = re.compile(r"[^\W_]")
# A full stop after these is not the end of a sentence: "Rep. Smith", "George W. Bush", "Apr. 18".
ABBREVIATIONS = """Mr Mrs Ms Dr Prof Rep Sen Gov Gen Col Lt Sgt Capt Cmdr St Jr Sr Mt Ft Ave Blvd Jan Feb Mar Apr
Jun Jul Aug Sep Sept Oct Nov Dec Mon Tue Tues Wed Thu Thurs Fri Sat Sun No Nos vs etc Inc Corp Co Ltd Dept Univ
approx Fig""".split()
_ABBREVIATED = frozenset(a.lower() for a in ABBREVIATIONS)  # "Sat.", "Apr.": dates and titles, not names
_NOT_AFTER = "".join(rf"(?<!\b{a}\.)" for a in ABBREVIATIONS) + r"(?<!\b[A-Z]\.)"
_CLAIM_END = re.compile(r"(?<=[.!?])" + _NOT_AFTER + r"[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9*\-•])|\n+")


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    start: int
    end: int


def split_claims(text: str) -> list[Span]:
    """Sentences and list items, with character offsets into `text`; markup and blank lines dropped."""
    spans: list[Span] = []
    pos = 0
    for m in _CLAIM_END.finditer(text):
        _add(text, pos, m.start(), spans)
        pos = m.end()
    _add(text, pos, len(text), spans)
    return spans


def sentences(text: str) -> list[str]:
    """The texts `split_claims` would give, without offsets: the cheap form for documents."""
    out: list[str] = []
    for part in _CLAIM_END.split(text):
        body = _unmarked(part).rstrip()
        if len(body) >= 3 and _ALNUM.search(body):
            out.append(body)
    return out


def _unmarked(text: str) -> str:
    """`text` without its leading whitespace and list or quote markup, in any order."""
    while True:
        trimmed = text.lstrip().lstrip("*-•#>")
        if trimmed == text:
            return text
        text = trimmed


def _add(text: str, start: int, end: int, out: list[Span]) -> None:
    segment = text[start:end]
    body = _unmarked(segment)
    start += len(segment) - len(body)
    body = body.rstrip()
    if len(body) >= 3 and _ALNUM.search(body):
        out.append(Span(body, start, start + len(body)))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    w = word.lower().strip("'-")
    if w in NUMBER_WORDS:
        return NUMBER_WORDS[w]
    for suffix in ("ingly", "edly", "ings", "ing", "ness", "ment", "ies", "ied", "es", "ed", "ly", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return w


def _bare(word: str) -> str:
    if word.endswith("'s"):
        return word[:-2]
    return word[:-1] if word.endswith("'") else word


_TOKEN_OF: dict[str, str] = {}  # raw word -> its token ("" for a stopword): one lookup per word of text


def _token(word: str) -> str:
    w = _bare(word)
    if not w or (w.lower() in STOPWORDS or len(w) <= 1) and not w.isdigit():
        return ""
    return stem(w)


def content_tokens(text: str) -> list[str]:
    out = []
    cache = _TOKEN_OF
    for w in _WORD.findall(text):
        t = cache.get(w)
        if t is None:
            if len(cache) > 500_000:
                cache.clear()
            t = cache[w] = _token(w)
        if t:
            out.append(t)
    return out


def token_set(text: str, seen: set[str] | None = None) -> frozenset[str]:
    """The distinct content tokens of `text` (a document sentence): the per-word work done in C where it can be.
    `seen`, if given, collects the words as written."""
    cache = _TOKEN_OF
    words = _WORD.findall(text)
    if seen is not None:
        seen.update(words)
    try:
        out = frozenset(map(cache.__getitem__, words))
    except KeyError:
        if len(cache) > 500_000:
            cache.clear()
        for w in words:
            if w not in cache:
                cache[w] = _token(w)
        out = frozenset(map(cache.__getitem__, words))
    return out - _EMPTY


_EMPTY = frozenset({""})
_LOWER_WORD = re.compile(r"[a-z]+")  # one cheap pass; an alternation of ~30 words is tried at every position
_NUMBER_WORD_NAMES = frozenset(NUMBER_WORDS)
_TIME = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\s*(?:[ap]\.?m\.?)?", re.I)


_DIGITS = re.compile(r"\d[\d,]*(?:\.\d+)?%?")


def numbers(text: str, words: frozenset[str] | set[str] | None = None) -> set[str]:
    """Numbers, amounts and years, normalised (1,000 -> 1000; $5 -> 5; 12% -> 12). Clock times are
    left to the word overlap: "4:00 pm" and "16:00" are the same time written two ways. `words`, the
    text's lower-cased words if the caller has them, saves a pass looking for number words."""
    if ":" in text:
        text = _TIME.sub(" ", text)
    out = set()
    for m in _DIGITS.finditer(text):  # a plain scan for digits; what may precede them is checked here
        start = m.start()
        first = start
        if first and text[first - 1] == "$":
            first -= 1
        if first and text[first - 1] in "+-":
            first -= 1
        for begin in range(first, start + 1):  # the earliest start not glued to a word or a decimal point
            before = text[begin - 1] if begin else " "
            if not (before.isalnum() or before in "_."):
                break
        else:
            continue
        n = text[begin:m.end()].replace(",", "").replace("$", "").lstrip("+").rstrip("%")
        if n.endswith(".0"):
            n = n[:-2]
        if n and n != "-":
            out.add(n)
    if words is None:
        words = set(_LOWER_WORD.findall(text.lower()))
    for w in _NUMBER_WORD_NAMES.intersection(words):
        out.add(NUMBER_WORDS[w])
    return out


# Capitalised, but units rather than names: "79 degrees Fahrenheit" names nobody.
UNITS = frozenset("fahrenheit celsius kelvin".split())


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of a sentence: a cheap stand-in for named entities."""
    out = set()
    for sentence in re.split(r"(?<=[.!?:])\s+|\n", text):
        words = _WORD.findall(sentence)
        for w in words[1:]:
            w = re.sub(r"'s?$", "", w)
            low = w.lower()
            if w[:1].isupper() and low not in STOPWORDS and len(w) > 2 and not w.isupper() \
                    and low not in UNITS and low not in _ABBREVIATED:
                out.add(w.lower())
    return out


def negated(text: str) -> bool:
    low = text.lower()
    return any(n in low.split() for n in NEGATIONS) or "n't" in low


# -- attribute records ("Outdoor seating: no", "Parking: garage: no, street: yes") ----------------------

_NO_VALUES = frozenset({"no", "false", "none"})
_YES_VALUES = frozenset({"yes", "true", "free", "paid"})
_ATTR_LINE = re.compile(r"^\s*[-*•]?\s*([A-Za-z][A-Za-z ()/'-]{1,40}):\s*(.+?)\s*$")
_ATTR_PAIR = re.compile(r"([A-Za-z][A-Za-z ()/'-]{1,30}):\s*([A-Za-z0-9 .'/-]+?)\s*(?:,|$)")
_CLAUSE_BREAK = frozenset({"but", "while", "although", "though", "however", "whereas", "yet"})
_NEGATORS = frozenset({"no", "not", "never", "without", "neither", "nor", "none", "lacks", "lack", "cannot"})
# (and any word ending in n't: "doesn't", "isn't", "won't")


def attributes(text: str) -> list[tuple[frozenset[str], frozenset[str], bool]]:
    """Yes/no attributes of a record: (the attribute's tokens, its parent's tokens, its value)."""
    out = []
    for line in text.splitlines():
        m = _ATTR_LINE.match(line)
        if m is None:
            continue
        key, rest = m.group(1), m.group(2)
        if ":" in rest:  # nested: "Parking: garage: no, street: yes"
            parent = frozenset(content_tokens(key))
            for child, value in _ATTR_PAIR.findall(rest):
                v = value.strip().lower()
                if v in _NO_VALUES or v in _YES_VALUES:
                    out.append((frozenset(content_tokens(child.replace("-", ""))), parent, v not in _NO_VALUES))
        else:
            v = rest.lower().rstrip(".")
            if v in _NO_VALUES or v in _YES_VALUES:
                out.append((frozenset(content_tokens(key.replace("-", ""))), frozenset(), v not in _NO_VALUES))
    return [a for a in out if a[0]]


def contradicted(claim: str, attrs: list[tuple[frozenset[str], frozenset[str], bool]]) -> list[str]:
    """Attributes the claim asserts against the record: one the record says no to, stated without a
    negation in its clause ("offers outdoor seating"), or one it says yes to, negated ("no WiFi")."""
    if not attrs:
        return []
    words = [w.lower() for w in _WORD.findall(claim.replace("-", ""))]
    stems = [_token(w) for w in words]
    present = set(stems)
    out = []
    for terms, parent, value in attrs:
        if not terms <= present:
            continue
        if parent and all(len(t) <= 6 for t in terms) and not parent & present:
            continue  # "street" or "lot" alone is not about parking
        at = min(i for i, s in enumerate(stems) if s in terms)
        negated_here = False
        for w in reversed(words[max(0, at - 6):at]):
            if w in _CLAUSE_BREAK:
                break
            if w in _NEGATORS or w.endswith("n't"):
                negated_here = True
                break
        if negated_here == value:
            out.append(" ".join(sorted(terms)) + (" (the record says yes)" if value else " (the record says no)"))
    return out
