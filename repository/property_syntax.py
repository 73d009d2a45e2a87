"""Artifactory's property syntax, read and written in one place, and the limits on properties.

A property string is ``a=1;b=2|3``: ``;`` separates properties, ``=`` a key from its values,
and ``,`` or ``|`` one value from the next. A backslash makes the next character literal
(``\\;``, ``\\,``, ``\\|``, ``\\=``, ``\\\\``), as dohq-artifactory escapes values. A key list
(``?properties=a,b`` on GET and DELETE) is keys separated by ``,``, escaped the same way.

Matrix parameters on a deploy URL (``PUT /artifactory/repo/file;a=1;b=2,3``) are read
from the raw path: each key and value is percent-decoded on its own, a raw ``,``
separates values (an encoded ``%2C`` is a comma inside a value) and a repeated key adds
values, which is how dohq-artifactory sends a list.

Every string read here is judged by ``check_properties``: a bad one is a 400 naming
the problem, raised before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from urllib.parse import unquote_to_bytes

from repository.errors import BadRequest

# Limits on what a file may carry, the same for every way of setting properties.
MAX_PROPERTY_KEY_BYTES = 255  # the signed manifest's limit (wire.manifest)
MAX_PROPERTY_VALUE_CHARS = 1024
MAX_VALUES_PER_KEY = 100
MAX_PROPERTIES_PER_FILE = 100

Properties = dict[str, list[str]]

_SPECIAL = "\\;,|="
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PropertySyntaxError(BadRequest):
    """A property string, key list or matrix parameter that cannot be read, or breaks a limit."""


# -- reading -----------------------------------------------------------------------


def _split(text: str, separators: str) -> Iterator[str]:
    """``text`` split on unescaped ``separators``, still escaped."""
    start, i = 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 == len(text):
                raise PropertySyntaxError(f"Malformed properties {text!r}: ends with a lone backslash")
            i += 2
            continue
        if char in separators:
            yield text[start:i]
            start = i + 1
        i += 1
    yield text[start:i]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def parse_properties(text: str) -> Properties:
    """``a=1;b=2|3`` -> ``{"a": ["1"], "b": ["2", "3"]}``; a key given twice gathers its values."""
    if text == "":
        raise PropertySyntaxError("No properties given: expected key=value[;key=value...]")
    props: Properties = {}
    for part in _split(text, ";"):
        key = next(_split(part, "="))
        if len(key) == len(part):
            raise PropertySyntaxError(f"Malformed property {part!r}: expected key=value")
        _add(props, _unescape(key), [_unescape(v) for v in _split(part[len(key) + 1 :], ",|")])
    return check_properties(props)


def parse_keys(text: str) -> list[str]:
    """``a,b`` -> ``["a", "b"]``: the keys a GET or DELETE names."""
    keys = [_unescape(k) for k in _split(text, ",")]
    for key in keys:
        _check_key(key)
    return list(dict.fromkeys(keys))


def parse_matrix(raw: str) -> Properties:
    """The raw matrix parameters of a path (``a=1;b=2,3``, no leading ``;``)."""
    props: Properties = {}
    for part in raw.split(";"):
        key, eq, value = part.partition("=")
        if not eq:
            raise PropertySyntaxError(f"Malformed matrix parameter {_decode(part)!r}: expected ;key=value")
        _add(props, _decode(key), [_decode(v) for v in value.split(",")])
    return check_properties(props)


def _decode(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise PropertySyntaxError("Malformed properties: percent-encoding is not valid UTF-8") from None


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """A raw query string's ``(name, value)`` pairs, percent-decoded strictly as UTF-8 (``+`` is
    a space, as form encoding sends it): a value that is not clean UTF-8 is a 400, never
    silently replaced."""
    pairs = []
    for pair in raw_query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            pairs.append((_decode(name.replace("+", " ")), _decode(value.replace("+", " "))))
    return pairs


def decode_query(raw_query: str, name: str) -> str | None:
    """The value of parameter ``name`` in a raw query string (``query_pairs``); None when absent."""
    return next((value for key, value in query_pairs(raw_query) if key == name), None)


def parse_values(text: str) -> list[str]:
    """``1,2`` -> ``["1", "2"]``: the values a search gives for one key."""
    return [_unescape(v) for v in _split(text, ",")]


def _add(props: Properties, key: str, values: list[str]) -> None:
    held = props.setdefault(key, [])
    held.extend(v for v in values if v not in held)


# -- judging -----------------------------------------------------------------------


def _check_key(key: str) -> None:
    if not key:
        raise PropertySyntaxError("Malformed properties: a property key is empty")
    if _CONTROL.search(key):
        raise PropertySyntaxError(f"Malformed properties: key {key!r} contains control characters")
    if len(key.encode("utf-8")) > MAX_PROPERTY_KEY_BYTES:
        raise PropertySyntaxError(f"Property key {key[:40]!r}... is longer than {MAX_PROPERTY_KEY_BYTES} bytes")


def check_properties(props: Mapping[str, list[str]]) -> Properties:
    """``props`` if every key and value is within the limits; PropertySyntaxError otherwise."""
    if len(props) > MAX_PROPERTIES_PER_FILE:
        raise PropertySyntaxError(f"{len(props)} properties given; a file holds at most {MAX_PROPERTIES_PER_FILE}")
    for key, values in props.items():
        _check_key(key)
        if len(values) > MAX_VALUES_PER_KEY:
            raise PropertySyntaxError(
                f"Property {key!r} has {len(values)} values; at most {MAX_VALUES_PER_KEY} are allowed"
            )
        for value in values:
            if _CONTROL.search(value):
                raise PropertySyntaxError(f"Malformed properties: a value of {key!r} contains control characters")
            if len(value) > MAX_PROPERTY_VALUE_CHARS:
                raise PropertySyntaxError(
                    f"A value of property {key!r} is longer than {MAX_PROPERTY_VALUE_CHARS} characters"
                )
    return {key: list(values) for key, values in props.items()}


# -- writing -----------------------------------------------------------------------


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def format_properties(props: Mapping[str, list[str]]) -> str:
    """The property string ``parse_properties`` reads back as ``props`` (values joined by ``,``)."""
    return ";".join(f"{_escape(k)}={','.join(_escape(v) for v in values)}" for k, values in props.items())


def format_keys(keys: list[str]) -> str:
    return ",".join(_escape(k) for k in keys)
