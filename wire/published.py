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


def _check(entry: Entry, index: int, previous: str | None) -> None:
    target, sha256, size = entry
    if not isinstance(target, str) or not target:
        raise ValueError(f"entry {index}: the target must be a non-empty string")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"entry {target!r}: sha256 must be 64 lowercase hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"entry {target!r}: size must be a non-negative integer")
    if previous == target:
        raise ValueError(f"target {target!r} is listed twice")


def _entry_bytes(entry: Entry) -> bytes:
    return json.dumps(list(entry), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def published_list(entries: Iterable[Entry]) -> bytes:
    """The canonical encoding of ``(target, sha256, size)`` entries, in any order given.
    A target given twice, or an entry of the wrong shape, is a ValueError."""
    listed = sorted(entries, key=lambda entry: entry[0])
    for index, entry in enumerate(listed):
        _check(entry, index, listed[index - 1][0] if index else None)
    return b"[" + b",".join(_entry_bytes(e) for e in listed) + b"]"


def published_digest(entries: Iterable[Entry]) -> str:
    """The SHA-256, in lowercase hex, of ``published_list(entries)``."""
    return hashlib.sha256(published_list(entries)).hexdigest()


class PublishedDigest:
    """``published_digest`` of entries given already sorted by target, a page at a time, so a list
    of 100,000 files is never held whole; an entry out of order is a ValueError."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self._last: str | None = None
        self.files = 0
        self.bytes = 0

    def add(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            _check(entry, self.files, self._last)
            if self._last is not None and entry[0] < self._last:
                raise ValueError(f"target {entry[0]!r} comes after {self._last!r}")
            self._hash.update((b"," if self.files else b"") + _entry_bytes(entry))
            self._last = entry[0]
            self.files += 1
            self.bytes += entry[2]

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"]")
        return final.hexdigest()
