"""The job runner: a background task that pushes queued jobs to their edges, retrying until they end.

It picks due jobs from the database (so jobs left unfinished by a crash or a stop resume when
the service starts again), runs at most ``max_parallel_edges`` at once and one per edge,
and after a failure either ends the job (``Failed`` with the edge's own words) or, when
a retry can help, schedules the next attempt with exponential backoff. An unreachable
edge is retried until it answers, so an edge that was offline catches up by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from repository.catalog import now_ms
from repository.errors import NotFound
from repository.logs import current_request_id
from storage_backends import StorageBackend
from transfer.client import EdgeCallError, EdgeClient, EdgeRefused, EdgeServerError, EdgeUnreachable, ManifestSource
from transfer.sending import SourceMissing
from wire.protocol import Removal

from .bundles import BundleService
from .edges import EdgeStore
from .jobs import COMPLETED, DELETE, DISTRIBUTE, FAILED, IN_PROGRESS, Distribution, Job, JobStore
from .push import BundleView, Progress, Push, delete_from_edge
from .relays import Relays, Waiting
from .settings import DistributionSettings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
FLUSH_SECONDS = 0.5
EDGE_ABORT_TIMEOUT = 30.0
EDGE_ABORT_TRIES = 3


class JobRunner:
    def __init__(
        self,
        jobs: JobStore,
        edges: EdgeStore,
        bundles: BundleService,
        storage: StorageBackend,
        session: aiohttp.ClientSession,
        settings: DistributionSettings,
        on_sent: Callable[[str, int], None] | None = None,
    ) -> None:
        self.jobs, self.edges, self.bundles, self.storage = jobs, edges, bundles, storage
        self.on_sent = on_sent  # (edge, bytes) for every blob byte sent to an edge
        self.session = session
        self.settings = settings
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._progress: dict[tuple[int, str], Progress] = {}
        self._server_errors: dict[tuple[int, str], int] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.relays = Relays(session, edges, jobs, settings)

    def wake(self) -> None:
        """Look for due jobs now (a distribution was just made, a job ended)."""
        self._wake.set()

    def files_in_progress(self) -> dict[tuple[int, str], list[str]]:
        return {key: p.in_flight() for key, p in self._progress.items()}

    async def run(self) -> None:
        """The loop; cancelled on shutdown. Leases this replica held in a previous run are given
        back first (none of its jobs runs yet); those it takes are renewed while their jobs run."""
        await self.jobs.release_all()
        keeper = asyncio.create_task(self._keep_leases(), name="job leases")
        try:
            await self._loop()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self._schedule()
            except Exception:
                log.exception("job runner: cannot schedule jobs")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def _schedule(self) -> None:
        free = self.settings.max_parallel_edges - len(self._tasks)
        if free <= 0:
            return
        for job in await self.jobs.claim({edge for _, edge in self._tasks}, free, self._lease_ms):
            task = asyncio.create_task(self._run_job(job), name=f"job {job.distribution_id} {job.edge}")
            self._tasks[job.key] = task
            task.add_done_callback(functools.partial(self._job_done, job.key))

    def _job_done(self, key: tuple[int, str], _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        self._side_task(self.jobs.release(key))  # waiting for its next attempt: any replica may take it
        self.wake()

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.job_lease_seconds * 1000)

    async def _keep_leases(self) -> None:
        """Renew the leases of the jobs running here, three times a lease; a job whose lease was
        lost meanwhile (this replica stalled past it, another took the job over) stops here."""
        while True:
            await asyncio.sleep(self.settings.job_lease_seconds / 3)
            running = list(self._tasks)
            if not running:
                continue
            try:
                held = await self.jobs.renew(running, self._lease_ms)
            except Exception:
                log.exception("job runner: cannot renew the leases of the jobs running here")
                continue
            for key in running:
                task = self._tasks.get(key)
                if key not in held and task is not None:
                    log.warning("job %s to %s: its lease was lost; another replica goes on with it", *key)
                    task.cancel()

    async def close(self) -> None:
        """Stop every job where it is and every side task, and give their leases back: another
        replica goes on with them at once, or this one at its next start."""
        tasks = [*self._tasks.values(), *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # the database may be what stopped: the leases expire then
            await self.jobs.release_all()

    async def _run_job(self, job: Job) -> None:
        # One id per attempt, on this service's log lines and, as X-Request-ID, on the edge's.
        current_request_id.set(f"dist-{job.distribution_id}-{job.edge}-{job.attempts}")
        try:
            await self._attempt(job)
        except EdgeCallError as exc:
            await self._after_error(job, exc)
        except Exception as exc:
            log.exception("job %s to %s: unexpected error", job.distribution_id, job.edge)
            await self._end(job, FAILED, f"internal error: {type(exc).__name__}: {exc}")

    async def _attempt(self, job: Job) -> None:
        edge = await self.edges.get(job.edge)
        if edge is None or edge.service_id != job.service_id:
            await self._end(job, FAILED, f"edge {job.edge} is no longer registered")
            return
        client = EdgeClient(self.session, edge, read_timeout=self.settings.edge_read_timeout)
        if job.type == DELETE:
            await self._remove(job, client)
        elif edge.parent is not None:
            await self.relays.attempt(job, edge, functools.partial(self._push, job, client))
        else:
            await self._push(job, client)
        self._server_errors.pop(job.key, None)
        await self.edges.record_health(edge.name, True)
        await self._end(job, COMPLETED)

    async def _push(self, job: Job, client: EdgeClient) -> None:
        try:
            signed = await self.bundles.signed_manifest(job.name, job.version)
        except NotFound:
            raise SourceMissing(f"release bundle {job.name}/{job.version} no longer exists or is not signed") from None
        progress = Progress.of(job)
        if self.on_sent is not None:
            progress.on_sent = functools.partial(self.on_sent, job.edge)
        self._progress[job.key] = progress

        async def on_started(tx: str) -> None:
            fields = {"state": IN_PROGRESS, "transaction_id": tx, "general_error": "", "attempts": 0}
            await self.jobs.update(job.key, **fields, **({"started": now_ms()} if job.started is None else {}))

        flusher = asyncio.create_task(self._flush(job.key, progress))
        bundle = BundleView(self.bundles.store, job.name, job.version)
        manifest = ManifestSource(
            signed.size, signed.signature, functools.partial(self.bundles.store.manifest_chunks, signed)
        )
        push = Push(client, self.storage, manifest, progress, self.settings.max_parallel_blobs, on_started, bundle)
        try:
            await push.run()
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            self._progress.pop(job.key, None)
            await asyncio.shield(self.jobs.update(job.key, **progress.fields()))

    async def _remove(self, job: Job, client: EdgeClient) -> None:
        """Remove the bundle version from the edge a bounded step at a time, each step's count of
        files removed written to the job (In progress, files removed of total)."""
        first = True

        async def on_step(step: Removal) -> None:
            nonlocal first
            fields: dict[str, Any] = {"distributed_files": step.removed, "total_files": step.total}
            if first:
                fields |= {"state": IN_PROGRESS, "general_error": "", "attempts": 0}
                fields |= {"started": now_ms()} if job.started is None else {}
                first = False
            await self.jobs.update(job.key, **fields)

        await delete_from_edge(client, job.name, job.version, on_step)
        current = await self.jobs.job(job.key)
        if current is not None:
            await self.jobs.update(
                job.key, distributed_files=current.total_files, distributed_bytes=current.total_bytes
            )

    async def _flush(self, key: tuple[int, str], progress: Progress) -> None:
        """Write a running job's counters to the database at most every FLUSH_SECONDS, only when they moved."""
        seen = -1
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if progress.changes != seen:
                seen = progress.changes
                await self.jobs.update(key, **progress.fields())

    async def _after_error(self, job: Job, exc: EdgeCallError) -> None:
        if isinstance(exc, Waiting):  # a child's job between looks at its parent (relays.py)
            await self.jobs.update(job.key, next_attempt=now_ms() + int(exc.delay * 1000), general_error=exc.message)
            return
        unreachable = isinstance(exc, EdgeUnreachable)
        await self.edges.record_health(job.edge, not unreachable, exc.message if unreachable else None)
        if isinstance(exc, EdgeServerError):
            errors = self._server_errors[job.key] = self._server_errors.get(job.key, 0) + 1
            if errors >= self.settings.max_server_errors:
                await self._end(job, FAILED, f"{exc.message} (gave up after {errors} attempts)")
                return
        if not exc.retryable:
            await self._end(job, FAILED, exc.message)
            return
        current = await self.jobs.job(job.key)
        attempts = (current.attempts if current else job.attempts) + 1
        delay = min(self.settings.retry_backoff_cap, 0.5 * 2 ** min(attempts, 20)) * random.uniform(0.8, 1.0)
        log.info("job %s to %s: retry %s in %.1fs: %s", job.distribution_id, job.edge, attempts, delay, exc.message)
        await self.jobs.update(
            job.key,
            attempts=attempts,
            next_attempt=now_ms() + int(delay * 1000),
            general_error=f"retrying (attempt {attempts}): {exc.message}",
        )

    async def _end(self, job: Job, state: str, error: str = "") -> None:
        self._server_errors.pop(job.key, None)
        if state == FAILED:
            log.warning("job %s to %s failed: %s", job.distribution_id, job.edge, error)
            await self._abort_after_failure(job)
        done = await self.jobs.finish(job.key, state, error)
        if done is not None:
            await self.distribution_done(done)

    async def _abort_after_failure(self, job: Job) -> None:
        """A push that failed for good leaves no transaction open on its edge, holding what it
        staged until ``transaction_ttl``: it is aborted there, as an explicit abort does. Not
        when another running job pushes the same bundle version to that edge: it shares the
        transaction (its id is the manifest's sha256)."""
        current = await self.jobs.job(job.key)
        tx = current.transaction_id if current is not None else job.transaction_id
        if job.type != DISTRIBUTE or not tx:
            return
        if await self.jobs.sharing_transaction(job):
            return
        self._side_task(self._abort_on_edge(job.edge, tx))

    def _side_task(self, work: Coroutine[Any, Any, None]) -> None:
        """Work that outlives the job that asked for it (cancelled on shutdown)."""
        task = asyncio.create_task(work)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def distribution_done(self, done: Distribution) -> None:
        """A distribution just ended as a whole (its last job ended, here or by a pull-mode edge's report)."""
        log.info("distribution %s of %s/%s: %s", done.id, done.name, done.version, done.status)
        if done.type == DELETE and done.on_success == "delete" and done.status == COMPLETED:
            with contextlib.suppress(NotFound):
                await self.bundles.delete(done.name, done.version)
            log.info("release bundle %s/%s deleted from the service after removal from edges", done.name, done.version)

    async def abort(self, name: str, version: str) -> list[Job]:
        """Fail every running job of a bundle version as "aborted", stop them, and abort their edge transactions."""
        jobs = await self.jobs.abort(name, version)
        for job in jobs:
            task = self._tasks.get(job.key)
            progress = self._progress.get(job.key)
            tx = (progress.transaction_id if progress else None) or job.transaction_id
            if task is not None:
                task.cancel()
            if job.type == DISTRIBUTE and tx:
                self._side_task(self.relays.stop(job))
                self._side_task(self._abort_on_edge(job.edge, tx))
        return jobs

    async def _abort_on_edge(self, name: str, tx: str) -> None:
        """Best effort, tried ``EDGE_ABORT_TRIES`` times while a retry can help: an edge that
        cannot be reached frees the staging when the transaction expires there."""
        edge = await self.edges.get(name)
        if edge is None or edge.pulls:  # a pull-mode edge reads the abort at its next poll
            return
        client = EdgeClient(self.session, edge, read_timeout=self.settings.edge_read_timeout)
        for attempt in range(1, EDGE_ABORT_TRIES + 1):
            try:
                await asyncio.wait_for(client.abort(tx), EDGE_ABORT_TIMEOUT)
                log.info("aborted transaction %s on edge %s", tx, name)
                return
            except EdgeRefused as exc:
                if exc.status in (404, 409):  # gone, or committed there already: nothing to free
                    log.info("transaction %s on edge %s not aborted: %s", tx, name, exc.message)
                else:
                    log.warning("could not abort transaction %s on edge %s: %s", tx, name, exc.message)
                return
            except (EdgeCallError, TimeoutError) as exc:
                if attempt == EDGE_ABORT_TRIES or (isinstance(exc, EdgeCallError) and not exc.retryable):
                    log.warning("could not abort transaction %s on edge %s: %s", tx, name, exc)
                    return
            await asyncio.sleep(min(self.settings.retry_backoff_cap, 0.5 * 2**attempt))
