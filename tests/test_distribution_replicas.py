"""Two Distribution service replicas on one PostgreSQL making the same change at once end with
the state one of them alone would have made: a transaction that loses the race runs again and
finds the other's work (sqlite has one writer at a time, so only PostgreSQL meets these races).

Each test makes the race certain: both replicas read what they decide on before either writes
(a barrier in their statements), or one waits on the other's row lock (seen in pg_locks)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from distribution.bundle_store import Bundle, BundleStore
from distribution.edges import Edge, EdgeStore
from distribution.jobs import DISTRIBUTE, JobStore
from distribution.schema import distribution_migrations
from repository.db import Database
from repository.errors import Conflict
from repository.schema import catalog_migrations
from repository.sql import Sql


@pytest.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two services' databases on one PostgreSQL, each with its own machine's files."""
    opened = [Database(postgres_url, local_dir=tmp_path / name) for name in ("one", "two")]
    for db in opened:
        await db.open(catalog_migrations, distribution_migrations)
    yield opened[0], opened[1]
    for db in opened:
        await db.close()


def both_read_before_either_writes(monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    """The first statement of each connection that holds ``read`` waits, once, until the other
    replica's has run too: both then decide on what they read before either wrote."""
    barrier = threading.Barrier(2, timeout=60)
    waited: set[int] = set()
    execute = Sql.execute

    def paused(self: Sql, sql: str, params: Any = None) -> Any:
        result = execute(self, sql, params)
        if read in sql and id(self) not in waited:
            waited.add(id(self))
            barrier.wait()
        return result

    monkeypatch.setattr(Sql, "execute", paused)


def edge(url: str = "http://127.0.0.1:9") -> Edge:
    return Edge("edge-1", url, "site", "city", "US", "token", "jfrt@edge-1", 1)


async def test_two_replicas_registering_one_edge_at_once_register_it_once(
    replicas: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    both_read_before_either_writes(monkeypatch, "FROM edges WHERE name")
    answers = await asyncio.gather(*(EdgeStore(db).add(edge()) for db in replicas))
    assert sorted(new for _, new in answers) == [False, True]
    assert [e for e, _ in answers] == [edge(), edge()]
    assert await EdgeStore(replicas[0]).list() == [edge()]


async def test_two_replicas_registering_one_name_with_other_settings_at_once_keep_the_first(
    replicas: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    both_read_before_either_writes(monkeypatch, "FROM edges WHERE name")
    wanted = [edge("http://127.0.0.1:9"), edge("http://127.0.0.1:10")]
    answers = await asyncio.gather(
        *(EdgeStore(db).add(e) for db, e in zip(replicas, wanted, strict=True)), return_exceptions=True
    )
    conflicts = [a for a in answers if isinstance(a, Conflict)]
    (registered,) = [a for a in answers if not isinstance(a, BaseException)]
    assert len(conflicts) == 1 and registered[1] is True
    assert await EdgeStore(replicas[1]).list() == [registered[0]]


async def test_two_replicas_asked_for_one_distribution_at_once_make_it_once(
    replicas: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    await BundleStore(replicas[0]).commit_staged(
        Bundle("app", "1.0", "SIGNED", "", {}, "r", 1, "admin", 1, 0, 0), "t", replace=False
    )
    both_read_before_either_writes(monkeypatch, "SELECT count(*) FROM distributions")
    answers = await asyncio.gather(
        *(JobStore(db).create(DISTRIBUTE, "app", "1.0", (), [edge()], (1, 1)) for db in replicas)
    )
    assert answers[0][0] == answers[1][0] and sorted(new for _, new in answers) == [False, True]
    (made,) = await JobStore(replicas[1]).history("app", "1.0")
    assert made.id == answers[0][0] and made.friendly_id == 1 and [j.edge for j in made.jobs] == ["edge-1"]


class HeldManifest(io.BytesIO):
    """A manifest whose first read waits until the test lets it go: the replica signing with it
    holds the bundle's row meanwhile."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reading = threading.Event()
        self.go_on = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        self.reading.set()
        if not self.go_on.wait(60):
            raise TimeoutError("the test never let the manifest go on")
        return super().read(size)


def waiting_on_a_lock(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one())
    finally:
        engine.dispose()


async def test_two_replicas_signing_one_bundle_at_once_sign_it_once_with_the_first_manifest(
    replicas: tuple[Database, Database], postgres_url: str
) -> None:
    first, second = BundleStore(replicas[0]), BundleStore(replicas[1])
    await first.commit_staged(Bundle("app", "1.0", "OPEN", "", {}, "r", 1, "admin", 1, 0, 0), "t", replace=False)

    def signing(store: BundleStore, manifest: io.BytesIO, signature: str) -> asyncio.Future[bool]:
        return asyncio.ensure_future(
            store.mark_signed(
                "app",
                "1.0",
                manifest=manifest,
                manifest_size=len(manifest.getvalue()),
                manifest_sha256="0" * 64,
                signature=signature,
                signed_by="F" * 40,
                at=2,
            )
        )

    held = HeldManifest(b"the first manifest")
    winner = signing(first, held, "sig-1")
    await asyncio.to_thread(held.reading.wait, 60)
    loser = signing(second, io.BytesIO(b"the second manifest"), "sig-2")
    while not await asyncio.to_thread(waiting_on_a_lock, postgres_url):  # the second waits on the first's row
        assert not loser.done()
        await asyncio.sleep(0.05)
    held.go_on.set()
    assert (await winner, await loser) == (True, False)
    signed = await second.signed_manifest("app", "1.0")
    assert signed is not None and signed.signature == "sig-1"
    assert b"".join([c async for c in second.manifest_chunks(signed)]) == b"the first manifest"
