"""The events the service tells webhook subscribers of, and the one function that publishes them.

``publish`` is called by the code that makes a change, with that change's database
connection, inside the change's own transaction: the event and its queued deliveries
commit with the change or not at all, so a crash never loses an event nor invents one.
The fleet (which this package never imports) publishes through the same function,
handed to it on the app (``distribution.keys.publish_key``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from repository.catalog import now_ms
from repository.sql import Sql
from wire.timestamps import iso

BUNDLE_CREATED = "bundle.created"
BUNDLE_SIGNED = "bundle.signed"
BUNDLE_DELETED = "bundle.deleted"
DISTRIBUTION_STARTED = "distribution.started"
DISTRIBUTION_COMPLETED = "distribution.completed"
DISTRIBUTION_FAILED = "distribution.failed"
DISTRIBUTION_ABORTED = "distribution.aborted"
EDGE_COMPLETED = "distribution.edge.completed"
EDGE_FAILED = "distribution.edge.failed"
EDGE_OFFLINE = "edge.offline"
EDGE_BACK = "edge.back"
PHASE_ADVANCED = "fleet.deployment.phase_advanced"
DEPLOYMENT_HALTED = "fleet.deployment.halted"
DEPLOYMENT_COMPLETED = "fleet.deployment.completed"
EVENTS = (
    BUNDLE_CREATED,
    BUNDLE_SIGNED,
    BUNDLE_DELETED,
    DISTRIBUTION_STARTED,
    DISTRIBUTION_COMPLETED,
    DISTRIBUTION_FAILED,
    DISTRIBUTION_ABORTED,
    EDGE_COMPLETED,
    EDGE_FAILED,
    EDGE_OFFLINE,
    EDGE_BACK,
    PHASE_ADVANCED,
    DEPLOYMENT_HALTED,
    DEPLOYMENT_COMPLETED,
)
EVERY_EVENT = "*"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

# an event's data, or what reads it (called only when someone subscribed to the event)
Data = dict[str, Any] | Callable[[], dict[str, Any]]
# what the fleet is handed: publish(connection, event type, data) inside the caller's transaction
Publisher = Callable[[Sql, str, Data], str | None]


def wants(events: Iterable[str], event_type: str) -> bool:
    return any(e in (EVERY_EVENT, event_type) for e in events)


def publish(db: Sql, event_type: str, data: Data) -> str | None:
    """Queue ``event_type`` with ``data`` for every enabled subscription that wants it, on ``db``
    in its current transaction (one of its own when there is none); answers the event's id, or
    None when nobody subscribed to it (then nothing is written, and a callable ``data`` is not
    called: a change nobody listens to costs one short read)."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown webhook event {event_type!r}")
    rows = db.execute("SELECT id, events FROM webhook_subscriptions WHERE enabled = 1 ORDER BY id").fetchall()
    wanted = [sub_id for sub_id, events in rows if wants(json.loads(events), event_type)]
    if not wanted:
        return None
    event_id, at = str(uuid.uuid4()), now_ms()
    payload = {"id": event_id, "type": event_type, "time": iso(at), "data": data() if callable(data) else data}
    body = json.dumps(payload, separators=(",", ":"))
    with db.atomic():
        db.execute(
            "INSERT INTO webhook_events (id, type, time, body) VALUES (:id, :type, :time, :body)",
            {"id": event_id, "type": event_type, "time": at, "body": body},
        )
        for sub_id in wanted:
            enqueue(db, sub_id, event_id, at)
    return event_id


def enqueue(db: Sql, subscription_id: int, event_id: str, at: int) -> int:
    """Put an event at the end of a subscription's queue; answers the delivery's id. The place is
    taken by an update of the subscription's row, so transactions queueing to one subscription
    at once (replicas on PostgreSQL) commit one after the other, in the order of their places."""
    seq = db.execute(
        "UPDATE webhook_subscriptions SET last_seq = last_seq + 1 WHERE id = :id RETURNING last_seq",
        {"id": subscription_id},
    ).scalar_one()
    return int(
        db.execute(
            "INSERT INTO webhook_deliveries (subscription_id, seq, event_id, state, created, updated)"
            " VALUES (:sub, :seq, :event, :state, :at, :at) RETURNING id",
            {"sub": subscription_id, "seq": seq, "event": event_id, "state": PENDING, "at": at},
        ).scalar_one()
    )
