"""The webhook queue on both engines a service may keep its state in (sqlite and a real
PostgreSQL, ``db_target``): events commit with the change they tell of, or not at all; each
subscription's deliveries go in order, one replica at a time; limits hold at their edges."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from distribution import webhook_store
from distribution.edges import EdgeStore
from distribution.jobs import COMPLETED, FAILED, JobStore
from distribution.schema import distribution_migrations
from distribution.settings import DistributionSettings
from distribution.webhook_events import DELIVERED, PENDING, publish
from distribution.webhook_sender import outcome_of
from distribution.webhook_store import Outcome, WebhookStore
from repository.catalog import now_ms
from repository.db import Database
from repository.errors import BadRequest, NotFound
from repository.schema import catalog_migrations
from tests.test_distribution_stores import bundle, edge, stored

LEASE_MS = 60_000


@pytest.fixture
async def database(db_target: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations, distribution_migrations)
    yield db
    await db.close()


async def subscribed(store: WebhookStore, events: tuple[str, ...] = ("*",), url: str = "http://hooks.example/a") -> int:
    return (await store.add(url, events, "secret-0123456789", "admin", 100)).id


async def log(store: WebhookStore, sub_id: int) -> list[tuple[str, str, int]]:
    """(event type, state, attempts) of a subscription's deliveries, oldest first."""
    found, total = await store.deliveries(sub_id, 0)
    assert total == len(found)
    return [(d.event_type, d.state, d.attempts) for d in reversed(found)]


async def test_an_event_commits_with_its_change_or_not_at_all(database: Database) -> None:
    store = WebhookStore(database)
    sub_id = await subscribed(store)

    def change_then_fail() -> None:
        with database.db.atomic():
            publish(database.db, "bundle.deleted", {"name": "app", "version": "1"})
            raise RuntimeError("the change failed after the event was written")

    with pytest.raises(RuntimeError):
        await database.run(change_then_fail)
    assert await log(store, sub_id) == []
    assert await database.run(lambda: database.db.scalar("SELECT count(*) FROM webhook_events")) == 0
    await database.run(publish, database.db, "bundle.deleted", {"name": "app", "version": "1"})
    assert await log(store, sub_id) == [("bundle.deleted", PENDING, 0)]


async def test_nothing_is_written_for_an_event_nobody_subscribed_to(database: Database) -> None:
    store = WebhookStore(database)
    one = await subscribed(store, ("bundle.signed",))
    two = await subscribed(store, ("bundle.signed", "bundle.created"))
    assert await database.run(publish, database.db, "bundle.deleted", {}) is None
    event_id = await database.run(publish, database.db, "bundle.created", {"name": "app"})
    assert event_id is not None
    assert (await log(store, one), await log(store, two)) == ([], [("bundle.created", PENDING, 0)])
    await store.set_enabled(two, False)
    assert await database.run(publish, database.db, "bundle.signed", {}) is not None
    assert await log(store, one) == [("bundle.signed", PENDING, 0)]
    assert len(await log(store, two)) == 1
    body = await database.run(
        lambda: database.db.scalar("SELECT body FROM webhook_events WHERE id = :id", {"id": event_id})
    )
    payload = json.loads(body)
    assert set(payload) == {"id", "type", "time", "data"} and payload["data"] == {"name": "app"}
    assert payload["id"] == event_id and payload["time"].endswith("Z")


async def test_the_stores_publish_what_they_change(database: Database) -> None:
    from distribution.bundle_store import BundleStore

    store = WebhookStore(database)
    sub_id = await subscribed(store)
    await stored(BundleStore(database), bundle(), [])
    edges = EdgeStore(database)
    await edges.add(edge("edge-1"))
    await edges.add(edge("edge-2"))
    jobs = JobStore(database)
    dist_id, new = await jobs.create("distribute", "app", "1.0", (), [edge("edge-1"), edge("edge-2")], (1, 1))
    assert new
    assert await jobs.finish((dist_id, "edge-1"), COMPLETED) is None
    assert await jobs.finish((dist_id, "edge-2"), FAILED, "disk full") is not None
    await edges.record_health("edge-2", False, "refused")
    await edges.record_health("edge-2", False, "refused again")  # still offline: no second event
    await edges.record_health("edge-2", True)
    await edges.record_health("edge-1", True)  # never offline: no event
    assert [t for t, _, _ in await log(store, sub_id)] == [
        "bundle.created",
        "distribution.started",
        "distribution.edge.completed",
        "distribution.edge.failed",
        "distribution.failed",
        "edge.offline",
        "edge.back",
    ]
    found, _ = await store.deliveries(sub_id, 0)
    bodies = await database.run(
        lambda: [json.loads(r[0]) for r in database.db.execute("SELECT body FROM webhook_events").fetchall()]
    )
    failed = next(b for b in bodies if b["type"] == "distribution.failed")["data"]
    assert failed["distribution_id"] == dist_id and failed["status"] == "Failed"
    assert failed["sites"] == [
        {"edge": "edge-1", "status": "Completed", "error": ""},
        {"edge": "edge-2", "status": "Failed", "error": "disk full"},
    ]


async def test_aborting_publishes_the_abort_not_a_failure(database: Database) -> None:
    store = WebhookStore(database)
    sub_id = await subscribed(store, ("distribution.aborted", "distribution.failed"))
    from distribution.bundle_store import BundleStore

    await stored(BundleStore(database), bundle(), [])
    jobs = JobStore(database)
    await jobs.create("distribute", "app", "1.0", (), [edge("edge-1")], (1, 1))
    assert len(await jobs.abort("app", "1.0")) == 1
    assert await log(store, sub_id) == [("distribution.aborted", PENDING, 0)]


async def test_a_subscription_is_served_in_order_by_one_holder_at_a_time(database: Database) -> None:
    one, two = WebhookStore(database, "replica-1"), WebhookStore(database, "replica-2")
    sub_id = await subscribed(one)
    for name in ("a", "b", "c"):
        await database.run(publish, database.db, "bundle.created", {"name": name})
    assert await one.claim(set(), 10, LEASE_MS) == [sub_id]
    assert await two.claim(set(), 10, LEASE_MS) == []  # leased by replica-1
    head = await one.head(sub_id)
    assert head is not None and json.loads(head.body)["data"] == {"name": "a"}
    assert not await two.record(head, Outcome(DELIVERED, 200, ""))  # not its lease
    retry = Outcome(PENDING, 500, "the receiver answered 500", next_attempt=now_ms() + 3_600_000)
    assert await one.record(head, retry)
    assert (await one.head(sub_id)).delivery_id == head.delivery_id  # type: ignore[union-attr]  # b waits for a
    await one.release(sub_id)
    assert await two.claim(set(), 10, LEASE_MS) == []  # a is not due yet, and b waits behind it
    assert await log(one, sub_id) == [
        ("bundle.created", PENDING, 1),
        ("bundle.created", PENDING, 0),
        ("bundle.created", PENDING, 0),
    ]
    await database.run(
        database.db.execute, "UPDATE webhook_deliveries SET next_attempt = 0 WHERE id = :id", {"id": head.delivery_id}
    )
    assert await two.claim(set(), 10, LEASE_MS) == [sub_id]
    for expected in ("a", "b", "c"):
        due = await two.head(sub_id)
        assert due is not None and json.loads(due.body)["data"] == {"name": expected}
        assert await two.record(due, Outcome(DELIVERED, 204, ""))
    assert await two.head(sub_id) is None
    assert [s for _, s, _ in await log(one, sub_id)] == [DELIVERED] * 3


async def test_410_disables_the_subscription_and_its_queue_waits(database: Database) -> None:
    store = WebhookStore(database, "replica-1")
    sub_id = await subscribed(store)
    await database.run(publish, database.db, "bundle.created", {})
    await database.run(publish, database.db, "bundle.signed", {})
    assert await store.claim(set(), 1, LEASE_MS) == [sub_id]
    due = await store.head(sub_id)
    assert due is not None
    assert await store.record(due, outcome_of(410, "gone", 1, DistributionSettings()))
    sub = await store.get(sub_id)
    assert not sub.enabled and "410" in sub.disabled_reason
    await store.release(sub_id)
    assert await store.claim(set(), 1, LEASE_MS) == [] and await store.head(sub_id) is None
    await store.set_enabled(sub_id, True)
    assert await store.claim(set(), 1, LEASE_MS) == [sub_id]
    assert [s for _, s, _ in await log(store, sub_id)] == ["failed", PENDING]


async def test_redeliver_queues_the_same_event_at_the_end(database: Database) -> None:
    store = WebhookStore(database)
    sub_id = await subscribed(store)
    await database.run(publish, database.db, "bundle.created", {})
    (first,), _ = await store.deliveries(sub_id, 0)
    again = await store.redeliver(first.id)
    assert (again.event_id, again.state, again.attempts) == (first.event_id, PENDING, 0)
    assert again.seq == first.seq + 1
    with pytest.raises(NotFound):
        await store.redeliver(again.id + 1000)


async def test_removing_a_subscription_removes_its_log_and_events_no_one_else_needs(database: Database) -> None:
    store = WebhookStore(database)
    one, two = await subscribed(store), await subscribed(store, ("bundle.signed",))
    await database.run(publish, database.db, "bundle.created", {})
    await database.run(publish, database.db, "bundle.signed", {})
    await store.remove(one)
    assert [s.id for s in await store.subscriptions()] == [two]
    assert await log(store, two) == [("bundle.signed", PENDING, 0)]
    assert await database.run(lambda: database.db.scalar("SELECT count(*) FROM webhook_events")) == 1
    with pytest.raises(NotFound):
        await store.remove(one)


@pytest.mark.parametrize("limit", [0, 1, 3])
async def test_the_subscription_limit_holds_at_its_edge(database: Database, limit: int) -> None:
    store = WebhookStore(database)
    for _ in range(limit):  # limit - 1, then limit, subscriptions are allowed
        await store.add("http://hooks.example/a", ("*",), "secret-0123456789", "admin", limit)
    with pytest.raises(BadRequest, match=f"most allowed \\({limit}\\)"):
        await store.add("http://hooks.example/a", ("*",), "secret-0123456789", "admin", limit)
    assert len(await store.subscriptions()) == limit


def test_retries_back_off_doubling_to_the_cap_and_give_up_after_the_last_attempt() -> None:
    settings = DistributionSettings(webhook_retry_base=1, webhook_retry_max=5, webhook_max_attempts=4)
    assert outcome_of(200, "", 1, settings).state == DELIVERED
    assert outcome_of(299, "", 4, settings).state == DELIVERED
    waits = []
    for attempt in (1, 2, 3):
        before = now_ms()
        outcome = outcome_of(500, "boom", attempt, settings)
        assert outcome.state == PENDING and outcome.status == 500
        waits.append((outcome.next_attempt - before) / 1000)
    assert 0.8 <= waits[0] <= 1.01 and 1.6 <= waits[1] <= 2.01 and 3.2 <= waits[2] <= 4.01
    capped = DistributionSettings(webhook_retry_base=4, webhook_retry_max=5, webhook_max_attempts=9)
    before = now_ms()
    assert 4 <= (outcome_of(None, "down", 3, capped).next_attempt - before) / 1000 <= 5.01  # 16 s capped at 5
    last = outcome_of(500, "boom", 4, settings)
    assert last.state == "failed" and "gave up after 4 attempts" in last.error


async def test_the_log_forgets_finished_deliveries_past_their_days_never_pending_ones(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_store, "PRUNE_PAGE", 2)
    store = WebhookStore(database, "replica-1")
    sub_id = await subscribed(store)
    for n in range(5):
        await database.run(publish, database.db, "bundle.created", {"n": n})
    assert await store.claim(set(), 1, LEASE_MS) == [sub_id]
    for _ in range(3):
        due = await store.head(sub_id)
        assert due is not None and await store.record(due, Outcome(DELIVERED, 200, ""))
    assert await store.prune(now_ms() - 60_000) == 0  # finished just now: kept
    assert await store.prune(now_ms() + 1) == 3
    assert await log(store, sub_id) == [("bundle.created", PENDING, 0)] * 2
    assert await database.run(lambda: database.db.scalar("SELECT count(*) FROM webhook_events")) == 2
    due = await store.head(sub_id)
    assert due is not None and json.loads(due.body)["data"] == {"n": 3}


async def test_the_delivery_log_is_read_a_page_at_a_time_newest_first(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_store, "DELIVERY_PAGE", 2)
    store = WebhookStore(database)
    sub_id = await subscribed(store)
    assert await store.deliveries(sub_id, 0) == ([], 0)
    for n in range(5):
        await database.run(publish, database.db, "bundle.created", {"n": n})
    pages = [await store.deliveries(sub_id, start) for start in (0, 2, 4, 5)]
    assert [total for _, total in pages] == [5] * 4
    assert [[d.seq for d in page] for page, _ in pages] == [[5, 4], [3, 2], [1], []]
    with pytest.raises(NotFound):
        await store.deliveries(sub_id + 1, 0)
