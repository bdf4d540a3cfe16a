"""`match:` and `accept:` conditions, compiled once at load time into small predicate objects.

A condition is a mapping of field -> test, all of which must hold, plus the combinators
`all: [...]`, `any: [...]` and `not: {...}`. A test is a scalar (equality), a list (membership)
or a mapping of operators: eq, ne, in, not_in, gt, gte, lt, lte, regex, exists.

    match:
      team: [search, ads]
      prompt_tokens: { gt: 4000 }
      metadata.env: prod
      headers.x-priority: { regex: "^(high|urgent)$" }
      not: { user: { regex: "^bot-" } }

No eval, no code: the YAML only selects fields and operators from the tables below. Each
predicate can also say why it did not hold, which is what `gateway policy explain` prints.
"""

from __future__ import annotations

import difflib
import operator
import re
from typing import Any, Callable

Problem = tuple[tuple, str]  # (path inside the condition, message)

_MISSING = object()
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "regex", "exists")
COMBINATORS = ("all", "any", "not")


class Cond:
    """`test(facts) -> bool` is a plain closure set per instance (no method dispatch on the hot path)."""

    __slots__ = ("test",)

    def why_not(self, facts: Any) -> str | None:
        """None when the condition holds, else a short reason."""
        raise NotImplementedError

    def fields(self) -> set[str]:
        raise NotImplementedError


class TrueCond(Cond):
    __slots__ = ()

    def __init__(self) -> None:
        self.test = _always

    def why_not(self, facts: Any) -> str | None:
        return None

    def fields(self) -> set[str]:
        return set()


class FieldCond(Cond):
    __slots__ = ("name", "get", "op", "value", "check")

    def __init__(self, name: str, get: Callable[[Any], Any], op: str, value: Any) -> None:
        self.name, self.get, self.op, self.value = name, get, op, value
        self.check = check = _CHECKS[op](value)
        self.test = _fused(get, op, value) or (lambda f: check(get(f)))

    def why_not(self, facts: Any) -> str | None:
        actual = self.get(facts)
        if self.check(actual):
            return None
        shown = "absent" if actual is _MISSING or actual is None else repr(actual)
        return f"{self.name} is {shown}, not {_WORDS[self.op]}{_show(self.value)}"

    def fields(self) -> set[str]:
        return {self.name}


class AllCond(Cond):
    __slots__ = ("parts",)

    def __init__(self, parts: list[Cond]) -> None:
        self.parts = tuple(parts)
        self.test = _all_of(tuple(p.test for p in self.parts))

    def why_not(self, facts: Any) -> str | None:
        for p in self.parts:
            reason = p.why_not(facts)
            if reason is not None:
                return reason
        return None

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts)) if self.parts else set()


class AnyCond(AllCond):
    __slots__ = ()

    def __init__(self, parts: list[Cond]) -> None:
        self.parts = tuple(parts)
        self.test = _any_of(tuple(p.test for p in self.parts))

    def why_not(self, facts: Any) -> str | None:
        reasons = [p.why_not(facts) for p in self.parts]
        if any(r is None for r in reasons):
            return None
        return "none of: " + "; ".join(r for r in reasons if r)


class NotCond(Cond):
    __slots__ = ("inner",)

    def __init__(self, inner: Cond) -> None:
        self.inner = inner
        inner_test = inner.test
        self.test = lambda f: not inner_test(f)

    def why_not(self, facts: Any) -> str | None:
        return None if self.test(facts) else "not: the inner condition holds"

    def fields(self) -> set[str]:
        return self.inner.fields()


def _always(facts: Any) -> bool:
    return True


def _all_of(tests: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda f: a(f) and b(f)
    if len(tests) == 3:
        a, b, c = tests
        return lambda f: a(f) and b(f) and c(f)

    def every(f: Any) -> bool:
        for t in tests:
            if not t(f):
                return False
        return True

    return every


def _any_of(tests: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
    def some(f: Any) -> bool:
        for t in tests:
            if t(f):
                return True
        return False

    return some


def _fused(get: Callable[[Any], Any], op: str, v: Any) -> Callable[[Any], bool] | None:
    """One closure per field test for the common operators: the engine's inner loop."""
    if op == "eq":
        return lambda f: get(f) == v
    if op == "in":
        def member(f: Any) -> bool:
            x = get(f)
            try:
                return x in v
            except TypeError:  # an unhashable metadata value is in no list of plain values
                return False
        return member
    if op == "regex":
        search = v.search
        seen: dict[str, bool] = {}  # model names, teams and header values repeat: remember each verdict

        def matches(f: Any) -> bool:
            x = get(f)
            if x.__class__ is not str:
                return False
            hit = seen.get(x)
            if hit is None:
                hit = search(x) is not None
                if len(seen) < 4096:
                    seen[x] = hit
            return hit
        return matches
    if op in ("gt", "gte", "lt", "lte"):
        cmp = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}[op]
        fv = float(v)
        return lambda f: (x := get(f)).__class__ in (int, float) and cmp(float(x), fv)
    return None


_WORDS = {"eq": "", "ne": "other than ", "in": "one of ", "not_in": "outside ", "gt": "> ", "gte": ">= ",
          "lt": "< ", "lte": "<= ", "regex": "matching ", "exists": "exists="}


def _show(value: Any) -> str:
    if isinstance(value, re.Pattern):
        return repr(value.pattern)
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(map(repr, value))) + "]"
    return repr(value)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_CHECKS: dict[str, Callable[[Any], Callable[[Any], bool]]] = {
    "eq": lambda v: (lambda a: a == v),
    "ne": lambda v: (lambda a: a != v),
    "in": lambda v: (lambda a: _hashable(a) and a in v),
    "not_in": lambda v: (lambda a: not (_hashable(a) and a in v)),
    "gt": lambda v: (lambda a: _num(a) and a > v),
    "gte": lambda v: (lambda a: _num(a) and a >= v),
    "lt": lambda v: (lambda a: _num(a) and a < v),
    "lte": lambda v: (lambda a: _num(a) and a <= v),
    "regex": lambda v: (lambda a: isinstance(a, str) and v.search(a) is not None),
    "exists": lambda v: (lambda a: (a is not _MISSING and a is not None) == v),
}


def _hashable(a: Any) -> bool:
    return a is not _MISSING and isinstance(a, (str, int, float, bool, type(None)))


class FieldTable:
    """The fields a kind of condition may read: plain names and dotted prefixes (`metadata.`)."""

    def __init__(self, plain: dict[str, type | tuple[type, ...]], prefixes: tuple[str, ...]) -> None:
        self.plain = plain
        self.prefixes = prefixes

    def getter(self, name: str) -> Callable[[Any], Any] | None:
        if name in self.plain:
            return operator.attrgetter(name)
        for prefix in self.prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                parts = name.split(".")
                head, rest = parts[0], parts[1:]
                if head == "headers":
                    key = ".".join(rest).lower()
                    return lambda f, k=key: f.headers.get(k, _MISSING)
                if len(rest) == 1:
                    return lambda f, h=head, k=rest[0]: getattr(f, h).get(k, _MISSING)
                return lambda f, h=head, r=tuple(rest): _dig(getattr(f, h), r)
        return None

    def names(self) -> list[str]:
        return list(self.plain) + [p + "…" for p in self.prefixes]


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def compile_condition(spec: Any, table: FieldTable, problems: list[Problem], path: tuple = ()) -> Cond:
    if spec is None:
        return TrueCond()
    if not isinstance(spec, dict):
        problems.append((path, "a condition is a mapping of field: test"))
        return TrueCond()
    parts: list[Cond] = []
    for key, test in spec.items():
        here = path + (key,)
        if key in ("all", "any"):
            if not isinstance(test, list) or not test:
                problems.append((here, f"`{key}` takes a non-empty list of conditions"))
                continue
            subs = [compile_condition(s, table, problems, here + (i,)) for i, s in enumerate(test)]
            parts.append(AllCond(subs) if key == "all" else AnyCond(subs))
        elif key == "not":
            parts.append(NotCond(compile_condition(test, table, problems, here)))
        else:
            get = table.getter(str(key))
            if get is None:
                close = difflib.get_close_matches(str(key), list(table.plain) + list(COMBINATORS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (fields: {', '.join(table.names())})"
                problems.append((here, f"unknown field {key!r}{hint}"))
                continue
            parts.extend(_field_tests(str(key), get, test, problems, here))
    if len(parts) == 1:
        return parts[0]
    return AllCond(parts)


def _field_tests(name: str, get: Callable[[Any], Any], test: Any, problems: list[Problem], path: tuple) -> list[Cond]:
    if isinstance(test, list):
        if not all(isinstance(v, (str, int, float, bool)) for v in test):
            problems.append((path, "a list test holds plain values"))
            return []
        return [FieldCond(name, get, "in", frozenset(test))]
    if not isinstance(test, dict):
        return [FieldCond(name, get, "eq", test)]
    out: list[Cond] = []
    for op, value in test.items():
        here = path + (op,)
        if op not in OPERATORS:
            close = difflib.get_close_matches(str(op), OPERATORS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (operators: {', '.join(OPERATORS)})"
            problems.append((here, f"unknown operator {op!r}{hint}"))
            continue
        if op in ("gt", "gte", "lt", "lte") and not _num(value):
            problems.append((here, f"`{op}` compares numbers; got {value!r}"))
            continue
        if op in ("in", "not_in"):
            if not isinstance(value, list):
                problems.append((here, f"`{op}` takes a list"))
                continue
            value = frozenset(value)
        if op == "regex":
            try:
                value = re.compile(str(value))
            except re.error as exc:
                problems.append((here, f"bad regex: {exc}"))
                continue
        if op == "exists" and not isinstance(value, bool):
            problems.append((here, "`exists` takes true or false"))
            continue
        out.append(FieldCond(name, get, op, value))
    return out


# What a route's `match:` may read (see RequestFacts), and what a cascade step's `accept:` may read.
MATCH_FIELDS = FieldTable(
    {"model": str, "endpoint": str, "team": str, "user": str, "key": str, "stream": bool, "tools": bool,
     "documents": bool, "json_mode": bool, "vision": bool, "prompt_tokens": int, "max_tokens": int},
    ("headers.", "metadata.", "budget."),
)
ACCEPT_FIELDS = FieldTable(
    {"finish_reason": str, "non_empty": bool, "valid_json": bool, "completion_tokens": int,
     "support_score": float, "grounded": bool},
    (),
)
