"""Replicas on one PostgreSQL database share locks and hear of each other's changes
(repository/replicas.py), with a real server and, for a replica that dies, a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from repository.db import Database
from tests.postgres import PostgresServer

GUARD = 600  # tries of 0.05 s: a hang guard only


async def _opened(url: str, local: Path) -> Database:
    db = Database(url, local_dir=local)
    await db.open()
    return db


@pytest.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    one, two = await _opened(postgres_url, tmp_path / "one"), await _opened(postgres_url, tmp_path / "two")
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def _eventually(check: object) -> None:
    for _ in range(GUARD):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


async def test_a_lock_held_by_one_replica_keeps_the_other_out_until_given_back(
    replicas: tuple[Database, Database],
) -> None:
    one, two = replicas
    taken = asyncio.Event()

    async def second() -> None:
        async with two.locks("index")("k"):
            taken.set()

    async with one.locks("index")("k"):
        waiting = asyncio.create_task(second())
        async with two.locks("index")("another key"), two.locks("blob")("k"):
            pass  # other keys and other kinds are free meanwhile
        await asyncio.sleep(0.3)
        assert not taken.is_set(), "the second replica took a lock the first one holds"
    await asyncio.wait_for(waiting, 30)
    assert taken.is_set()


async def test_a_replica_killed_while_holding_a_lock_loses_it(
    replicas: tuple[Database, Database], postgres_url: str, tmp_path: Path
) -> None:
    _, two = replicas
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_url, str(tmp_path / "killed")],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)},
    ) as holder:
        try:
            assert holder.stdout is not None and (await asyncio.to_thread(holder.stdout.readline)).strip() == "held"
            probe = asyncio.create_task(_take(two))
            await asyncio.sleep(0.3)
            assert not probe.done(), "the lock was free while the other process held it"
            holder.send_signal(signal.SIGKILL)
            await asyncio.wait_for(probe, 30)
        finally:
            holder.kill()


async def _take(db: Database) -> None:
    async with db.locks("transaction")("tx-1"):
        pass


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from repository.db import Database

    async def main():
        db = Database(sys.argv[1], local_dir=Path(sys.argv[2]))
        await db.open()
        async with db.locks("transaction")("tx-1"):
            print("held", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_change_on_one_replica_makes_the_others_copies_stale(replicas: tuple[Database, Database]) -> None:
    one, two = replicas
    refreshed: dict[str, int] = {"one": 0, "two": 0}
    one.copies.register(lambda: refreshed.__setitem__("one", refreshed["one"] + 1))
    two.copies.register(lambda: refreshed.__setitem__("two", refreshed["two"] + 1))
    assert not two.copies.stale()
    one.changed()
    await _eventually(two.copies.stale)
    await two.copies.wait()
    assert not one.copies.stale(), "a replica's own change is not news to it"
    assert refreshed == {"one": 0, "two": 1}


async def test_after_the_database_restarts_every_replica_drops_its_copies(
    replicas: tuple[Database, Database], postgres_server: PostgresServer
) -> None:
    _, two = replicas
    assert not two.copies.stale()
    await asyncio.to_thread(postgres_server.restart)
    await _eventually(two.copies.stale)


async def _again(run: Any, fn: Any) -> Any:
    """``run(fn)`` after the server restarted: its first statement may find its connection dead
    (the caller sees that one error); the next one must connect again."""
    try:
        return await run(fn)
    except sa.exc.DBAPIError as exc:
        assert exc.connection_invalidated, exc
    return await run(fn)


async def test_after_the_database_restarts_a_replica_connects_again_on_every_thread_and_its_writes_commit(
    replicas: tuple[Database, Database], postgres_server: PostgresServer
) -> None:
    one, two = replicas
    await one.run(lambda: one.db.execute("CREATE TABLE notes (n INTEGER)"))

    def count() -> int:
        with one.db.atomic():
            return int(one.db.scalar("SELECT count(*) FROM pg_stat_activity"))

    await asyncio.to_thread(postgres_server.restart)
    for run in (one.run, one.read, one.walk):
        assert await _again(run, count) > 0
    await one.run(lambda: one.db.execute("INSERT INTO notes (n) VALUES (1)"))
    seen = await _again(two.read, lambda: two.db.scalar("SELECT count(*) FROM notes"))
    assert seen == 1, "a write after the reconnection was not committed"
