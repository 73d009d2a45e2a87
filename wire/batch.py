"""Many small blobs in one upload: the body of ``POST .../transactions/{id}/blobs`` (docs/transactions.md).

A request per blob costs the sender and the edge more than the bytes of a small blob
(authentication, lookups, a worker-thread trip and two fsyncs each); a bundle of
thousands of small files spends most of its time there. A batch body is one line,
a JSON array of sha256s, then the bytes of those blobs back to back in that order.
Their sizes come from the manifest, so the bytes need no framing of their own.

The encoder (``head_line``, ``encode``) and the decoder (``BatchReader``) of that body
live here together, and the decoder's cap on the head line is the length of the
longest line the encoder writes, so what one side sends the other always reads.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence

from .errors import InvalidInput
from .jsonstrict import JsonRefused, loads
from .protocol import SHA256_RE

# Largest blob a batch may carry; larger ones go alone, resumable (PUT .../blobs/{sha256}).
BATCH_BLOB_MAX = 1024 * 1024
# Most blobs in one batch: bounds the head line (to BATCH_HEAD_MAX bytes).
BATCH_MAX_BLOBS = 1000


class BatchRefused(InvalidInput):
    """A batch body, or a batch about to be sent, that breaks the format: a 400 saying how."""

    default_message = "Invalid blob batch"


def _check_shas(shas: object) -> list[str]:
    if (
        not isinstance(shas, list | tuple)
        or not 0 < len(shas) <= BATCH_MAX_BLOBS
        or not all(isinstance(s, str) and SHA256_RE.fullmatch(s) for s in shas)
        or len(set(shas)) != len(shas)
    ):
        raise BatchRefused(
            f"The first line of a blob batch must be a JSON array of 1 to {BATCH_MAX_BLOBS} distinct lowercase sha256s"
        )
    return list(shas)


def head_line(shas: Sequence[str]) -> bytes:
    """The first line of a batch: the sha256s as a JSON array without spaces, then ``\\n``."""
    return json.dumps(_check_shas(shas), separators=(",", ":")).encode("ascii") + b"\n"


# The longest head line, as the encoder writes it: the decoder refuses longer ones.
BATCH_HEAD_MAX = len(head_line([f"{i:064x}" for i in range(BATCH_MAX_BLOBS)]))


def check_sizes(shas: Sequence[str], sizes: Mapping[str, int]) -> None:
    """Refuse a batch listing a blob too large to travel in one; such a blob goes alone."""
    if large := [s for s in shas if sizes[s] > BATCH_BLOB_MAX]:
        others = f" and {len(large) - 1} more" if len(large) > 1 else ""
        raise BatchRefused(f"Blobs over {BATCH_BLOB_MAX} bytes go alone, not in a batch: {large[0]}{others}")


def body_length(shas: Sequence[str], sizes: Mapping[str, int]) -> int:
    """The ``Content-Length`` of a batch of ``shas``: its head line and every blob's bytes."""
    return len(head_line(shas)) + sum(sizes[s] for s in shas)


def encode(blobs: Sequence[tuple[str, bytes]]) -> bytes:
    """A whole batch body in memory, from ``(sha256, bytes)`` pairs in order. A sender that
    streams writes the same: ``head_line`` of the sha256s, then the bytes in that order."""
    shas = [sha for sha, _ in blobs]
    check_sizes(shas, {sha: len(data) for sha, data in blobs})
    return head_line(shas) + b"".join(data for _, data in blobs)


def parse_head(line: bytes) -> list[str]:
    """The sha256s of a head line (without its ``\\n``): distinct, at least one, at most ``BATCH_MAX_BLOBS``."""
    if len(line) + 1 > BATCH_HEAD_MAX:
        raise BatchRefused(
            f"A blob batch carries at most {BATCH_MAX_BLOBS} blobs (a head line of {BATCH_HEAD_MAX} bytes)"
        )
    try:
        shas = loads(line)
    except JsonRefused:
        shas = None
    return _check_shas(shas)


class BatchReader:
    """Reads a batch body from ``read``, which answers the body's next chunk (None at its end)."""

    def __init__(self, read: Callable[[], Awaitable[bytes | None]]) -> None:
        self._read = read
        self._chunk = b""
        self._pos = 0
        self.consumed = 0  # bytes of the body read so far: the head line with its newline, then blobs

    async def _fill(self) -> bool:
        while self._pos >= len(self._chunk):
            chunk = await self._read()
            if chunk is None:
                return False
            self._chunk, self._pos = chunk, 0
        return True

    async def head(self) -> list[str]:
        """The sha256s the batch carries, read no further than the longest head line allowed."""
        line = bytearray()
        while True:
            if not await self._fill():
                raise BatchRefused("A blob batch starts with a line holding a JSON array of sha256s")
            end = self._chunk.find(b"\n", self._pos)
            stop = len(self._chunk) if end < 0 else end
            line += self._chunk[self._pos : stop]
            self._pos = stop if end < 0 else end + 1
            if end >= 0 or len(line) + 1 > BATCH_HEAD_MAX:
                break
        shas = parse_head(bytes(line))
        self.consumed += len(line) + 1
        return shas

    async def take(self, size: int) -> list[bytes] | None:
        """The next blob's ``size`` bytes as the pieces they came in, or None if the body ends first."""
        if size > BATCH_BLOB_MAX:
            raise BatchRefused(f"A blob of {size} bytes is over {BATCH_BLOB_MAX} bytes: it goes alone, not in a batch")
        pieces: list[bytes] = []
        need = size
        while need:
            if not await self._fill():
                return None
            piece = self._chunk[self._pos : self._pos + need]
            self._pos += len(piece)
            need -= len(piece)
            pieces.append(piece)
        self.consumed += size
        return pieces

    async def at_end(self) -> bool:
        return not await self._fill()
