"""Many small blobs in one upload: ``POST .../transactions/{id}/blobs`` (docs/transactions.md).

A request per blob costs the sender and the edge more than the bytes of a small blob
(authentication, lookups, a worker-thread trip and two fsyncs each); a bundle of
thousands of small files spends most of its time there. A batch body is one line,
a JSON array of sha256s, then the bytes of those blobs back to back in that order.
Their sizes come from the manifest, so the bytes need no framing of their own. Each
blob is held in memory on its own (they are at most ``BATCH_BLOB_MAX`` bytes) and
stored with a group of others in one call to the blob store, which checks it against
its sha256.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from repository.errors import BadRequest

from .pace import PaceGuard

# Largest blob a batch may carry; larger ones go alone, resumable (PUT .../blobs/{sha256}).
BATCH_BLOB_MAX = 1024 * 1024
# Most blobs in one batch: bounds the head line to ~70 KiB.
BATCH_MAX_BLOBS = 1000
BATCH_HEAD_MAX = BATCH_MAX_BLOBS * 67 + 2
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class BatchReader:
    """Reads a batch body through ``guard`` (so a slow body is cut off as a single upload is)."""

    def __init__(self, chunks: AsyncIterator[bytes], guard: PaceGuard) -> None:
        self._chunks = chunks
        self._guard = guard
        self._chunk = b""
        self._pos = 0
        self.consumed = 0

    async def _fill(self) -> bool:
        while self._pos >= len(self._chunk):
            chunk = await self._guard.read(self._chunks)
            if chunk is None:
                return False
            self._chunk, self._pos = chunk, 0
        return True

    async def head(self) -> list[str]:
        """The sha256s the batch carries: distinct, at least one, at most ``BATCH_MAX_BLOBS``."""
        line = bytearray()
        while True:
            if not await self._fill():
                raise BadRequest("A blob batch starts with a line holding a JSON array of sha256s")
            end = self._chunk.find(b"\n", self._pos)
            stop = len(self._chunk) if end < 0 else end
            line += self._chunk[self._pos : stop]
            self._pos = stop if end < 0 else end + 1
            if len(line) > BATCH_HEAD_MAX:
                raise BadRequest(f"A blob batch carries at most {BATCH_MAX_BLOBS} blobs")
            if end >= 0:
                break
        self.consumed += len(line) + 1
        try:
            shas = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            shas = None
        if (
            not isinstance(shas, list)
            or not 0 < len(shas) <= BATCH_MAX_BLOBS
            or not all(isinstance(s, str) and SHA256_RE.fullmatch(s) for s in shas)
            or len(set(shas)) != len(shas)
        ):
            raise BadRequest(
                f"The first line of a blob batch must be a JSON array of 1 to {BATCH_MAX_BLOBS}"
                " distinct lowercase sha256s"
            )
        return shas

    async def take(self, size: int) -> list[bytes] | None:
        """The next ``size`` bytes as the pieces they came in, or None if the body ends first."""
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
