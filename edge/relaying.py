"""A parent edge relaying bundles it committed to its child edges (docs/tiers.md).

The Distribution service pushes a bundle once to the parent and then asks it to relay the
committed transaction to each child. The parent runs the same two-phase transaction the
service runs (``transfer``): start with the same manifest bytes and signature, upload only
what the child says it misses, commit, and verify that the child publishes exactly what the
parent does. The child verifies the signature and every sha256 itself with its own trusted
keys: the parent is trusted no more than a wire.

Relays are rows in the database (``RelayStore``); one process of the node (the one that
started it) runs every RUNNING relay, so a relay cut short by a crash goes on by itself when
the edge starts again, and an abort recorded by any process stops it at its next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from storage_backends import StorageBackend
from transfer.client import EdgeCallError, EdgeClient, EdgeGarbage, EdgeRefused, EdgeServerError, ManifestSource
from transfer.sending import BlobSender, SourceMissing
from wire.protocol import RelayState, TransactionState

from .relay_store import Relay, RelayStore
from .store import EdgeStore

log = logging.getLogger(__name__)
T = TypeVar("T")

LOOK_SECONDS = 1.0  # how often RUNNING relays another process recorded are looked for
FLUSH_SECONDS = 0.5
READ_TIMEOUT = 60.0
BLOB_CONCURRENCY = 4
BACKOFF_CAP = 5.0
MAX_SERVER_ERRORS = 10


class RelayEnded(Exception):
    """The relay is no longer RUNNING in the database (aborted): stop sending."""


@dataclass
class Counters:
    distributed_files: int = 0
    distributed_bytes: int = 0
    sent_bytes: int = 0

    def on_bytes(self, n: int) -> None:
        self.sent_bytes += n
        self.distributed_bytes += n

    def on_landed(self, _sha: str, _sent: bool) -> None:
        self.distributed_files += 1

    def fields(self) -> dict[str, int]:
        return {
            "distributed_files": self.distributed_files,
            "distributed_bytes": self.distributed_bytes,
            "sent_bytes": self.sent_bytes,
        }


class Relayer:
    """Runs every RUNNING relay of the node, each in a task of its own."""

    def __init__(
        self,
        relays: RelayStore,
        store: EdgeStore,
        storage: StorageBackend,
        published: Callable[[str], Awaitable[str]],
        session: aiohttp.ClientSession,
    ) -> None:
        self.relays, self.store, self.storage, self.session = relays, store, storage, session
        self._published = published
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    for relay in await self.relays.running():
                        if relay.key not in self._tasks:
                            task = asyncio.create_task(self._run(relay), name=f"relay {relay.child}")
                            self._tasks[relay.key] = task
                            task.add_done_callback(functools.partial(self._done, relay.key))
                except Exception:
                    log.exception("relays: cannot look for relays to run")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), LOOK_SECONDS)
                self._wake.clear()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    async def _run(self, relay: Relay) -> None:
        """Try until the child commits, refuses, or the relay is aborted; a retry can always
        start again, since every step of the transaction is idempotent."""
        server_errors = attempt = 0
        counters = Counters()
        while True:
            attempt += 1
            try:
                await self._relay_once(relay, counters)
            except RelayEnded:
                await self._stopped(relay)
                return
            except EdgeCallError as exc:
                server_errors += isinstance(exc, EdgeServerError)
                if not exc.retryable or server_errors >= MAX_SERVER_ERRORS:
                    log.warning("relay of %s to %s failed: %s", *relay.key, exc.message)
                    await self.relays.end(relay.key, RelayState.FAILED, exc.message)
                    return
                log.info("relay of %s to %s: retry %s: %s", *relay.key, attempt, exc.message)
                try:  # an abort makes the child refuse uploads: it must not start the transaction again
                    await self._flush(relay, counters, error=f"retrying (attempt {attempt}): {exc.message}")
                except RelayEnded:
                    await self._stopped(relay)
                    return
                await asyncio.sleep(min(BACKOFF_CAP, 0.25 * 2**attempt))
                continue
            except Exception as exc:
                log.exception("relay of %s to %s: unexpected error", *relay.key)
                await self.relays.end(relay.key, RelayState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
                return
            await self.relays.end(
                relay.key,
                RelayState.COMMITTED,
                distributed_files=relay.total_files,
                distributed_bytes=relay.total_bytes,
                sent_bytes=counters.sent_bytes,
            )
            log.info("relay of %s to %s: committed and verified", *relay.key)
            return

    async def _stopped(self, relay: Relay) -> None:
        """The relay was aborted: abort the child's transaction too. The service aborts it as
        well, but a start this relay sent in the meantime may have opened it again after that;
        best effort, as the child frees an open transaction's staging when it expires."""
        log.info("relay of %s to %s stopped: no longer running", *relay.key)
        try:
            await EdgeClient(self.session, relay, read_timeout=READ_TIMEOUT).abort(relay.transaction_id)
        except EdgeCallError as exc:  # 404: never opened; 409: committed there (by a direct push)
            log.info("relay of %s to %s: the child's transaction not aborted: %s", *relay.key, exc.message)

    async def _still_running(self, relay: Relay) -> None:
        """Raise ``RelayEnded`` unless the relay is still RUNNING; its counters stay as they are."""
        current = await self.relays.get(*relay.key)
        if current is None or current.state != RelayState.RUNNING:
            raise RelayEnded

    async def _flush(self, relay: Relay, counters: Counters, error: str = "") -> None:
        if not await self.relays.progress(relay.key, error, **counters.fields()):
            raise RelayEnded

    async def _relay_once(self, relay: Relay, counters: Counters) -> None:
        tx_id = relay.transaction_id
        tx = await self.store.get(tx_id)
        if tx is None or tx.state != TransactionState.COMMITTED:
            raise EdgeRefused(f"transaction {tx_id} is not committed on the parent edge any more")
        client = EdgeClient(self.session, relay, read_timeout=READ_TIMEOUT)
        await self._still_running(relay)  # aborted while this attempt waited to begin?
        size = await self.relays.manifest_size(tx_id)
        manifest = ManifestSource(size, await self.store.signature(tx_id), lambda: self.store.manifest_chunks(tx_id))
        started = await client.start(manifest)
        if started["transaction_id"] != tx_id:
            raise EdgeGarbage(f"edge {relay.child} answered start with transaction {started['transaction_id']!r}")
        missing = functools.partial(client.missing, tx_id, started)
        lacking_files = lacking_bytes = 0
        async for page in missing():
            sizes = await self._sizes(relay, page)
            lacking_files += len(sizes)
            lacking_bytes += sum(sizes.values())
        counters.distributed_files = max(0, relay.total_files - lacking_files)
        counters.distributed_bytes = max(0, relay.total_bytes - lacking_bytes)
        flusher = asyncio.create_task(self._keep_flushing(relay, counters))
        try:
            sender = BlobSender(
                client,
                self.storage,
                BLOB_CONCURRENCY,
                counters.on_bytes,
                counters.on_landed,
                source="the parent edge's storage",
            )
            async for page in missing():
                await _racing(flusher, sender.upload_all(tx_id, page, await self._sizes(relay, page)))
            await self._still_running(relay)  # the last word before the commit: aborted meanwhile?
            try:
                committed = await _racing(flusher, client.commit(tx_id))
            except EdgeRefused as exc:
                if exc.status != 409:
                    raise
                # blobs went missing on the child between upload and commit: start again
                raise EdgeServerError(f"{exc.message}; starting the transaction again", 409) from None
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        if committed["state"] != TransactionState.COMMITTED:
            raise EdgeGarbage(f"edge {relay.child} answered commit with state {committed['state']!r}")
        await self._verify(client, relay)

    async def _sizes(self, relay: Relay, page: list[str]) -> dict[str, int]:
        if not all(isinstance(m, str) for m in page):
            raise EdgeGarbage(f"edge {relay.child} names missing blobs that are not sha256 strings")
        sizes = await self.storage.sizes(page)
        if lacking := [m for m in page if m not in sizes]:
            raise SourceMissing(f"blob {lacking[0]} that edge {relay.child} asks for is not on the parent edge")
        return sizes

    async def _keep_flushing(self, relay: Relay, counters: Counters) -> None:
        """Write the counters every ``FLUSH_SECONDS``, which also finds out about an abort."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self._flush(relay, counters)

    async def _verify(self, client: EdgeClient, relay: Relay) -> None:
        """The child publishes exactly what this parent publishes of the bundle (wire/published.py)."""
        status = await client.status(relay.transaction_id)
        published = status.get("published")
        ours = await self._published(relay.transaction_id)
        theirs = published.get("sha256") if isinstance(published, dict) else None
        if status["state"] != TransactionState.COMMITTED or status.get("missing") or theirs != ours:
            raise EdgeRefused(
                f"verification failed on edge {relay.child}: it reports transaction {relay.transaction_id} as"
                f" {status['state']} with {len(status.get('missing') or [])} blobs missing and published digest"
                f" {theirs}, where the parent publishes digest {ours}"
            )


async def _racing(flusher: asyncio.Task[None], work: Awaitable[T]) -> T:
    """Await ``work`` unless the flusher ends first (the relay was aborted): then stop it."""
    job = asyncio.ensure_future(work)
    await asyncio.wait({job, flusher}, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        return job.result()
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    flusher.result()  # raises RelayEnded
    raise RelayEnded
