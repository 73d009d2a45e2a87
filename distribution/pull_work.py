"""The service's side of pull mode: the work a pull-mode edge polls for, and its reports.

The runner never pushes to a pull-mode edge (``JobStore.claim`` skips them). Its jobs wait
``In queue`` until the edge polls, then move through the same JFrog states as any job, from
the edge's own reports: ``In progress`` with files and bytes, then ``Completed`` or
``Failed``. Completed means verified here as for a push: the edge reports the digest of what
it publishes (wire/published.py), and the service compares it with the manifest's own.
An abort marks the job ``Failed`` ("aborted"), which the edge reads in the answer to its next
report or poll and aborts its transaction. A report on a job that ended changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.errors import BadRequest, NotFound
from repository.sql import Sql
from wire import pull
from wire.published import PublishedDigest

from .bundle_store import SignedManifest
from .edges import Edge
from .job_states import COMPLETED, DELETE, DISTRIBUTE, FAILED, IN_PROGRESS, RUNNING
from .jobs import Job, JobStore
from .runner import JobRunner

log = logging.getLogger(__name__)

_OF_EDGE = (
    "FROM distribution_jobs j JOIN distributions d ON d.id = j.distribution_id"
    " WHERE j.edge = :edge AND j.service_id = :service_id"
)


class PullWork:
    """What a pull-mode edge may see and change: only its own jobs, bundles and blobs."""

    def __init__(self, runner: JobRunner, database: Database) -> None:
        self.runner = runner
        self._database = database
        self.jobs = JobStore(database)  # no lease: a pull edge's job runs on the edge, not in a runner

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def work(self, edge: Edge) -> list[pull.WorkItem]:
        """The edge's running jobs, oldest first (a poll is the edge's sign of life)."""
        await self.runner.edges.record_health(edge.name, True)
        rows = await self._database.read(
            lambda: self._db.execute(
                f"SELECT j.distribution_id, d.type, d.name, d.version {_OF_EDGE}"
                f" AND j.state IN ('{RUNNING[0]}', '{RUNNING[1]}') ORDER BY j.distribution_id LIMIT {pull.WORK_PAGE}",
                _edge(edge),
            ).fetchall()
        )
        return [pull.WorkItem(*row) for row in rows]

    async def _job(self, edge: Edge, distribution_id: int) -> Job:
        job = await self.jobs.job((distribution_id, edge.name))
        if job is None or job.service_id != edge.service_id:
            raise NotFound(f"No distribution {distribution_id} to edge {edge.name}")
        return job

    async def state(self, edge: Edge, distribution_id: int) -> pull.JobState:
        job = await self._job(edge, distribution_id)
        return pull.JobState(job.distribution_id, job.state, job.general_error)

    async def report(self, edge: Edge, distribution_id: int, report: pull.Report) -> pull.JobState:
        """Move the job by the edge's report; answers where it stands now. A report that does not
        fit the job (counts beyond its totals, a Completed distribution without what it publishes)
        is a 400 and changes nothing."""
        job = await self._job(edge, distribution_id)
        _check_fits(job, report)
        if job.state in RUNNING:
            if report.state == IN_PROGRESS:
                await self._progress(job, report)
            elif report.state == FAILED:
                await self._end(job, FAILED, f"edge {edge.name}: {report.error}")
            else:
                await self._complete(job, report)
        return await self.state(edge, distribution_id)

    async def _progress(self, job: Job, report: pull.Report) -> None:
        fields: dict[str, Any] = {
            "state": IN_PROGRESS,
            "distributed_files": report.distributed_files,
            "distributed_bytes": report.distributed_bytes,
            "general_error": "",
        }
        if report.transaction_id is not None:
            fields["transaction_id"] = report.transaction_id
        if job.started is None:
            fields["started"] = now_ms()
        await self.jobs.update(job.key, **fields)

    async def _complete(self, job: Job, report: pull.Report) -> None:
        if job.type == DISTRIBUTE:
            assert report.published is not None  # _check_fits
            error = await self._unverified(job, report.published)
            if error:
                await self._end(job, FAILED, error)
                return
        totals = {"distributed_files": job.total_files, "distributed_bytes": job.total_bytes}
        started = {"started": now_ms()} if job.started is None else {}
        await self.jobs.update(job.key, **totals, **started)
        await self._end(job, COMPLETED)

    async def _unverified(self, job: Job, published: pull.Published) -> str:
        """Why what the edge publishes is not the manifest (as ``Push.verify`` says it), or ""."""
        digest = PublishedDigest()
        async for page in self.runner.bundles.store.artifact_pages(job.name, job.version):
            digest.add((a.target, a.sha256, a.size) for a in page)
        if published.sha256 == digest.hexdigest():
            return ""
        return (
            f"verification failed on edge {job.edge}: it publishes {published.files} files ({published.bytes}"
            f" bytes), digest {published.sha256}, where the manifest lists {digest.files} files"
            f" ({digest.bytes} bytes), digest {digest.hexdigest()}"
        )

    async def _end(self, job: Job, state: str, error: str = "") -> None:
        if state == FAILED:
            log.warning("job %s to pull-mode edge %s failed: %s", job.distribution_id, job.edge, error)
        done = await self.jobs.finish(job.key, state, error)
        if done is not None:
            await self.runner.distribution_done(done)

    async def manifest(self, edge: Edge, name: str, version: str) -> SignedManifest:
        """The signed manifest of a bundle version distributed to the edge; 404 for any other."""
        row = await self._database.read(
            lambda: self._db.execute(
                f"SELECT 1 {_OF_EDGE} AND d.type = :type AND d.name = :name AND d.version = :version LIMIT 1",
                _edge(edge) | {"type": DISTRIBUTE, "name": name, "version": version},
            ).fetchone()
        )
        signed = await self.runner.bundles.store.signed_manifest(name, version) if row else None
        if signed is None:
            raise NotFound(f"No release bundle {name}/{version} distributed to edge {edge.name}")
        return signed

    async def holds_blob(self, edge: Edge, sha256: str) -> bool:
        """Whether ``sha256`` belongs to a bundle version distributed to the edge: one of its files,
        or its SBOM (a blob the signed manifest names, which the edge's transaction asks for too)."""
        params = _edge(edge) | {"sha256": sha256, "type": DISTRIBUTE}

        def held() -> bool:
            return any(
                self._db.execute(
                    f"SELECT 1 FROM {table} a JOIN distributions d ON d.name = a.name AND d.version = a.version"
                    " JOIN distribution_jobs j ON j.distribution_id = d.id"
                    " WHERE a.sha256 = :sha256 AND d.type = :type AND j.edge = :edge AND j.service_id = :service_id"
                    " LIMIT 1",
                    params,
                ).fetchone()
                for table in ("bundle_artifacts", "bundle_sboms")
            )

        return await self._database.read(held)


def _edge(edge: Edge) -> dict[str, str]:
    return {"edge": edge.name, "service_id": edge.service_id}


def _check_fits(job: Job, report: pull.Report) -> None:
    if report.distributed_files > job.total_files or report.distributed_bytes > job.total_bytes:
        raise BadRequest(
            f"The report counts {report.distributed_files} files ({report.distributed_bytes} bytes);"
            f" the job has {job.total_files} files ({job.total_bytes} bytes)"
        )
    if report.state == pull.COMPLETED and job.type == DISTRIBUTE and report.published is None:
        raise BadRequest("A Completed distribution reports what the edge publishes ('published')")
    if job.type == DELETE and (report.published is not None or report.transaction_id is not None):
        raise BadRequest("A removal reports no 'published' and no 'transaction_id'")
