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
        if not isinstance(target, str) or not target:
            raise ValueError(f"entry {index}: the target must be a non-empty string")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"entry {target!r}: sha256 must be 64 lowercase hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"entry {target!r}: size must be a non-negative integer")
        if index and listed[index - 1][0] == target:
            raise ValueError(f"target {target!r} is listed twice")
    return json.dumps([list(e) for e in listed], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def published_digest(entries: Iterable[Entry]) -> str:
    """The SHA-256, in lowercase hex, of ``published_list(entries)``."""
    return hashlib.sha256(published_list(entries)).hexdigest()
