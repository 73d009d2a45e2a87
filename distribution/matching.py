"""What specs and AQL share: the error they raise, scopes, and whole-value wildcards."""

from __future__ import annotations

import re
from dataclasses import dataclass

from repository.errors import BadRequest


class SpecError(BadRequest):
    default_message = "Invalid release bundle spec"


@dataclass(frozen=True)
class Scope:
    """Where matches can be: files anywhere below ``folder`` ('' = the whole repo) of
    ``repo`` (None = every repo). A walk limited to a query's scopes misses nothing."""

    repo: str | None
    folder: str


ANY_SCOPE = Scope(None, "")


def _chunk(text: str) -> re.Pattern[str]:
    return re.compile("".join("." if c == "?" else re.escape(c) for c in text), re.DOTALL)


class Wildcard:
    """``*`` any run of characters, ``?`` one character, the rest literal, over a whole value.

    The fixed-length chunks between stars are placed leftmost-first, which is exact for
    such patterns and costs at most O(len(text) * len(pattern)), whatever the pattern.
    """

    __slots__ = ("_literal", "_head", "_head_len", "_middle", "_tail", "_tail_len")

    def __init__(self, pattern: str) -> None:
        first, *rest = pattern.split("*")
        self._literal = pattern if not rest and "?" not in pattern else None
        self._head, self._head_len = _chunk(first), len(first)
        self._middle = [(_chunk(c), len(c)) for c in rest[:-1] if c]
        self._tail = _chunk(rest[-1]) if rest else None
        self._tail_len = len(rest[-1]) if rest else 0

    def matches(self, text: str) -> bool:
        if self._literal is not None:
            return text == self._literal
        if self._tail is None:
            return len(text) == self._head_len and self._head.match(text) is not None
        end = len(text) - self._tail_len
        if end < self._head_len or not self._head.match(text) or not self._tail.match(text, end):
            return False
        pos = self._head_len
        for chunk, _ in self._middle:
            found = chunk.search(text, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text
