"""The audit trail: one record per decision or download, written off the hot path in batches.

A request only appends its record to a list. A background task writes the list to
sqlite at least every ``flush_interval`` seconds (at most one second), in one
transaction with the download statistics it implies, and once more on shutdown.
A batch that cannot be written stays queued and is retried, so a passing database
error loses nothing. Records are never changed afterwards; only retention removes
those older than ``retention_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import NamedTuple

from repository.quarantine import QuarantinedBlob

from .audit_store import AuditStore

log = logging.getLogger(__name__)

# A burst this large is written at once rather than at the next tick.
EAGER_BATCH = 5000
# How often old records are looked for, when retention is on.
PRUNE_INTERVAL = 3600.0


class AuditRecord(NamedTuple):
    """One line of the trail. A tuple, made positionally on the hot path: cheaper to build than an object."""

    time: int  # epoch ms, when the response was finished
    subject: str  # user, token subject, signed URL issuer, or "anonymous"
    token_id: str | None
    signed_kid: str | None
    signed_iat: int | None
    client_ip: str | None
    country: str | None
    method: str
    action: str  # download, deploy, delete, read, admin, distribute, other
    repo: str | None
    path: str | None
    status: int
    bytes: int  # body bytes handed to the kernel
    denied_by: str | None
    aborted: bool  # the client went away before the response was complete
    duration_ms: int
    # a download in the statistics' sense: a GET that delivered (or redirected to) the file's last byte
    counts_as_download: bool = False
    # the member repo that served a download of a virtual repo (``repo`` names the virtual one)
    served_from: str | None = None


def quarantine_records(blob: QuarantinedBlob, paths: list[tuple[str, str]]) -> list[AuditRecord]:
    """What the trail keeps of a blob taken out of service: a record for each path that now
    answers 409 (one without a path when none names it), naming the blob and the reason."""
    why = f"quarantine: blob {blob.sha256}: {blob.reason}"
    where: list[tuple[str | None, str | None]] = list(paths) or [(None, None)]
    return [
        AuditRecord(time=blob.found, subject="system", token_id=None, signed_kid=None, signed_iat=None,
                    client_ip=None, country=None, method="-", action="quarantine", repo=repo, path=path,
                    status=409, bytes=0, denied_by=why, aborted=False, duration_ms=0)
        for repo, path in where
    ]  # fmt: skip


class AuditTrail:
    def __init__(self, store: AuditStore, *, enabled: bool, flush_interval: float, retention_days: int) -> None:
        self.store = store
        # off: nothing is recorded; what was recorded before can still be read
        self.enabled = enabled
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self._pending: list[AuditRecord] = []
        # what holds records not yet handed over (edge/finished.py's queue): settled before a write
        self.sources: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def record_quarantine(self, blob: QuarantinedBlob, paths: list[tuple[str, str]]) -> None:
        """``ArtifactService.on_quarantine``, while the trail is ``enabled``."""
        if self.enabled:
            for record in quarantine_records(blob, paths):
                self.record(record)

    def record(self, record: AuditRecord) -> None:
        """The hot path: append, and wake the writer only for a large burst."""
        self._pending.append(record)
        if len(self._pending) >= EAGER_BATCH:
            self._wake.set()
        if self._closed:
            log.warning("audit record after shutdown, not written: %s", record)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self.enabled:
            self._tasks.append(asyncio.create_task(self._flush_forever(), name="audit-flush"))
        if self.retention_days:
            self._tasks.append(asyncio.create_task(self._prune_forever(), name="audit-retention"))

    async def close(self) -> None:
        """Stop the background tasks, then write whatever is still queued."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        self._closed = True
        if self._pending:
            log.error("%d audit records could not be written at shutdown", len(self._pending))

    async def flush(self) -> int:
        """Write what is queued now in one transaction; answers how many records were written."""
        for settle in self.sources:
            settle()
        batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            await self.store.write(batch)
        except Exception:
            self._pending[:0] = batch  # keep order; retried on the next tick
            raise
        return len(batch)

    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing %d audit records failed; retrying", len(self._pending))

    async def prune(self) -> int:
        return await self.store.prune(self.retention_days)

    async def _prune_forever(self) -> None:
        while True:
            try:
                removed = await self.prune()
                if removed:
                    log.info("audit retention removed %d records older than %d days", removed, self.retention_days)
            except Exception:
                log.exception("audit retention failed")
            await asyncio.sleep(PRUNE_INTERVAL)
