"""The webhook events of distributions and their jobs, published from inside ``JobStore``'s
transactions (``webhook_events.publish``): what changed and the event commit together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repository.sql import Sql

from .webhook_events import (
    DISTRIBUTION_ABORTED,
    DISTRIBUTION_COMPLETED,
    DISTRIBUTION_FAILED,
    DISTRIBUTION_STARTED,
    EDGE_COMPLETED,
    EDGE_FAILED,
    publish,
)


def _about(db: Sql, dist_id: int, *, sites: bool = False, **extra: Any) -> Callable[[], dict[str, Any]]:
    """What reads an event's data: the distribution, ``extra``, and with ``sites`` each edge's
    status (read only when someone subscribed to the event)."""

    def read() -> dict[str, Any]:
        kind, name, version = db.execute(
            "SELECT type, name, version FROM distributions WHERE id = :id", {"id": dist_id}
        ).one()
        data = {"distribution_id": dist_id, "type": kind, "name": name, "version": version} | extra
        if sites:
            rows = db.execute(
                "SELECT edge, state, general_error FROM distribution_jobs WHERE distribution_id = :id ORDER BY edge",
                {"id": dist_id},
            )
            data["sites"] = [{"edge": edge, "status": state, "error": error} for edge, state, error in rows]
        return data

    return read


def distribution_started(db: Sql, dist_id: int, edges: list[str]) -> None:
    publish(db, DISTRIBUTION_STARTED, _about(db, dist_id, edges=edges))


def job_finished(db: Sql, dist_id: int, edge: str, completed: bool, error: str) -> None:
    publish(db, EDGE_COMPLETED if completed else EDGE_FAILED, _about(db, dist_id, edge=edge, error=error))


def distribution_finished(db: Sql, dist_id: int, status: str, *, aborted: bool = False) -> None:
    """``status``: the distribution's overall status (Completed or Failed)."""
    event = DISTRIBUTION_COMPLETED if status == "Completed" else DISTRIBUTION_FAILED
    publish(db, DISTRIBUTION_ABORTED if aborted else event, _about(db, dist_id, sites=True, status=status))
