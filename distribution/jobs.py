"""Distributions and their jobs, one per (distribution, edge), kept in the service's database.

A job's state is one of JFrog's status strings, never another: ``In queue`` until the
edge first answers, ``In progress`` while it runs or waits to retry, then ``Completed``
(committed and verified) or ``Failed`` (with a ``general_error``). Every change to a
job is conditional on it still running, so an abort that lands first always wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.sql import Sql
from wire.timestamps import iso

from . import job_events
from .edges import Edge
from .job_states import (
    ABORTED,
    COMPLETED,
    DELETE,
    DISTRIBUTE,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    JOB_STATES,
    NOT_DISTRIBUTED,
)
from .rules import Rule


@dataclass(frozen=True)
class Job:
    distribution_id: int
    edge: str
    service_id: str
    state: str
    general_error: str
    transaction_id: str | None
    total_files: int
    total_bytes: int
    distributed_files: int
    distributed_bytes: int
    sent_files: int
    sent_bytes: int
    attempts: int
    next_attempt: int
    started: int | None
    finished: int | None
    type: str = DISTRIBUTE
    name: str = ""
    version: str = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.distribution_id, self.edge)

    def site_json(self, in_progress: list[str] | None = None) -> dict[str, Any]:
        return {
            "status": self.state,
            "general_error": self.general_error,
            "target_artifactory": {"service_id": self.service_id, "name": self.edge, "type": "edge"},
            "total_files": self.total_files,
            "total_bytes": self.total_bytes,
            "distributed_files": self.distributed_files,
            "distributed_bytes": self.distributed_bytes,
            "file_errors": [],
            "files_in_progress": in_progress or [],
            # beyond JFrog's fields: what crossed the wire (blobs the edge already held are not sent)
            "sent_files": self.sent_files,
            "sent_bytes": self.sent_bytes,
        }


@dataclass(frozen=True)
class Distribution:
    id: int
    friendly_id: int
    type: str
    name: str
    version: str
    rules: list[dict[str, Any]]
    on_success: str
    created: int
    finished: int | None
    jobs: tuple[Job, ...] = ()

    @property
    def status(self) -> str:
        return overall_status([j.state for j in self.jobs])

    def as_json(self, in_progress: dict[tuple[int, str], list[str]] | None = None) -> dict[str, Any]:
        files = in_progress or {}
        return {
            "distribution_id": self.id,
            "distribution_friendly_id": self.friendly_id,
            "type": self.type,
            "release_bundle_name": self.name,
            "release_bundle_version": self.version,
            "status": self.status,
            "start_time": iso(self.created),
            "finish_time": iso(self.finished) if self.finished else None,
            "distribution_rules": self.rules,
            "sites": [j.site_json(files.get(j.key)) for j in self.jobs],
        }


def overall_status(states: list[str]) -> str:
    """Failed when any edge failed; Completed only when every edge completed; else queued or running."""
    if not states:
        return NOT_DISTRIBUTED
    if FAILED in states:
        return FAILED
    if all(s == COMPLETED for s in states):
        return COMPLETED
    if all(s == IN_QUEUE for s in states):
        return IN_QUEUE
    return IN_PROGRESS


_JOB_COLUMNS = (
    "j.distribution_id, j.edge, j.service_id, j.state, j.general_error, j.transaction_id, j.total_files,"
    " j.total_bytes, j.distributed_files, j.distributed_bytes, j.sent_files, j.sent_bytes, j.attempts,"
    " j.next_attempt, j.started, j.finished, d.type, d.name, d.version"
)
_JOINED = "distribution_jobs j JOIN distributions d ON d.id = j.distribution_id"
_DIST_COLUMNS = "id, friendly_id, type, name, version, rules, on_success, created, finished"
_STILL_RUNNING = f"state IN ('{IN_QUEUE}', '{IN_PROGRESS}')"


def _job_key(key: tuple[int, str]) -> dict[str, Any]:
    """A job's key as the parameters ``:id`` and ``:edge``."""
    return {"id": key[0], "edge": key[1]}


class JobStore:
    """The job queue. Given a ``holder`` (a runner's), it changes only the jobs whose lease that
    holder has: a runner that lost a job's lease (it stopped renewing, another replica took the
    job over) can no longer write the job's state."""

    def __init__(self, database: Database, holder: str | None = None) -> None:
        self._database = database
        self.holder = holder

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def create(
        self, kind: str, name: str, version: str, rules: tuple[Rule, ...], edges: list[Edge], totals: tuple[int, int]
    ) -> tuple[int, bool]:
        """A new distribution with one queued job per edge; an identical one still running is answered instead."""
        return await self._database.run(self._create, kind, name, version, rules, edges, totals, "keep")

    async def create_delete(
        self,
        name: str,
        version: str,
        rules: tuple[Rule, ...],
        edges: list[Edge],
        on_success: str,
        totals: tuple[int, int],
    ) -> tuple[int, bool]:
        """A removal from edges: each job's ``distributed_files`` counts the files removed there."""
        return await self._database.run(self._create, DELETE, name, version, rules, edges, totals, on_success)

    def _create(
        self,
        kind: str,
        name: str,
        version: str,
        rules: tuple[Rule, ...],
        edges: list[Edge],
        totals: tuple[int, int],
        on_success: str,
    ) -> tuple[int, bool]:
        asked = {
            "name": name,
            "version": version,
            "type": kind,
            "rules": json.dumps([r.as_json() for r in rules], sort_keys=True),
            "on_success": on_success,
        }
        names = sorted(e.name for e in edges)
        with self._db.atomic():
            for (existing_id,) in self._db.execute(
                "SELECT id FROM distributions WHERE name = :name AND version = :version AND type = :type"
                " AND rules = :rules AND on_success = :on_success AND finished IS NULL",
                asked,
            ).fetchall():
                jobs = self._db.execute(
                    "SELECT edge FROM distribution_jobs WHERE distribution_id = :id ORDER BY edge", {"id": existing_id}
                )
                if [r[0] for r in jobs] == names:
                    return existing_id, False  # a retry of a request whose answer was lost
            count = self._db.execute(
                "SELECT count(*) FROM distributions WHERE name = :name AND version = :version", asked
            ).scalar_one()
            dist_id = self._db.execute(
                "INSERT INTO distributions (friendly_id, type, name, version, rules, on_success, created)"
                " VALUES (:friendly_id, :type, :name, :version, :rules, :on_success, :created) RETURNING id",
                asked | {"friendly_id": count + 1, "created": now_ms()},
            ).scalar_one()
            self._db.executemany(
                "INSERT INTO distribution_jobs (distribution_id, edge, service_id, state, total_files, total_bytes)"
                " VALUES (:distribution_id, :edge, :service_id, :state, :total_files, :total_bytes)",
                [
                    {
                        "distribution_id": dist_id,
                        "edge": e.name,
                        "service_id": e.service_id,
                        "state": IN_QUEUE,
                        "total_files": totals[0],
                        "total_bytes": totals[1],
                    }
                    for e in edges
                ],
            )
            job_events.distribution_started(self._db, dist_id, names)
        return dist_id, True

    async def get(self, name: str, version: str, dist_id: int) -> Distribution | None:
        """A status read: on the reader thread, so it never waits behind a job's bulk work."""
        found = await self._database.read(self._distributions, name, version, dist_id)
        return found[0] if found else None

    async def history(self, name: str, version: str) -> list[Distribution]:
        """Every distribution and delete of a bundle version, newest first (on the reader thread)."""
        return await self._database.read(self._distributions, name, version, None)

    def _distributions(self, name: str, version: str, dist_id: int | None) -> list[Distribution]:
        where = "name = :name AND version = :version" + ("" if dist_id is None else " AND id = :id")
        rows = self._db.execute(
            f"SELECT {_DIST_COLUMNS} FROM distributions WHERE {where} ORDER BY id DESC",
            {"name": name, "version": version, "id": dist_id},
        )
        found = []
        for row in rows.fetchall():
            jobs = self._jobs("j.distribution_id = :id", {"id": row[0]})
            found.append(
                Distribution(
                    id=row[0],
                    friendly_id=row[1],
                    type=row[2],
                    name=row[3],
                    version=row[4],
                    rules=json.loads(row[5]),
                    on_success=row[6],
                    created=row[7],
                    finished=row[8],
                    jobs=tuple(jobs),
                )
            )
        return found

    def _jobs(self, where: str, params: dict[str, Any], tail: str = "ORDER BY j.edge") -> list[Job]:
        rows = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM {_JOINED} WHERE {where} {tail}", params)
        return [Job(*r) for r in rows.fetchall()]

    async def job(self, key: tuple[int, str]) -> Job | None:
        found = await self._database.run(self._jobs, "j.distribution_id = :id AND j.edge = :edge", _job_key(key))
        return found[0] if found else None

    async def claim(self, busy_edges: set[str], limit: int, lease_ms: int) -> list[Job]:
        """Take the lease of up to ``limit`` jobs due to run (oldest distribution first), one per
        edge, on edges where no job is leased (by any replica) and not in ``busy_edges``."""
        return await self._database.run(self._claim, busy_edges, limit, lease_ms)

    def _claim(self, busy_edges: set[str], limit: int, lease_ms: int) -> list[Job]:
        """Replicas claiming at once: each lease is taken by a conditional update, and the whole
        claim is one serializable transaction, so of two claims that read the same free jobs, or
        free jobs of one edge, one is run again (``Database``) and finds them taken. (Locking the
        rows read with ``FOR UPDATE SKIP LOCKED`` instead would let the first claim lock every
        due job it looked at, and starve the others.)"""
        now = now_ms()
        with self._db.atomic():
            due = self._jobs(
                f"j.{_STILL_RUNNING} AND j.next_attempt <= :now AND j.lease_expires <= :now AND NOT EXISTS"
                " (SELECT 1 FROM distribution_jobs o WHERE o.edge = j.edge AND o.lease_expires > :now"
                f" AND o.{_STILL_RUNNING})"
                # a pull-mode edge runs its jobs itself, from its polls (distribution/pull_work.py)
                " AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.name = j.edge AND e.mode = 'pull')",
                {"now": now},
                "ORDER BY j.distribution_id, j.edge LIMIT 1000",
            )
            chosen: list[Job] = []
            for job in due:
                if job.edge in busy_edges or len(chosen) == limit:
                    continue
                taken = self._db.execute(
                    "UPDATE distribution_jobs SET lease_holder = :holder, lease_expires = :until"
                    " WHERE distribution_id = :id AND edge = :edge AND lease_expires <= :now",
                    {"holder": self.holder, "until": now + lease_ms, "now": now} | _job_key(job.key),
                )
                if taken.rowcount:
                    busy_edges = busy_edges | {job.edge}
                    chosen.append(job)
        return chosen

    async def renew(self, keys: list[tuple[int, str]], lease_ms: int) -> set[tuple[int, str]]:
        """Extend the leases this holder still has among ``keys``; answers those it has."""
        return await self._database.run(self._renew, keys, lease_ms)

    def _renew(self, keys: list[tuple[int, str]], lease_ms: int) -> set[tuple[int, str]]:
        held = set()
        with self._db.atomic():
            for key in keys:
                cursor = self._db.execute(
                    "UPDATE distribution_jobs SET lease_expires = :until"
                    " WHERE distribution_id = :id AND edge = :edge AND lease_holder = :holder",
                    {"until": now_ms() + lease_ms, "holder": self.holder} | _job_key(key),
                )
                if cursor.rowcount:
                    held.add(key)
        return held

    async def release(self, key: tuple[int, str]) -> None:
        """Give a job's lease back (its run ended here: finished, or waiting for its next attempt)."""
        await self._database.run(
            self._db.execute,
            "UPDATE distribution_jobs SET lease_holder = NULL, lease_expires = 0"
            " WHERE distribution_id = :id AND edge = :edge AND lease_holder = :holder",
            {"holder": self.holder} | _job_key(key),
        )

    async def release_all(self) -> int:
        """Give back every lease this holder has: at start, none of its jobs runs yet, so those a
        previous run of this replica held need not wait out their expiry."""
        cursor = await self._database.run(
            self._db.execute,
            "UPDATE distribution_jobs SET lease_holder = NULL, lease_expires = 0 WHERE lease_holder = :holder",
            {"holder": self.holder},
        )
        return int(cursor.rowcount)

    def _leased(self) -> tuple[str, dict[str, Any]]:
        """The condition that this store's holder has the job's lease (none without a holder)."""
        if self.holder is None:
            return "", {}
        return " AND lease_holder = :holder", {"holder": self.holder}

    async def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state, every job state named (for the metrics)."""
        rows = await self._database.run(
            lambda: self._db.execute("SELECT state, count(*) FROM distribution_jobs GROUP BY state").fetchall()
        )
        return {state: 0 for state in JOB_STATES} | dict(rows)

    async def pending_by_edge(self) -> dict[str, tuple[int, int]]:
        """Edge -> (jobs queued or running, when the oldest of their distributions was made, epoch ms)."""
        rows = await self._database.run(
            lambda: self._db.execute(
                f"SELECT j.edge, count(*), min(d.created) FROM {_JOINED} WHERE j.{_STILL_RUNNING} GROUP BY j.edge"
            ).fetchall()
        )
        return {edge: (count, oldest) for edge, count, oldest in rows}

    async def holders(self, name: str, version: str) -> list[tuple[str, str]]:
        """``(edge, service_id)`` of each edge whose last completed job of the bundle version put
        it there (a distribution, not a removal)."""
        rows = await self._database.run(
            lambda: self._db.execute(
                f"SELECT j.edge, j.service_id, d.type FROM {_JOINED} WHERE d.name = :name AND d.version = :version"
                " AND j.state = :state ORDER BY d.id",
                {"name": name, "version": version, "state": COMPLETED},
            ).fetchall()
        )
        last = {(edge, service_id): kind for edge, service_id, kind in rows}
        return sorted(key for key, kind in last.items() if kind == DISTRIBUTE)

    async def held(self) -> dict[str, list[tuple[str, str]]]:
        """What each edge holds: ``edge -> [(name, version)]`` whose last completed job there was a
        distribution (as ``holders`` decides per bundle version)."""
        rows = await self._database.read(
            lambda: self._db.execute(
                f"SELECT j.edge, d.name, d.version, d.type FROM {_JOINED} WHERE j.state = :state ORDER BY d.id",
                {"state": COMPLETED},
            ).fetchall()
        )
        last = {(edge, name, version): kind for edge, name, version, kind in rows}
        held: dict[str, list[tuple[str, str]]] = {}
        for (edge, name, version), kind in sorted(last.items()):
            if kind == DISTRIBUTE:
                held.setdefault(edge, []).append((name, version))
        return held

    async def sharing_transaction(self, job: Job) -> bool:
        """Whether another running job pushes the same bundle version to the same edge."""
        row = await self._database.run(
            lambda: self._db.execute(
                f"SELECT 1 FROM {_JOINED} WHERE d.name = :name AND d.version = :version AND d.type = :type"
                f" AND j.edge = :edge AND j.{_STILL_RUNNING} AND j.distribution_id != :id LIMIT 1",
                {"name": job.name, "version": job.version, "type": DISTRIBUTE} | _job_key(job.key),
            ).fetchone()
        )
        return row is not None

    async def update(self, key: tuple[int, str], **fields: Any) -> bool:
        """Set fields of a job that is still running; False when it is not (aborted, finished, deleted)."""
        sets = ", ".join(f"{k} = :set_{k}" for k in fields)
        leased, holder = self._leased()
        cursor = await self._database.run(
            self._db.execute,
            f"UPDATE distribution_jobs SET {sets}"
            f" WHERE distribution_id = :id AND edge = :edge AND {_STILL_RUNNING}{leased}",
            {f"set_{k}": v for k, v in fields.items()} | _job_key(key) | holder,
        )
        return bool(cursor.rowcount)

    async def finish(self, key: tuple[int, str], state: str, error: str = "") -> Distribution | None:
        """End a running job; answers its distribution when that is now finished as a whole."""
        return await self._database.run(self._finish, key, state, error)

    def _finish(self, key: tuple[int, str], state: str, error: str) -> Distribution | None:
        at = now_ms()
        leased, holder = self._leased()
        with self._db.atomic():
            cursor = self._db.execute(
                "UPDATE distribution_jobs SET state = :state, general_error = :error, finished = :at,"
                " lease_holder = NULL, lease_expires = 0"
                f" WHERE distribution_id = :id AND edge = :edge AND {_STILL_RUNNING}{leased}",
                {"state": state, "error": error, "at": at} | _job_key(key) | holder,
            )
            if not cursor.rowcount:
                return None
            job_events.job_finished(self._db, key[0], key[1], state == COMPLETED, error)
            return self._close_if_done(key[0], at)

    def _close_if_done(self, dist_id: int, at: int, *, aborted: bool = False) -> Distribution | None:
        keys = {"id": dist_id, "at": at}
        running = self._db.execute(
            f"SELECT count(*) FROM distribution_jobs WHERE distribution_id = :id AND {_STILL_RUNNING}", keys
        ).scalar_one()
        if running:
            return None
        closed = self._db.execute(
            "UPDATE distributions SET finished = :at WHERE id = :id AND finished IS NULL", keys
        ).rowcount
        row = self._db.execute("SELECT name, version FROM distributions WHERE id = :id", keys).one()
        done = self._distributions(row[0], row[1], dist_id)[0]
        if closed:
            job_events.distribution_finished(self._db, dist_id, done.status, aborted=aborted)
        return done

    async def abort(self, name: str, version: str) -> list[Job]:
        """Mark every running job of a bundle version Failed ("aborted"); answers them as they were."""
        return await self._database.run(self._abort, name, version)

    def _abort(self, name: str, version: str) -> list[Job]:
        at = now_ms()
        with self._db.atomic():
            jobs = self._jobs(
                f"d.name = :name AND d.version = :version AND j.{_STILL_RUNNING}", {"name": name, "version": version}
            )
            self._db.executemany(
                "UPDATE distribution_jobs SET state = :state, general_error = :error, finished = :at"
                " WHERE distribution_id = :id AND edge = :edge",
                [{"state": FAILED, "error": ABORTED, "at": at} | _job_key(job.key) for job in jobs],
            )
            for dist_id in sorted({j.distribution_id for j in jobs}):
                self._close_if_done(dist_id, at, aborted=True)
        return jobs
