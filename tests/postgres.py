"""The PostgreSQL fixtures: one real server per test process (``devstack.postgres.PostgresServer``,
which the benchmarks start too) and a fresh empty database for every test that asks for one.

Starting a server costs a second or two, a database a few milliseconds: each pytest-xdist
worker starts its server once, and every test gets a database no other test has seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.postgres import PostgresServer
from repository.catalog import Catalog, Repo
from repository.db import Database
from repository.schema import catalog_migrations

__all__ = ["PostgresServer", "catalog", "db_target", "postgres_server", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A running PostgreSQL on 127.0.0.1 for the whole session (this worker's), stopped at the end.

    A test may stop, restart or crash it; the next database it hands out starts it again."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """``postgresql+psycopg://...`` of a new empty database, dropped (connections cut) after the test."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What to open a ``Database`` on, once per engine: a fresh sqlite file, then a fresh
    PostgreSQL database (``Database(db_target, local_dir=...)``)."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("sqlite") / "node.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def catalog(db_target: str, tmp_path: Path) -> AsyncIterator[Catalog]:
    """A fresh catalog holding one repo, ``r``, on each engine (``db_target``)."""
    db = Database(db_target, local_dir=tmp_path / "local")
    await db.open(catalog_migrations)
    cat = Catalog(db)
    await cat.ensure_repo(Repo("r"))
    yield cat
    await db.close()
