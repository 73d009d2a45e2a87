"""The scrub: every stored blob read back and hashed now and then, so bytes at rest that rot or
are edited are found, and taken out of service rather than served.

A pass walks the blobs the node serves or keeps (``BlobSource``) in sha256 order, streams each
from the blob store (memory stays flat whatever its size), hashes it off the event loop, and
compares digest and length with its name and recorded size. A blob that differs, or that the
store has lost, is quarantined (``ArtifactService.quarantine``). Reading is paced to
``scrub.rate`` bytes per second on average, so the disks keep serving downloads.

A pass runs once per node, under the lease ``scrub`` (repository/leases.py), whatever the
number of processes; its cursor is kept in the database a page at a time, so a pass cut
short by a stop or a crash resumes where it was, in whichever process takes the lease next.
Background passes start ``scrub.interval`` seconds after the last one ended; an admin can
ask for one at any time (``POST /artifactory/api/scrub``). A pass ends with a sweep of the
store itself (``ArtifactService.sweep``): blobs that nothing references any more, left by a
process killed between an index change and its collect, are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from storage_backends import BlobNotFound

from .artifacts import ArtifactService
from .catalog import now_ms
from .errors import Conflict
from .leases import Leases
from .scrub_store import BlobSource, ScrubProgress, ScrubStore
from .settings import ScrubSettings

log = logging.getLogger(__name__)

LEASE = "scrub"
LEASE_SECONDS = 60.0
# Blobs read from the database at once; the cursor is saved after each page.
PAGE = 100
# How often the background task looks whether a pass is due (or left unfinished by another process).
CHECK_SECONDS = 60.0
# Chunks this large are hashed in a worker thread; smaller ones on the loop, cheaper than the hop.
HASH_IN_THREAD = 64 * 1024


class LeaseLost(Exception):
    """Another process took the scrub's lease: this pass stops; that process resumes it."""


@dataclass
class ScrubCounts:
    """Hooks told of every blob and byte a pass checks and of every pass that ends (the metrics)."""

    checked: list[Callable[[int], None]] = field(default_factory=list)  # bytes read, once per blob
    passes: list[Callable[[], None]] = field(default_factory=list)


class Pacer:
    """At most ``rate`` bytes per second, on average since it began."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.began = time.monotonic()
        self.done = 0

    async def spent(self, n: int) -> None:
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.began)
        if ahead > 0:
            await asyncio.sleep(ahead)


class Scrubber:
    def __init__(
        self,
        artifacts: ArtifactService,
        store: ScrubStore,
        leases: Leases,
        source: BlobSource,
        settings: ScrubSettings,
        counts: ScrubCounts | None = None,
    ) -> None:
        self.artifacts, self.store, self.leases, self.source = artifacts, store, leases, source
        self.settings = settings
        self.counts = counts or ScrubCounts()
        self._one = asyncio.Lock()  # one pass at a time in this process
        self._asked: asyncio.Task[bool] | None = None
        self._renewed = 0.0

    @property
    def running(self) -> bool:
        """Whether this process is in a pass now, or about to start one it was asked for."""
        return self._one.locked() or (self._asked is not None and not self._asked.done())

    async def progress(self) -> ScrubProgress:
        return await self.store.progress()

    async def run_forever(self) -> None:
        """The background passes (``scrub.enabled``); cancelled on shutdown, a pass resumes at the next start."""
        while True:
            try:
                if await self._due():
                    await self.run_pass()
            except Exception:
                log.exception("scrub: the pass stopped on an error; it resumes where it was at the next try")
            await asyncio.sleep(min(CHECK_SECONDS, self.settings.interval))

    async def _due(self) -> bool:
        progress = await self.store.progress()
        if progress.started is not None or progress.last_finished is None:
            return True  # a pass left unfinished, or none ever made
        return now_ms() >= progress.last_finished + self.settings.interval * 1000

    async def ask(self) -> bool:
        """A pass now, in the background, at the configured rate; False when this process is in
        one already. Conflict when another process of the node is."""
        if self.running:
            return False
        holder = await self.leases.holder_of(LEASE)
        if holder is not None and holder != self.leases.holder:
            raise Conflict("A scrub pass is running in another process of this node")
        self._asked = asyncio.create_task(self.run_pass(), name="scrub pass")
        self._asked.add_done_callback(_log_failure)
        return True

    async def close(self) -> None:
        """Stop a pass asked for (it resumes at the next start)."""
        if self._asked is not None:
            self._asked.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._asked

    async def run_pass(self) -> bool:
        """One pass, or the rest of the one under way; False if a pass runs already (here or in
        another process)."""
        if self._one.locked():
            return False
        async with self._one:
            if not await self.leases.take(LEASE, LEASE_SECONDS):
                return False
            self._renewed = time.monotonic()
            try:
                await self._scrub()
            except LeaseLost:
                log.warning("scrub: another process took over the pass")
            finally:
                await self.leases.give_back(LEASE)
        return True

    async def _scrub(self) -> None:
        progress = await self.store.begin(now_ms())
        cursor = progress.cursor
        log.info("scrub: pass %s at %d bytes/s", f"resumed after {cursor}" if cursor else "started", self.settings.rate)
        pacer = Pacer(self.settings.rate)
        while page := await self.source.blobs_after(cursor, PAGE):
            read = quarantined = 0
            for sha256, size in page:
                got, bad = await self._check(sha256, size, pacer)
                read += got
                quarantined += bad
            cursor = page[-1][0]
            await self.store.advance(cursor, len(page), read, quarantined)
        swept = await self.artifacts.sweep()
        done = await self.store.finish(now_ms())
        for hook in self.counts.passes:
            hook()
        log.info(
            "scrub: pass done, %d blobs (%d bytes) read, %d quarantined, %d unreferenced deleted",
            done.last_blobs,
            done.last_bytes,
            done.last_quarantined,
            swept,
        )

    async def _check(self, sha256: str, size: int, pacer: Pacer) -> tuple[int, bool]:
        """Read one blob back: answers the bytes read and whether it was quarantined."""
        storage = self.artifacts.storage
        try:
            seen = await storage.stat(sha256)
            digest, length = await self._hash(sha256, pacer)
        except BlobNotFound:
            if not await self.source.references(sha256):
                return 0, False  # deleted while the pass went on: nothing to serve, nothing to find
            if await self.artifacts.quarantined.among([sha256]):
                return 0, False  # quarantined already
            blob = await self.artifacts.quarantine(sha256, size, "missing from the blob store")
            return 0, blob is not None
        for hook in self.counts.checked:
            hook(length)
        if digest == sha256 and length == size:
            await self.artifacts.restored([sha256])  # right bytes, if still held back: serve them again
            return length, False
        reason = f"sha256 mismatch: its {length} stored bytes hash to {digest}"
        return length, await self.artifacts.quarantine(sha256, size, reason, seen) is not None

    async def _hash(self, sha256: str, pacer: Pacer) -> tuple[str, int]:
        hasher = hashlib.sha256()
        length = 0
        async with aclosing(await self.artifacts.storage.read(sha256)) as chunks:
            async for chunk in chunks:
                if len(chunk) >= HASH_IN_THREAD:
                    await asyncio.to_thread(hasher.update, chunk)
                else:
                    hasher.update(chunk)
                length += len(chunk)
                await pacer.spent(len(chunk))
                await self._keep_lease()
        return hasher.hexdigest(), length

    async def _keep_lease(self) -> None:
        if time.monotonic() - self._renewed < LEASE_SECONDS / 3:
            return
        if not await self.leases.take(LEASE, LEASE_SECONDS):
            raise LeaseLost()
        self._renewed = time.monotonic()


def _log_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("scrub: the pass asked for stopped on an error", exc_info=task.exception())
