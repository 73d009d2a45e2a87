"""Heartbeats, written in group commits (``group_commit.py``).

A fleet of 50,000 devices at a 30 s interval sends some 1,700 heartbeats a second. A
transaction each would wait for the disk 1,700 times a second; instead every heartbeat
that arrives while one transaction commits waits for the next, which stores them all at
once (one flush for the batch). A check-in is answered only after the transaction that
holds its heartbeat committed, so what the device was told rests on what is stored.

Each heartbeat updates its device's row (``last_seen``, the latest heartbeat), replaces
what the device runs (``fleet_device_apps``) when that changed, and adds to its history,
which is cut back to the newest ``history`` heartbeats in the same transaction: the table
stays bounded however long the fleet runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from repository.db import Database
from wire.fleet import Heartbeat

from .group_commit import GroupCommit, group_commit_ctx

# The next heartbeat's time: now, or just after the device's latest one when the clock has
# not moved on since (two heartbeats in one millisecond are both kept).
_INSERT_HISTORY = (
    "INSERT INTO fleet_heartbeats (device_id, time, body)"
    " SELECT :id, CASE WHEN latest.time >= :now THEN latest.time + 1 ELSE :now END, :body"
    " FROM (SELECT COALESCE(MAX(time), 0) AS time FROM fleet_heartbeats WHERE device_id = :id) AS latest"
)
_TRIM_HISTORY = (
    "DELETE FROM fleet_heartbeats WHERE device_id = :id AND time <= ("
    "SELECT time FROM fleet_heartbeats WHERE device_id = :id ORDER BY time DESC LIMIT 1 OFFSET :keep)"
)


@dataclass(frozen=True)
class Beat:
    device_id: str
    heartbeat: Heartbeat
    time: int  # ms, the service's clock


def heartbeat_json(heartbeat: Heartbeat) -> tuple[str, str]:
    """The heartbeat's JSON and its ``apps`` alone, both canonical so that equal apps compare equal."""
    body = heartbeat.to_json()
    return _canonical(body), _canonical(body["apps"])


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class HeartbeatWriter(GroupCommit[Beat, None]):
    """``write`` returns once the heartbeat is committed; ``run`` commits what waits, a batch
    per transaction, until cancelled (``writer_ctx``)."""

    what = "heartbeats"

    def __init__(self, database: Database, history: int) -> None:
        super().__init__(database)
        self._history = history

    async def write(self, beat: Beat) -> None:
        await self.submit(beat)

    def store(self, items: list[Beat]) -> list[None | Exception]:
        self._store(items)
        return [None] * len(items)

    def _store(self, beats: list[Beat]) -> None:
        db = self._database.db
        encoded = [heartbeat_json(beat.heartbeat) for beat in beats]  # encoded once: the costly part
        latest = {beat.device_id: (beat, *e) for beat, e in zip(beats, encoded, strict=True)}  # a device's last
        devices = [
            {"id": b.device_id, "now": b.time, "agent": b.heartbeat.agent_version, "body": body}
            for b, body, _ in latest.values()
        ]
        history = [
            {"id": b.device_id, "now": b.time, "body": body, "keep": self._history}
            for b, (body, _) in zip(beats, encoded, strict=True)
        ]
        with db.atomic(serializable=False):
            # the device's row first: two replicas storing one device's heartbeats at once (a retry)
            # wait for each other on it, so its apps and history are never written by both at once
            db.executemany(
                "UPDATE fleet_devices SET last_seen = :now, agent_version = :agent, heartbeat = :body WHERE id = :id",
                devices,
            )
            self._store_apps(list(latest.values()))
            if self._history:
                db.executemany(_INSERT_HISTORY, history)
            db.executemany(_TRIM_HISTORY, history)

    def _store_apps(self, latest: list[tuple[Beat, str, str]]) -> None:
        """Rewrite what the batch's devices run only when one of them reports other apps than
        stored: most heartbeats report what the one before did, and then this is one statement.
        The device rows are locked by the update before, so a replica storing the same device
        waits, and then compares with what this one stored."""
        db = self._database.db
        changed = db.executemany(
            "UPDATE fleet_devices SET apps = :apps WHERE id = :id AND (apps IS NULL OR apps <> :apps)",
            [{"id": b.device_id, "apps": apps} for b, _, apps in latest],
        )
        if not changed:
            return
        db.executemany(
            "DELETE FROM fleet_device_apps WHERE device_id = :id", [{"id": b.device_id} for b, _, _ in latest]
        )
        db.executemany(
            "INSERT INTO fleet_device_apps (device_id, app, version, previous) VALUES (:id, :app, :version, :previous)",
            [
                {"id": b.device_id, "app": name, "version": app.version, "previous": app.previous}
                for b, _, _ in latest
                for name, app in sorted(b.heartbeat.apps.items())
            ],
        )


async def writer_ctx(writer: HeartbeatWriter) -> AsyncIterator[None]:
    """The writer's loop, from start-up to shutdown."""
    async for _ in group_commit_ctx(writer):
        yield
