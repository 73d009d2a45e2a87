"""Receiving a blob upload's body into staging, and the uploads of each transaction under way.

A transaction can end (abort, expiry, a full disk) while its blobs are still arriving.
Its end must not pull the staging folder from under an upload that is writing there, nor
leave that upload to fail on a file that is gone. So every upload registers with
``InFlight`` before it looks at the transaction's state; the end marks the transaction
in the database first, then stops each upload it finds (its body read is interrupted at
once, wherever it waits) and waits for them to let go of their staged files. Only then
is the staging freed. An upload that registers later finds the transaction ended and is
refused before it stages anything. Each stopped upload answers 409 (``TransactionEnded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from repository.errors import BadRequest, Conflict, RepositoryError
from wire.protocol import RECEIVED_BYTES

from .pace import PaceGuard, UploadTooSlow
from .raw_body import RawBody, Receivers
from .staging import IO_CHUNK, IO_PIECES, StagedBytes

# sha256s named in one error message, at most
LISTED_IN_ERRORS = 10
# How often uploads under way look whether another worker ended their transaction.
WATCH_SECONDS = 1.0

log = logging.getLogger(__name__)


def listed(items: list[str]) -> str:
    """The first few items, and how many more."""
    more = f" and {len(items) - LISTED_IN_ERRORS} more" if len(items) > LISTED_IN_ERRORS else ""
    return ", ".join(items[:LISTED_IN_ERRORS]) + more


class BlobRefused(RepositoryError):
    """The bytes sent are not the blob the manifest lists; nothing of them is kept."""

    status = 422
    default_message = "Blob refused"


class ResumeMismatch(RepositoryError):
    """A resumed upload that does not start where the staged bytes end."""

    status = 416
    default_message = "Content-Range does not start at the bytes received so far"

    def __init__(self, received: int) -> None:
        super().__init__(
            f"Content-Range must start at byte {received}, the bytes received so far",
            headers={RECEIVED_BYTES: str(received)},
        )


class TransactionEnded(Conflict):
    """An upload cut off because its transaction ended (aborted or expired) while it was under way."""

    def __init__(self, tx_id: str, state: str) -> None:
        super().__init__(
            f"Transaction {tx_id} was {state.lower()} while this upload was under way; nothing of it is kept"
        )


@dataclass(eq=False)
class Upload:
    """One upload under way. ``stop`` records why it must end and interrupts its body read."""

    task: asyncio.Task[object] | None
    done: asyncio.Future[None]
    ended: TransactionEnded | None = None
    # wakes a body read that waits for bytes, making it raise the exception it is given
    interrupt: Callable[[BaseException], None] | None = None

    def stop(self, exc: TransactionEnded) -> None:
        self.ended = exc
        if self.interrupt is not None:
            self.interrupt(exc)

    def on_stop(self, interrupt: Callable[[BaseException], None]) -> None:
        """How to interrupt the body read from now on; at once if the upload is stopped already."""
        self.interrupt = interrupt
        if self.ended is not None:
            interrupt(self.ended)

    def check(self) -> None:
        """Raise TransactionEnded if the upload has been stopped."""
        if self.ended is not None:
            raise self.ended


@dataclass
class InFlight:
    """The uploads under way, by transaction, in this process.

    Another worker of the node may end a transaction whose uploads run here: while any does,
    a watcher asks ``ended`` every ``WATCH_SECONDS`` and stops them as the end in this process
    would, so they let go of the staging the other worker frees.
    """

    ended: Callable[[str], Awaitable[str | None]] | None = None
    _uploads: dict[str, set[Upload]] = field(default_factory=dict)
    _watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    @contextlib.contextmanager
    def upload(self, tx_id: str) -> Iterator[Upload]:
        """Register an upload of ``tx_id`` for as long as it uses the transaction's staging."""
        upload = Upload(asyncio.current_task(), asyncio.get_running_loop().create_future())
        self._uploads.setdefault(tx_id, set()).add(upload)
        if self.ended is not None and tx_id not in self._watchers:
            self._watchers[tx_id] = asyncio.create_task(self._watch(tx_id, self.ended), name=f"watch {tx_id}")
        try:
            yield upload
        finally:
            uploads = self._uploads.get(tx_id, set())
            uploads.discard(upload)
            if not uploads:
                self._uploads.pop(tx_id, None)
                watcher = self._watchers.pop(tx_id, None)
                if watcher is not None:
                    watcher.cancel()
            upload.done.set_result(None)

    async def _watch(self, tx_id: str, ended: Callable[[str], Awaitable[str | None]]) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                state = await ended(tx_id)
            except Exception:  # the next look tries again
                log.exception("looking whether transaction %s ended failed", tx_id)
                continue
            if state is not None:
                for upload in list(self._uploads.get(tx_id, ())):
                    upload.stop(TransactionEnded(tx_id, state))

    async def stop(self, tx_id: str, state: str) -> None:
        """Stop every upload of ``tx_id`` under way, but the caller's own, and wait until each has
        let go of its staged file. The caller has already marked the transaction ``state``."""
        me = asyncio.current_task()
        others = [u for u in self._uploads.get(tx_id, ()) if u.task is not me]
        for upload in others:
            upload.stop(TransactionEnded(tx_id, state))
        if others:
            await asyncio.wait([u.done for u in others])


def resume_offset(content_range: tuple[int, int, int] | None, size: int, declared: int | None) -> int | None:
    """Where a PUT's bytes start: ``bytes first-last/total`` must run to the end of the blob."""
    if content_range is None:
        return None
    first, last, total = content_range
    if total != size:
        raise BlobRefused(f"Content-Range says {total} bytes; the manifest says {size}")
    if last != size - 1 or first > last:
        raise BadRequest(f"Content-Range must run from the resume offset to byte {size - 1}")
    if declared is not None and declared != last - first + 1:
        raise BadRequest("Content-Length does not match Content-Range")
    return first


async def append_all(staged: StagedBytes, chunks: AsyncIterator[bytes], size: int, guard: PaceGuard) -> None:
    """Write the body into ``staged`` a megabyte at a time from a thread; more than ``size``
    bytes in all is refused, and so is a body slower than ``guard`` allows (only the reads
    are timed out, never a write in progress). What arrived before a dropped connection is
    still written."""
    pending: list[bytes] = []
    buffered = 0
    try:
        while (chunk := await guard.read(chunks)) is not None:
            if staged.size + buffered + len(chunk) > size:
                raise BlobRefused(f"{guard.what} is longer than its {size} bytes in the manifest")
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= IO_CHUNK or len(pending) >= IO_PIECES:
                full, pending, buffered = pending, [], 0
                await asyncio.to_thread(staged.append, full)
    except (BlobRefused, UploadTooSlow, TransactionEnded):
        raise
    except BaseException:
        if pending:
            await asyncio.to_thread(staged.append, pending)
        raise
    if pending:
        await asyncio.to_thread(staged.append, pending)


async def receive_raw(
    staged: StagedBytes, body: RawBody, guard: PaceGuard, receivers: Receivers, upload: Upload
) -> None:
    """Stage a body taken from aiohttp (edge/raw_body.py): what aiohttp had read, then the rest
    straight from the socket in a worker thread. A cancelled or stopped upload stops the thread
    and waits for it, so the staged file is never used by two at once."""
    if body.buffered:
        guard.received += len(body.buffered)
        await asyncio.to_thread(staged.append, [body.buffered])
    stop = threading.Event()
    upload.on_stop(lambda _exc: stop.set())
    receiving = asyncio.ensure_future(receivers.run(staged.receive, body.sock, body.remaining, guard, stop))
    try:
        await asyncio.shield(receiving)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([receiving])
        raise
    except ConnectionAbortedError:
        upload.check()  # stopped because the transaction ended: say that
        raise
