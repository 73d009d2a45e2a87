"""Pull mode: the edge polls the Distribution service for its work and runs it from its side.

Every ``pull.interval`` seconds (with jitter), in one process of the node (the lease
``pull``, as the scrub has), the edge asks the service for the jobs addressed to it and runs
them in order, each through the same receiver a pushed transaction goes through
(``Transactions``): the signed manifest is fetched to a file and started exactly as a pushed
start (verified with the edge's own trusted keys, paths and conflicts checked), only the blobs
its ``missing`` pages list are downloaded, each resumed by ``Range`` from the bytes staged
after a dropped connection, and the commit publishes the bundle at once. A removal goes
through the same removal path an undistribute's DELETE does. The edge reports progress,
then Completed (with what it publishes, which the service checks) or Failed with its words.

What a job has reached is in the database (``pull_jobs``, the transaction and its staging),
so a restart goes on where it was. Each report's answer says whether the job still runs on
the service: an abort there aborts the transaction here. A job that leaves the work list
while the edge was away is looked up once, and its open transaction aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from repository.db import Database
from repository.errors import NotFound
from repository.leases import Leases
from repository.together import together
from wire import pull
from wire.errors import WireError
from wire.protocol import TransactionState as State

from .pull_client import ServiceClient, ServiceRefused, ServiceUnavailable
from .pull_jobs import LocalJob, PullJobs
from .pull_settings import PullSettings
from .receiving import BlobRefused
from .store import Transaction
from .transactions import Transactions

log = logging.getLogger(__name__)

LEASE = "pull"
USER = "distribution (pull)"
# Tries of one blob in one run of a job: a dropped connection resumes, wrong bytes start over.
BLOB_TRIES = 5
# Seconds between progress reports of a running job, at least.
REPORT_EVERY = 1.0


class JobEnded(Exception):
    """The service says the job no longer runs (aborted): the edge stops it and aborts its transaction."""

    def __init__(self, state: pull.JobState) -> None:
        super().__init__(f"distribution {state.distribution_id} is {state.status} ({state.general_error})")


class Puller:
    def __init__(self, client: ServiceClient, transactions: Transactions, database: Database, settings: PullSettings):
        self.client = client
        self.transactions = transactions
        self.jobs = PullJobs(database)
        self.leases = Leases(database)
        self.settings = settings
        self._lease_seconds = max(3 * settings.interval, 30.0)

    async def run_forever(self) -> None:
        """Poll until cancelled; a round that fails is logged and the next one tries again."""
        while True:
            try:
                if await self.leases.take(LEASE, self._lease_seconds):
                    await self._keeping_lease(self.poll())
            except ServiceUnavailable as exc:
                log.warning("pull: %s; trying again at the next poll", exc.message)
            except Exception:
                log.exception("pull: the poll failed; trying again at the next poll")
            await asyncio.sleep(self.settings.interval * random.uniform(0.9, 1.1))

    async def _keeping_lease(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` while renewing the lease, so no other process polls meanwhile."""

        async def keep() -> None:
            while True:
                await asyncio.sleep(self._lease_seconds / 3)
                await self.leases.take(LEASE, self._lease_seconds)

        keeper = asyncio.create_task(keep())
        try:
            await work
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def poll(self) -> None:
        """One round: forget the jobs the service no longer lists, then run those it lists, in order."""
        work = await self.client.work()
        listed = {item.distribution_id for item in work}
        for local in await self.jobs.all():
            if local.item.distribution_id not in listed:
                await self._gone(local)
        for item in work:
            await self._run(item)

    async def _gone(self, local: LocalJob) -> None:
        """A job the edge had under way that the service no longer lists: ended there (an abort)."""
        try:
            state = await self.client.state(local.item.distribution_id)
        except ServiceRefused as exc:
            if exc.status != 404:
                raise
        else:
            if state.running:
                return  # beyond the first page of work: its turn comes
        await self._abort(local.transaction_id)
        await self.jobs.done(local.item.distribution_id)

    async def _run(self, item: pull.WorkItem) -> None:
        local = await self.jobs.begin(item)
        try:
            if item.type == pull.DISTRIBUTE:
                await self._distribute(local)
            else:
                await self._remove(item)
        except JobEnded as exc:
            log.info("pull: %s; its transaction is aborted here", exc)
            await self._abort((await self.jobs.begin(item)).transaction_id)
        except ServiceUnavailable:
            raise  # the job stays as it is; the next poll goes on with it
        except WireError as exc:
            if exc.status >= 500:
                raise
            log.warning("pull: distribution %s failed here: %s", item.distribution_id, exc.message)
            await self._abort((await self.jobs.begin(item)).transaction_id)
            report = pull.Report(pull.FAILED, 0, 0, error=exc.message[: pull.MAX_ERROR])
            with contextlib.suppress(JobEnded):
                await self.report(item, report)
        await self.jobs.done(item.distribution_id)

    async def _abort(self, tx_id: str | None) -> None:
        """Abort an open transaction; a committed one stays (the bundle is there)."""
        if tx_id is None:
            return
        with contextlib.suppress(NotFound, WireError):
            await self.transactions.abort(tx_id)

    async def report(self, item: pull.WorkItem, report: pull.Report) -> None:
        state = await self.client.report(item.distribution_id, report)
        if not state.running and report.state == pull.IN_PROGRESS:
            raise JobEnded(state)

    async def _open(self, local: LocalJob) -> Transaction:
        """The job's transaction: the one an earlier run opened, if still open or committed; else
        the manifest fetched again and started as a pushed start is."""
        if local.transaction_id is not None:
            tx = await self.transactions.store.get(local.transaction_id)
            if tx is not None and tx.state in (State.OPEN, State.COMMITTED):
                return tx
        item = local.item
        path = await self.transactions.staging.scratch()
        try:
            sha256, signature = await self.client.manifest_to(item.name, item.version, path)
            started = await self.transactions.start(path, sha256, signature)
        finally:
            await asyncio.to_thread(path.unlink, True)
        await self.jobs.opened(item.distribution_id, started.transaction.id)
        return started.transaction

    async def _distribute(self, local: LocalJob) -> None:
        item = local.item
        tx = await self._open(local)
        progress = Progress(self, item, tx)
        await progress.report(force=True)
        semaphore = asyncio.Semaphore(self.settings.parallel_blobs)

        async def fetch(sha256: str, size: int) -> None:
            async with semaphore:
                await self._fetch(tx.id, sha256, size, progress)

        after = ""
        while blobs := await self.transactions.store.blob_page(tx.id, after):
            held = await self.transactions.held.held(blobs, stored=tx.state is State.COMMITTED)
            progress.held(sum(1 for s in blobs if s in held), sum(n for s, n in blobs.items() if s in held))
            await together(*(fetch(s, n) for s, n in blobs.items() if s not in held))
            await progress.report()
            after = max(blobs)
        await progress.report(force=True)  # the last word before the commit: aborted meanwhile?
        await self.transactions.commit(tx.id, USER)
        published = await self.transactions.published(tx)
        summary = pull.Published(published.files, published.bytes, published.sha256)
        report = pull.Report(pull.COMPLETED, min(published.files, tx.files), min(published.bytes, tx.bytes),
                             tx.id, published=summary)  # fmt: skip
        await self.report(item, report)
        log.info("pull: distribution %s: %s/%s committed", item.distribution_id, item.name, item.version)

    async def _fetch(self, tx_id: str, sha256: str, size: int, progress: Progress) -> None:
        """One blob into the transaction, resumed from what is staged after a dropped connection;
        bytes that are not the blob are refused and fetched again, ``BLOB_TRIES`` times in all."""
        uploads = self.transactions.uploads
        for attempt in range(1, BLOB_TRIES + 1):
            offset = await uploads.received(tx_id, sha256)
            if offset == size:
                break
            try:
                async with self.client.blob(sha256, offset, size) as resp:
                    # What arrived, as it arrives: aiohttp drops the bytes it still buffers when the
                    # link breaks, and reading in large chunks lets it buffer twice that much, so
                    # a cut would leave nothing staged to resume from.
                    chunks = resp.content.iter_any()

                    def body(chunks: AsyncIterator[bytes] = chunks) -> AsyncIterator[bytes]:
                        return chunks

                    await uploads.upload(
                        tx_id,
                        sha256,
                        body,
                        content_range=(offset, size - 1, size) if offset else None,
                        declared=size - offset,
                        interrupt=resp.content.set_exception,
                    )
                break
            except (ServiceUnavailable, BlobRefused, aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                if attempt == BLOB_TRIES and isinstance(exc, BlobRefused):
                    raise BlobRefused(f"blob {sha256} could not be fetched whole and right: {exc}") from None
                if attempt == BLOB_TRIES:  # the service or the link: the next poll tries again
                    raise ServiceUnavailable(f"blob {sha256} could not be fetched: {exc}") from None
                log.info("pull: blob %s, try %d: %s; resuming", sha256, attempt, exc)
        await progress.landed(size)

    async def _remove(self, item: pull.WorkItem) -> None:
        """The bundle removed through the undistribute path, a bounded part per step, each reported."""
        while True:
            try:
                step = await self.transactions.delete_bundle(item.name, item.version)
            except NotFound:
                break
            if step.done:
                break
            await self.report(item, pull.Report(pull.IN_PROGRESS, step.removed, 0))
        await self.report(item, pull.Report(pull.COMPLETED, 0, 0))
        log.info("pull: removal %s: %s/%s removed", item.distribution_id, item.name, item.version)


class Progress:
    """A running distribution's counts (blobs held, bytes held), reported at most every REPORT_EVERY."""

    def __init__(self, puller: Puller, item: pull.WorkItem, tx: Transaction) -> None:
        self.puller, self.item, self.tx = puller, item, tx
        self.files = self.bytes = 0
        self._last = 0.0

    def held(self, files: int, size: int) -> None:
        self.files += files
        self.bytes += size

    async def landed(self, size: int) -> None:
        self.held(1, size)
        await self.report()

    async def report(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < REPORT_EVERY:
            return
        self._last = time.monotonic()
        files, size = min(self.files, self.tx.files), min(self.bytes, self.tx.bytes)
        await self.puller.report(self.item, pull.Report(pull.IN_PROGRESS, files, size, self.tx.id))
