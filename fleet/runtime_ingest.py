"""Storing a device's runtime report: its process set, drift, history and events, in one transaction.

A delta is taken only on top of the report the control plane acknowledged last (``base``
equal to the stored ``seq``); otherwise nothing is stored and the device is asked for a
full report. Events are written for what is new on the device: an executable (or script)
that no stored bundle version lists and that did not already run there, and each file
found drifting that was not already known to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from repository.db import Database
from repository.sql import Sql
from wire.runtime import DRIFT, UNKNOWN_EXECUTABLE, AppDrift, Process, RuntimeAnswer, RuntimeReport

LOOKUP_CHUNK = 500  # sha256s per IN (...) lookup

_INSERT_PROCESS = (
    "INSERT INTO fleet_runtime_processes (device_id, pid, started, exe, sha256, username, script,"
    " script_sha256, ident, container, cmdline, seen) VALUES (:id, :pid, :started, :exe, :sha256, :user,"
    " :script, :script_sha256, :ident, :container, :cmdline, :now)"
)
_INSERT_EVENT = (
    "INSERT INTO fleet_runtime_events (time, device_id, kind, sha256, path, detail)"
    " VALUES (:now, :id, :kind, :sha256, :path, :detail)"
)


def bundled(db: Sql, shas: Iterable[str]) -> set[str]:
    """Which of ``shas`` a stored bundle version lists (the sha256 index of ``bundle_artifacts``)."""
    wanted, found = sorted(set(shas)), set[str]()
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        rows = db.execute(
            "SELECT DISTINCT sha256 FROM bundle_artifacts WHERE sha256 IN :shas",
            {"shas": wanted[i : i + LOOKUP_CHUNK]},
        )
        found.update(r[0] for r in rows)
    return found


class RuntimeIngest:
    def __init__(self, database: Database, history: int, events_kept: int) -> None:
        self._database = database
        self._history = history
        self._events_kept = events_kept

    async def ingest(self, device_id: str, report: RuntimeReport, now: int) -> RuntimeAnswer:
        """Store the report; its commit does not wait for the disk (``run_page``): a report a power
        cut undoes leaves the device one report ahead, so its next delta is on a base the control
        plane does not hold, and the answer asks for a full report. Saves a flush per report."""
        return await self._database.run_page(self._ingest, device_id, report, now)

    def _ingest(self, device_id: str, report: RuntimeReport, now: int) -> RuntimeAnswer:
        db = self._database.db
        key = {"id": device_id}
        with db.atomic(serializable=False):
            row = db.execute("SELECT seq FROM fleet_runtime_state WHERE device_id = :id", key).fetchone()
            seq = row[0] if row else 0
            if not report.full and report.base != seq:
                return RuntimeAnswer(seq, full=True)
            before = self._running(db, device_id) if report.started else set()
            self._replace_processes(db, device_id, report, now)
            events = self._unknown_events(db, device_id, report.started, before, now)
            if report.drift is not None:
                events += self._replace_drift(db, device_id, report.drift, now)
            self._remember(db, device_id, report, now, events)
        return RuntimeAnswer(report.seq)

    @staticmethod
    def _running(db: Sql, device_id: str) -> set[str]:
        rows = db.execute(
            "SELECT DISTINCT ident FROM fleet_runtime_processes WHERE device_id = :id AND ident IS NOT NULL",
            {"id": device_id},
        )
        return {r[0] for r in rows}

    def _replace_processes(self, db: Sql, device_id: str, report: RuntimeReport, now: int) -> None:
        if report.full:
            db.execute("DELETE FROM fleet_runtime_processes WHERE device_id = :id", {"id": device_id})
        gone = [*report.stopped, *(p.key for p in report.started)] if not report.full else []
        db.executemany(
            "DELETE FROM fleet_runtime_processes WHERE device_id = :id AND pid = :pid AND started = :started",
            [{"id": device_id, "pid": pid, "started": started} for pid, started in gone],
        )
        db.executemany(_INSERT_PROCESS, [_process_row(device_id, p, now) for p in report.started])

    def _unknown_events(self, db: Sql, device_id: str, started: tuple[Process, ...], before: set[str], now: int) -> int:
        """An event per executable new on the device that no bundle ships; answers how many."""
        first: dict[str, Process] = {}
        for process in started:
            if process.ident is not None and process.ident not in before:
                first.setdefault(process.ident, process)
        known = bundled(db, first) if first else set()
        events = [
            {
                "now": now,
                "id": device_id,
                "kind": UNKNOWN_EXECUTABLE,
                "sha256": ident,
                "path": p.script or p.exe,
                "detail": json.dumps({"pid": p.pid, "exe": p.exe, "user": p.user}, sort_keys=True),
            }
            for ident, p in sorted(first.items())
            if ident not in known
        ]
        db.executemany(_INSERT_EVENT, events)
        return len(events)

    def _replace_drift(self, db: Sql, device_id: str, drift: tuple[AppDrift, ...], now: int) -> int:
        """The device's drift as reported, an event per file newly found; answers how many events."""
        key = {"id": device_id}
        old = {
            (r[0], r[1], r[2], r[3])
            for r in db.execute("SELECT app, path, version, kind FROM fleet_runtime_drift WHERE device_id = :id", key)
        }
        rows = [
            {"id": device_id, "app": d.app, "path": path, "version": d.version, "kind": kind, "now": now}
            for d in drift
            for kind, path in d.findings()
        ]
        db.execute("DELETE FROM fleet_runtime_drift WHERE device_id = :id", key)
        db.executemany(
            "INSERT INTO fleet_runtime_drift (device_id, app, path, version, kind, found)"
            " VALUES (:id, :app, :path, :version, :kind, :now)",
            rows,
        )
        events = [
            {
                "now": now,
                "id": device_id,
                "kind": DRIFT,
                "sha256": None,
                "path": r["path"],
                "detail": json.dumps({"app": r["app"], "version": r["version"], "change": r["kind"]}, sort_keys=True),
            }
            for r in rows
            if (r["app"], r["path"], r["version"], r["kind"]) not in old
        ]
        db.executemany(_INSERT_EVENT, events)
        return len(events)

    def _remember(self, db: Sql, device_id: str, report: RuntimeReport, now: int, events: int) -> None:
        """The device's acknowledged report, its change in the bounded history, the events cut back
        (when some were added)."""
        key = {"id": device_id, "seq": report.seq, "now": now}
        db.execute("DELETE FROM fleet_runtime_state WHERE device_id = :id", key)
        db.execute("INSERT INTO fleet_runtime_state (device_id, seq, updated) VALUES (:id, :seq, :now)", key)
        if self._history:
            body = {
                "full": report.full,
                "truncated": report.truncated,
                "started": [[p.pid, p.started, p.exe, p.ident] for p in report.started],
                "stopped": [list(k) for k in report.stopped],
            }
            if report.full:  # the device started counting again
                db.execute("DELETE FROM fleet_runtime_changes WHERE device_id = :id AND seq >= :seq", key)
            db.execute(
                "INSERT INTO fleet_runtime_changes (device_id, seq, time, body) VALUES (:id, :seq, :now, :body)",
                {**key, "body": json.dumps(body, separators=(",", ":"))},
            )
        db.execute(
            "DELETE FROM fleet_runtime_changes WHERE device_id = :id AND seq <= (SELECT seq FROM fleet_runtime_changes"
            " WHERE device_id = :id ORDER BY seq DESC LIMIT 1 OFFSET :keep)",
            {"id": device_id, "keep": self._history},
        )
        if events:
            db.execute(
                "DELETE FROM fleet_runtime_events WHERE id <= (SELECT id FROM fleet_runtime_events"
                " ORDER BY id DESC LIMIT 1 OFFSET :keep)",
                {"keep": self._events_kept},
            )


def _process_row(device_id: str, p: Process, now: int) -> dict[str, object]:
    return {
        "id": device_id,
        "pid": p.pid,
        "started": p.started,
        "exe": p.exe,
        "sha256": p.sha256,
        "user": p.user,
        "script": p.script,
        "script_sha256": p.script_sha256,
        "ident": p.ident,
        "container": p.container,
        "cmdline": p.cmdline,
        "now": now,
    }
