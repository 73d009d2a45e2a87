"""Range and conditional-request rules (RFC 9110), decided before a byte is sent.

Kept apart from the response code so that sendfile, streaming and redirects all
answer the same 206/304/412/416 for the same request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from aiohttp.helpers import ETag

from repository.errors import RangeNotSatisfiable

# ASCII digits only: ``\d`` would take other scripts' digits (``bytes=١-٢``), which int() reads.
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# More digits than any size has: such a position is past every end (int() is never asked to
# read thousands of them).
_MAX_DIGITS = 19
_BEYOND = 2**63


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


def _position(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    return _BEYOND if len(significant) > _MAX_DIGITS else int(significant)


def parse_range(header: str, size: int) -> ByteRange:
    """One ``bytes=`` range against a resource of ``size`` bytes.

    Malformed, multiple and unsatisfiable ranges all answer 416 with
    ``Content-Range: bytes */size``, as aiohttp's own file responses do. A last position
    past the end means the end, and a suffix longer than the resource means all of it
    (RFC 9110 14.1.2), however many digits they have.
    """
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        raise RangeNotSatisfiable(size)
    if m[1]:
        start = _position(m[1])
        end = _position(m[2]) if m[2] else size - 1
        if end < start or start >= size:
            raise RangeNotSatisfiable(size)
        end = min(end, size - 1)
    else:
        suffix = _position(m[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        start = max(size - suffix, 0)
        end = size - 1
    return ByteRange(start, end - start + 1)


def other_servers_agree(header: str) -> bool:
    """Whether S3 and nginx, handed this Range, would send what ``parse_range`` decided: they
    refuse positions past 64 bits (416) where RFC 9110 reads a last position as the end."""
    m = _RANGE_RE.fullmatch(header.strip())
    return m is not None and len(m[1]) <= _MAX_DIGITS and len(m[2]) <= _MAX_DIGITS


def _etag_listed(etag: str, header_etags: tuple[ETag, ...] | None, *, weak: bool) -> bool:
    if not header_etags:
        return False
    return any(t.value == "*" or (t.value == etag and (weak or not t.is_weak)) for t in header_etags)


def _seconds(ts: datetime) -> int:
    return int(ts.timestamp())


def not_modified(request: web.BaseRequest, etag: str, modified: datetime) -> bool:
    """True when the client's copy is current (304); If-None-Match wins over If-Modified-Since."""
    if request.if_none_match is not None:
        return _etag_listed(etag, request.if_none_match, weak=True)
    ims = request.if_modified_since
    return ims is not None and _seconds(modified) <= _seconds(ims)


def precondition_failed(request: web.BaseRequest, etag: str, modified: datetime) -> bool:
    """True when If-Match or If-Unmodified-Since rules the request out (412)."""
    if request.if_match is not None:
        return not _etag_listed(etag, request.if_match, weak=False)
    ius = request.if_unmodified_since
    return ius is not None and _seconds(modified) > _seconds(ius)


def range_applies(request: web.BaseRequest, etag: str, modified: datetime) -> bool:
    """Whether to honour Range: only if If-Range is absent or still names this version."""
    if "Range" not in request.headers:
        return False
    raw = request.headers.get("If-Range")
    if raw is None:
        return True
    if raw.startswith(('"', "W/")):
        return raw.strip() == f'"{etag}"'
    if_range = request.if_range
    return if_range is not None and _seconds(modified) == _seconds(if_range)
