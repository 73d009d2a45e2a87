"""What a bundle version publishes on an edge, as one digest the service and the edge compute alike.

After a commit the Distribution service must know that the edge serves exactly the manifest,
every file, without asking for each one. The edge answers a digest of what it actually
publishes for the bundle; the service computes the same digest from the manifest; equal
digests mean the same files with the same bytes at the same paths.

The canonical list: one entry ``[target, sha256, size]`` per file, ``target`` being the
``repo/path`` the manifest names, ``sha256`` lowercase hex, ``size`` an integer; entries
sorted by target (by code point, which is the order of their UTF-8 bytes), each target once.
It is encoded as JSON without insignificant whitespace, non-ASCII characters as themselves,
in UTF-8, and the digest is the SHA-256 of those bytes in lowercase hex. An empty list is
``[]``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

_SHA256 = re.compile(r"[0-9a-f]{64}")

Entry = tuple[str, str, int]


def published_list(entries: Iterable[Entry]) -> bytes:
    """The canonical encoding of ``(target, sha256, size)`` entries, in any order given.
    A target given twice, or an entry of the wrong shape, is a ValueError."""
    listed = sorted(entries, key=lambda entry: entry[0])
    for index, (target, sha256, size) in enumerate(listed):
        _check_entry(index, target, sha256, size)
        if index and listed[index - 1][0] == target:
            raise ValueError(f"target {target!r} is listed twice")
    return json.dumps([list(e) for e in listed], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _check_entry(index: int, target: object, sha256: object, size: object) -> None:
    if not isinstance(target, str) or not target:
        raise ValueError(f"entry {index}: the target must be a non-empty string")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"entry {target!r}: sha256 must be 64 lowercase hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"entry {target!r}: size must be a non-negative integer")


def published_digest(entries: Iterable[Entry]) -> str:
    """The SHA-256, in lowercase hex, of ``published_list(entries)``."""
    return hashlib.sha256(published_list(entries)).hexdigest()


class PublishedHasher:
    """``published_digest`` of entries given one at a time in target order, for a list too long
    to hold (a bundle's files, read from a database a page at a time): the same digest, the same
    refusals of a bad entry, and an entry out of order or twice refused as well."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self._last: str | None = None
        self._count = 0

    def add(self, target: str, sha256: str, size: int) -> None:
        _check_entry(self._count, target, sha256, size)
        if self._last is not None and target <= self._last:
            raise ValueError(
                f"target {target!r} is listed twice" if target == self._last else f"{target!r} out of order"
            )
        entry = json.dumps([target, sha256, size], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._hash.update(entry if self._last is None else b"," + entry)
        self._last = target
        self._count += 1

    def hexdigest(self) -> str:
        done = self._hash.copy()
        done.update(b"]")
        return done.hexdigest()
