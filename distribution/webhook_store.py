"""Webhook subscriptions and their delivery queue, kept in the service's database.

Each subscription's deliveries are worked through in ``seq`` order, one at a time: the next
waits until the one before it is delivered or given up. Service replicas sharing one database
deliver to a subscription only while they hold its lease (taken like a job's), so one replica
at a time sends its deliveries; a replica that stops renewing loses it to the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.errors import BadRequest, NotFound
from repository.sql import Sql
from wire.timestamps import iso

from .webhook_events import PENDING, enqueue

# deliveries answered a page at a time (the log of a busy subscription is long)
DELIVERY_PAGE = 100
# finished deliveries forgotten per statement (``prune``): each step is one short write
PRUNE_PAGE = 1000


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    events: tuple[str, ...]
    enabled: bool
    created: int
    created_by: str
    disabled_reason: str

    def as_json(self) -> dict[str, Any]:
        """Everything but the secret, which is answered once, when the subscription is made."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "enabled": self.enabled,
            "created": iso(self.created),
            "created_by": self.created_by,
            "disabled_reason": self.disabled_reason,
        }


@dataclass(frozen=True)
class Delivery:
    id: int
    subscription_id: int
    seq: int
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt: int
    last_status: int | None
    last_error: str
    created: int
    updated: int
    finished: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "status": self.state,
            "attempts": self.attempts,
            "next_attempt": iso(self.next_attempt) if self.state == PENDING and self.next_attempt else None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "finished": iso(self.finished) if self.finished else None,
        }


@dataclass(frozen=True)
class Due:
    """The head of a subscription's queue, with what sending it takes."""

    delivery_id: int
    subscription_id: int
    event_id: str
    event_type: str
    body: str
    attempts: int
    next_attempt: int
    url: str
    secret: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt ends in: ``state`` pending (retry at ``next_attempt``), delivered or failed;
    ``disable`` turns the subscription off (the receiver answered 410 Gone)."""

    state: str
    status: int | None
    error: str
    next_attempt: int = 0
    disable: bool = False


_SUB_COLUMNS = "id, url, events, enabled, created, created_by, disabled_reason"
_DELIVERY_COLUMNS = (
    "d.id, d.subscription_id, d.seq, d.event_id, e.type, d.state, d.attempts, d.next_attempt, d.last_status,"
    " d.last_error, d.created, d.updated, d.finished"
)
_DELIVERIES = "webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
_HEAD = (
    "d.state = 'pending' AND d.seq = (SELECT min(p.seq) FROM webhook_deliveries p"
    " WHERE p.subscription_id = d.subscription_id AND p.state = 'pending')"
)


def _subscription(row: Any) -> Subscription:
    return Subscription(row[0], row[1], tuple(json.loads(row[2])), bool(row[3]), row[4], row[5], row[6])


class WebhookStore:
    """Subscriptions and deliveries. With a ``holder`` (a deliverer's replica id) it also
    claims subscriptions to deliver to, and records outcomes only while it holds their lease."""

    def __init__(self, database: Database, holder: str = "") -> None:
        self._database = database
        self.holder = holder

    @property
    def _db(self) -> Sql:
        return self._database.db

    # ---------------------------------------------------------------- subscriptions

    async def add(self, url: str, events: tuple[str, ...], secret: str, user: str, limit: int) -> Subscription:
        """A new enabled subscription; at most ``limit`` of them (400 past it, nothing stored)."""
        return await self._database.run(self._add, url, events, secret, user, limit)

    def _add(self, url: str, events: tuple[str, ...], secret: str, user: str, limit: int) -> Subscription:
        with self._db.atomic():
            count = self._db.execute("SELECT count(*) FROM webhook_subscriptions").scalar_one()
            if count >= limit:
                raise BadRequest(f"There are {count} webhook subscriptions already, the most allowed ({limit})")
            sub_id = self._db.execute(
                "INSERT INTO webhook_subscriptions (url, events, secret, enabled, created, created_by)"
                " VALUES (:url, :events, :secret, 1, :at, :user) RETURNING id",
                {"url": url, "events": json.dumps(list(events)), "secret": secret, "at": now_ms(), "user": user},
            ).scalar_one()
            return self._get(sub_id)

    def _get(self, sub_id: int) -> Subscription:
        row = self._db.execute(
            f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions WHERE id = :id", {"id": sub_id}
        ).fetchone()
        if row is None:
            raise NotFound(f"No webhook subscription {sub_id}")
        return _subscription(row)

    async def get(self, sub_id: int) -> Subscription:
        return await self._database.read(self._get, sub_id)

    async def subscriptions(self) -> list[Subscription]:
        rows = await self._database.read(
            lambda: self._db.execute(f"SELECT {_SUB_COLUMNS} FROM webhook_subscriptions ORDER BY id").fetchall()
        )
        return [_subscription(r) for r in rows]

    async def remove(self, sub_id: int) -> None:
        """Forget a subscription and its deliveries; events no delivery names any more go too."""
        await self._database.run(self._remove, sub_id)

    def _remove(self, sub_id: int) -> None:
        with self._db.atomic():
            self._get(sub_id)
            self._db.execute("DELETE FROM webhook_deliveries WHERE subscription_id = :id", {"id": sub_id})
            self._db.execute("DELETE FROM webhook_subscriptions WHERE id = :id", {"id": sub_id})
            self._db.execute(
                "DELETE FROM webhook_events WHERE NOT EXISTS"
                " (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)"
            )

    async def set_enabled(self, sub_id: int, enabled: bool, reason: str = "") -> Subscription:
        return await self._database.run(self._set_enabled, sub_id, enabled, reason)

    def _set_enabled(self, sub_id: int, enabled: bool, reason: str) -> Subscription:
        with self._db.atomic():
            self._get(sub_id)
            self._db.execute(
                "UPDATE webhook_subscriptions SET enabled = :enabled, disabled_reason = :reason WHERE id = :id",
                {"id": sub_id, "enabled": int(enabled), "reason": "" if enabled else reason},
            )
            return self._get(sub_id)

    # ---------------------------------------------------------------- the delivery log

    async def deliveries(self, sub_id: int, start: int) -> tuple[list[Delivery], int]:
        """A page of a subscription's deliveries, newest first, and how many it has in all."""
        return await self._database.read(self._deliveries, sub_id, start)

    def _deliveries(self, sub_id: int, start: int) -> tuple[list[Delivery], int]:
        self._get(sub_id)
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERIES} WHERE d.subscription_id = :id"
            " ORDER BY d.seq DESC LIMIT :limit OFFSET :start",
            {"id": sub_id, "limit": DELIVERY_PAGE, "start": start},
        ).fetchall()
        total = self._db.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = :id", {"id": sub_id}
        ).scalar_one()
        return [Delivery(*r) for r in rows], int(total)

    def _delivery(self, delivery_id: int) -> Delivery:
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM {_DELIVERIES} WHERE d.id = :id", {"id": delivery_id}
        ).fetchone()
        if row is None:
            raise NotFound(f"No webhook delivery {delivery_id}")
        return Delivery(*row)

    async def redeliver(self, delivery_id: int) -> Delivery:
        """Queue the event of a delivery again for its subscription, at the end of its queue (so
        the order of what follows is kept); answers the new delivery."""
        return await self._database.run(self._redeliver, delivery_id)

    def _redeliver(self, delivery_id: int) -> Delivery:
        with self._db.atomic():
            old = self._delivery(delivery_id)
            return self._delivery(enqueue(self._db, old.subscription_id, old.event_id, now_ms()))

    async def prune(self, before: int) -> int:
        """Forget deliveries finished before ``before`` (epoch ms), ``PRUNE_PAGE`` at a time, and the
        events no delivery names any more; pending ones stay, however old. Answers how many went."""
        removed = 0
        while count := await self._database.run(self._prune_page, before):
            removed += count
        return removed

    def _prune_page(self, before: int) -> int:
        with self._db.atomic():
            count = self._db.execute(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
                " WHERE state != 'pending' AND finished < :before ORDER BY id LIMIT :limit)",
                {"before": before, "limit": PRUNE_PAGE},
            ).rowcount
            self._db.execute(
                "DELETE FROM webhook_events WHERE id IN (SELECT e.id FROM webhook_events e WHERE e.time < :before"
                " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) LIMIT :limit)",
                {"before": before, "limit": PRUNE_PAGE},
            )
        return int(count)

    # ---------------------------------------------------------------- the deliverer's side

    async def claim(self, busy: set[int], limit: int, lease_ms: int) -> list[int]:
        """Take the lease of up to ``limit`` enabled subscriptions whose next delivery is due and
        whose lease nobody holds (on any replica), not in ``busy``; answers their ids."""
        return await self._database.run(self._claim, busy, limit, lease_ms)

    def _claim(self, busy: set[int], limit: int, lease_ms: int) -> list[int]:
        now = now_ms()
        with self._db.atomic():
            due = self._db.execute(
                f"SELECT d.subscription_id FROM webhook_deliveries d JOIN webhook_subscriptions s"
                f" ON s.id = d.subscription_id WHERE {_HEAD} AND d.next_attempt <= :now AND s.enabled = 1"
                " AND s.lease_expires <= :now ORDER BY d.subscription_id LIMIT :limit",
                {"now": now, "limit": limit + len(busy)},
            ).fetchall()
            taken: list[int] = []
            for (sub_id,) in due:
                if sub_id in busy or len(taken) == limit:
                    continue
                cursor = self._db.execute(
                    "UPDATE webhook_subscriptions SET lease_holder = :holder, lease_expires = :until"
                    " WHERE id = :id AND lease_expires <= :now",
                    {"holder": self.holder, "until": now + lease_ms, "now": now, "id": sub_id},
                )
                if cursor.rowcount:
                    taken.append(int(sub_id))
        return taken

    async def renew(self, sub_id: int, lease_ms: int) -> bool:
        """Extend this holder's lease of a subscription; False when it no longer holds it."""
        cursor = await self._database.run(
            self._db.execute,
            "UPDATE webhook_subscriptions SET lease_expires = :until WHERE id = :id AND lease_holder = :holder",
            {"until": now_ms() + lease_ms, "id": sub_id, "holder": self.holder},
        )
        return bool(cursor.rowcount)

    async def release(self, sub_id: int) -> None:
        await self._database.run(
            self._db.execute,
            "UPDATE webhook_subscriptions SET lease_holder = NULL, lease_expires = 0"
            " WHERE id = :id AND lease_holder = :holder",
            {"id": sub_id, "holder": self.holder},
        )

    async def release_all(self) -> None:
        """At start and stop: the leases a previous run of this replica held need not wait out their expiry."""
        await self._database.run(
            self._db.execute,
            "UPDATE webhook_subscriptions SET lease_holder = NULL, lease_expires = 0 WHERE lease_holder = :holder",
            {"holder": self.holder},
        )

    async def head(self, sub_id: int) -> Due | None:
        """The next delivery of an enabled subscription, or None when its queue is empty."""
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT d.id, d.subscription_id, d.event_id, e.type, e.body, d.attempts, d.next_attempt, s.url,"
                f" s.secret FROM {_DELIVERIES} JOIN webhook_subscriptions s ON s.id = d.subscription_id"
                f" WHERE d.subscription_id = :id AND s.enabled = 1 AND {_HEAD}",
                {"id": sub_id},
            ).fetchone()
        )
        return Due(*row) if row else None

    async def record(self, due: Due, outcome: Outcome) -> bool:
        """Write an attempt's outcome, only while this holder has the subscription's lease (a
        replica that lost it never overwrites the one that took over); False when it had not."""
        return await self._database.run(self._record, due, outcome)

    def _record(self, due: Due, outcome: Outcome) -> bool:
        at = now_ms()
        with self._db.atomic():
            cursor = self._db.execute(
                "UPDATE webhook_deliveries SET state = :state, attempts = attempts + 1, next_attempt = :next,"
                " last_status = :status, last_error = :error, updated = :at, finished = :finished"
                " WHERE id = :id AND state = 'pending' AND EXISTS (SELECT 1 FROM webhook_subscriptions s"
                " WHERE s.id = :sub AND s.lease_holder = :holder)",
                {
                    "state": outcome.state,
                    "next": outcome.next_attempt,
                    "status": outcome.status,
                    "error": outcome.error[:1000],
                    "at": at,
                    "finished": None if outcome.state == PENDING else at,
                    "id": due.delivery_id,
                    "sub": due.subscription_id,
                    "holder": self.holder,
                },
            )
            if cursor.rowcount and outcome.disable:
                self._set_enabled(due.subscription_id, False, outcome.error)
            return bool(cursor.rowcount)
