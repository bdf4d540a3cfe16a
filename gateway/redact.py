"""Secrets that redact themselves, and a scrubber that keeps every known secret out of text.

Provider keys, virtual keys and the master key are wrapped in `Secret` as soon as they are read;
their repr and str print `***`. As a second line of defence, every secret value the process
has seen is registered here and `scrub()` removes it (and anything shaped like a virtual key)
from log lines and error messages.
"""

from __future__ import annotations

import re

_KEY_SHAPE = re.compile(r"sk-gw-[A-Za-z0-9_\-]{8,}")
_known: set[str] = set()


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 6:
            _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register(value: str) -> None:
    if value and len(value) >= 6:
        _known.add(value)


def scrub(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, "***")
    if "sk-gw-" in text:
        text = _KEY_SHAPE.sub("sk-gw-***", text)
    return text
