"""The webhook events of distributions and their jobs, published from inside ``JobStore``'s
transactions (``webhook_events.publish``): what changed and the event commit together."""

from __future__ import annotations

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


def _distribution(db: Sql, dist_id: int) -> dict[str, Any]:
    kind, name, version = db.execute(
        "SELECT type, name, version FROM distributions WHERE id = :id", {"id": dist_id}
    ).one()
    return {"distribution_id": dist_id, "type": kind, "name": name, "version": version}


def _sites(db: Sql, dist_id: int) -> list[dict[str, str]]:
    rows = db.execute(
        "SELECT edge, state, general_error FROM distribution_jobs WHERE distribution_id = :id ORDER BY edge",
        {"id": dist_id},
    )
    return [{"edge": edge, "status": state, "error": error} for edge, state, error in rows]


def distribution_started(db: Sql, dist_id: int) -> None:
    publish(db, DISTRIBUTION_STARTED, _distribution(db, dist_id) | {"edges": [s["edge"] for s in _sites(db, dist_id)]})


def job_finished(db: Sql, dist_id: int, edge: str, completed: bool, error: str) -> None:
    data = _distribution(db, dist_id) | {"edge": edge, "error": error}
    publish(db, EDGE_COMPLETED if completed else EDGE_FAILED, data)


def distribution_finished(db: Sql, dist_id: int, status: str, *, aborted: bool = False) -> None:
    """``status``: the distribution's overall status (Completed or Failed)."""
    event = DISTRIBUTION_COMPLETED if status == "Completed" else DISTRIBUTION_FAILED
    event = DISTRIBUTION_ABORTED if aborted else event
    publish(db, event, _distribution(db, dist_id) | {"status": status, "sites": _sites(db, dist_id)})
