"""Strict JSON: the one parser for JSON a node reads from anyone else.

Python's ``json`` accepts what other parsers treat differently: duplicate keys (one
parser keeps the first, another the last, so a checker and a user of the same bytes can
disagree), ``NaN`` and ``Infinity`` (not JSON at all), and floats that round
differently. Every body, manifest and token a node reads goes through ``loads`` (or,
for JSON inside other text, ``loads_prefix``), which refuses all of that and says where.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from .errors import InvalidInput


class JsonRefused(InvalidInput):
    """Text that is not strict JSON; ``problem`` says what and where, for callers that reword it."""

    default_message = "Invalid JSON"

    def __init__(self, problem: str, *, syntax: bool = False) -> None:
        super().__init__(f"Invalid JSON: {problem}")
        self.problem = problem
        # a syntax error, which in text cut short may only mean that the rest is still to come
        self.syntax = syntax


JSON_WHITESPACE = " \t\n\r"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JsonRefused(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> NoReturn:
    raise JsonRefused(f"{name} is not allowed")


def _refuse_float(text: str) -> NoReturn:
    raise JsonRefused(f"floats are not allowed ({text[:40]!r})")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_refuse_constant)
_INTEGERS_ONLY = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_refuse_constant, parse_float=_refuse_float)


def _text(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not valid UTF-8 at byte {exc.start}") from None


def loads_prefix(text: str, pos: int = 0, *, floats: bool = True) -> tuple[Any, int]:
    """The JSON value that starts at ``text[pos]`` and where it ends; what follows is the caller's."""
    decoder = _DECODER if floats else _INTEGERS_ONLY
    try:
        return decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at character {exc.pos} (line {exc.lineno} column {exc.colno})"
        raise JsonRefused(problem, syntax=True) from None
    except RecursionError:
        raise JsonRefused("nested too deeply") from None
    except ValueError as exc:  # an integer past Python's digit limit
        raise JsonRefused(f"cannot be parsed ({exc})") from None


def loads(data: bytes | bytearray | memoryview | str, *, floats: bool = True) -> Any:
    """One JSON value, strictly: bytes must be UTF-8; no duplicate keys, no NaN or Infinity,
    and with ``floats=False`` no number but an integer. Anything else raises ``JsonRefused``."""
    text = _text(data)
    start = len(text) - len(text.lstrip(JSON_WHITESPACE))
    value, end = loads_prefix(text, start, floats=floats)
    rest = text[end:].lstrip(JSON_WHITESPACE)
    if rest:
        raise JsonRefused(f"Extra data at character {len(text) - len(rest)}")
    return value
