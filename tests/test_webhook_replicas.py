"""Service replicas sharing one database share its webhook queue: two deliverers, each with its
own connection and lease holder, working the same subscriptions against a real receiver,
send every event once and each subscription's in order (on sqlite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from distribution.schema import distribution_migrations
from distribution.settings import DistributionSettings
from distribution.webhook_events import publish
from distribution.webhook_sender import WebhookDeliverer, client_session
from distribution.webhook_store import WebhookStore
from repository.db import Database
from repository.schema import catalog_migrations
from tests.webhook_receiver import WebhookReceiver

SECRET = "replica-secret-0123456789"
EVENTS = 20
SETTINGS = DistributionSettings(webhook_retry_base=0.05, webhook_retry_max=0.2, webhook_max_parallel=2)


async def test_two_replicas_deliver_each_event_once_and_in_order(db_target: str, tmp_path: Path) -> None:
    databases = [Database(db_target, local_dir=tmp_path / f"replica-{n}") for n in (1, 2)]
    for db in databases:
        await db.open(catalog_migrations, distribution_migrations)
    sessions = [client_session(SETTINGS) for _ in databases]
    deliverers = [
        WebhookDeliverer(WebhookStore(db, f"replica-{n}"), session, SETTINGS)
        for n, (db, session) in enumerate(zip(databases, sessions, strict=True))
    ]
    tasks: list[asyncio.Task[None]] = []
    with WebhookReceiver(tmp_path / "receiver", SECRET) as receiver:
        try:
            first = databases[0]
            store = WebhookStore(first)
            for path in ("a", "b"):
                await store.add(f"{receiver.url}/{path}", ("*",), SECRET, "admin", 10)
            for n in range(EVENTS):
                await first.run(publish, first.db, "bundle.created", {"name": "app", "version": str(n)})
            tasks = [asyncio.create_task(d.run()) for d in deliverers]
            got = await asyncio.to_thread(receiver.wait_for, lambda got: len(got) >= 2 * EVENTS)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for deliverer, session, db in zip(deliverers, sessions, databases, strict=True):
                await deliverer.close()
                await session.close()
                await db.close()
    assert all(r.problem == "" and r.answered == 200 for r in got)
    for path in ("a", "b"):
        versions = [json.loads(r.body)["data"]["version"] for r in got if r.path.endswith(f"/{path}")]
        assert versions == [str(n) for n in range(EVENTS)], path
